"""The pass registry: built-in passes load on first use; a user's pass is registered by name for recipes."""
from __future__ import annotations

import pytest

from kerascompress import passes
from kerascompress.errors import ConfigError
from kerascompress.passes.base import Gate, Pass, PassOutput
from kerascompress.pipeline.recipes import parse_recipe


class Noop(Pass):
    name = "noop"

    def __init__(self, level: int = 1) -> None:
        self.level = level

    def gate(self, target, state):
        return Gate.allow("none")

    def apply(self, state, ctx):
        return PassOutput(state)


@pytest.fixture
def registry():
    saved = dict(passes.REGISTRY)
    yield passes.REGISTRY
    passes.REGISTRY.clear()
    passes.REGISTRY.update(saved)


def test_built_in_passes_load_by_name():
    from kerascompress.passes.quantize import Quantize

    assert passes.get("Quantize") is Quantize and passes.Quantize is Quantize
    assert set(passes.BUILTIN) <= set(passes.available())
    with pytest.raises(ConfigError, match="unknown pass 'Frobnicate'; known passes: ChannelPruning, ChannelSearch, Cluster"):
        passes.get("Frobnicate")


def test_a_registered_pass_is_named_in_recipes(registry):
    passes.register("Noop", Noop)
    assert passes.get("Noop") is Noop and passes.Noop is Noop and "Noop" in passes.available()
    (p,) = parse_recipe({"passes": [{"pass": "Noop", "args": {"level": 3}}]})
    assert isinstance(p, Noop) and p.level == 3
    with pytest.raises(ConfigError, match="bad arguments"):
        parse_recipe({"passes": [{"pass": "Noop", "args": {"depth": 3}}]})


def test_registering_refuses_built_in_names_and_non_passes(registry):
    with pytest.raises(ConfigError, match="built-in"):
        passes.register("Quantize", Noop)
    with pytest.raises(ConfigError, match="subclass of kerascompress.passes.base.Pass"):
        passes.register("Thing", object)
    with pytest.raises(ConfigError, match="non-empty name"):
        passes.register("", Noop)
    passes.register("Noop", Noop)
    passes.register("Noop", Noop)  # registering again (a re-run notebook cell) is fine
    assert list(registry).count("Noop") == 1
