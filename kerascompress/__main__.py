"""`python -m kerascompress ...`: the same command line as the `kerascompress` script."""
from kerascompress.cli import run

if __name__ == "__main__":
    run()
