"""kerascompress: make trained Keras 3 models smaller and faster on their real target."""
__version__ = "0.1.0"
