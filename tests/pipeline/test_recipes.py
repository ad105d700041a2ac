"""Recipes load from names, YAML files and lists, with clear errors."""
import pytest

from kerascompress.errors import ConfigError
from kerascompress.passes.quantize import Quantize
from kerascompress.pipeline.recipes import list_recipes, load_recipe


def test_shipped_recipes_load():
    assert {"default", "quantize"} <= set(list_recipes())
    for name in list_recipes():
        assert load_recipe(name), name
    modes = [getattr(p, "mode", p.name) for p in load_recipe("quantize")]
    assert modes == ["int8", "qat", "mixed", "fp16", "dynamic"]


def test_yaml_path_and_list(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("passes:\n  - pass: Quantize\n    args: {mode: fp16}\n")
    [p] = load_recipe(path)
    assert isinstance(p, Quantize) and p.mode == "fp16"
    passes = [Quantize("int8")]
    assert load_recipe(passes) == passes


@pytest.mark.parametrize(
    "text, message",
    [
        ("nothing: here", "'passes' list"),
        ("passes:\n  - {args: {}}", "needs a 'pass' name"),
        ("passes:\n  - pass: Magic", "unknown pass 'Magic'"),
        ("passes:\n  - pass: Quantize\n    args: {bits: 3}", "bad arguments"),
        ("passes: [", "not valid YAML"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(ConfigError, match="shipped recipes: .*default"):
        load_recipe("turbo")
    with pytest.raises(ConfigError, match="pass objects"):
        load_recipe(["Quantize"])
