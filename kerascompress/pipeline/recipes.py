"""Recipes: named, ordered lists of passes, read from configs/recipes/*.yaml.

A recipe says which passes to try and in which order; the target's gate and the
measured results decide which of them stay.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from kerascompress import passes
from kerascompress.errors import ConfigError
from kerascompress.passes.base import Pass
from kerascompress.paths import config_dir


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in (config_dir() / "recipes").glob("*.yaml"))


def load_recipe(recipe: str | Path | Sequence[Pass]) -> list[Pass]:
    """Pass objects from a recipe name, a YAML path, or a list of passes (returned as is)."""
    if isinstance(recipe, (list, tuple)):
        bad = [r for r in recipe if not isinstance(r, Pass)]
        if bad:
            raise ConfigError(f"a recipe list must hold kerascompress pass objects; got {bad[0]!r}")
        return list(recipe)
    path = Path(recipe)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "recipes" / f"{recipe}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown recipe {recipe!r}; shipped recipes: {', '.join(list_recipes())}, or give a YAML path")
    elif not path.exists():
        raise ConfigError(f"recipe file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_recipe(spec, str(path))


def parse_recipe(spec: Any, origin: str = "recipe") -> list[Pass]:
    """Build passes from ``{"passes": [{"pass": Name, "args": {...}}, ...]}``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("passes"), list):
        raise ConfigError(f"{origin}: a recipe needs a 'passes' list")
    result: list[Pass] = []
    for i, entry in enumerate(spec["passes"]):
        if not isinstance(entry, dict) or "pass" not in entry:
            raise ConfigError(f"{origin}: passes[{i}] needs a 'pass' name")
        cls = passes.get(entry["pass"])
        args = entry.get("args") or {}
        try:
            result.append(cls(**args))
        except TypeError as exc:
            raise ConfigError(f"{origin}: passes[{i}] ({entry['pass']}): bad arguments {args}: {exc}") from exc
    return result
