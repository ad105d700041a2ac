"""Where the shipped configuration lives."""
from __future__ import annotations

from kerascompress.paths import config_dir


def test_config_dir_holds_the_shipped_targets_and_recipes():
    root = config_dir()
    assert (root / "targets").is_dir() and (root / "recipes").is_dir()
    assert (root / "targets" / "x86-avx2.yaml").is_file()
    assert (root / "recipes" / "default.yaml").is_file()
