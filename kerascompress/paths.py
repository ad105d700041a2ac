"""Where the shipped configuration files live (source checkout or installed wheel)."""
from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The folder holding ``targets/*.yaml`` and ``recipes/*.yaml``."""
    checkout = Path(__file__).resolve().parents[1] / "configs"
    if (checkout / "targets").is_dir():
        return checkout
    from importlib import resources

    return Path(str(resources.files("kerascompress.configs")))
