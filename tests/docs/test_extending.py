"""docs/extending.md runs as written, and does what it says.

Each section's fenced blocks run in order in one namespace of their own, in a scratch
folder: ```python blocks are executed, a ```yaml block with a file name after the
language is written to that file first. The registries the examples add to are
restored afterwards.
"""
from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from kerascompress import passes
from kerascompress.data.bundle import make_bundle
from kerascompress.graph import layer_rules
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.passes import importance
from tests.helpers.exactness import check_exact, randomize

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)[ \t]*([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SECTIONS = ("A rule for a custom layer", "A custom importance criterion", "A custom pass", "A custom target profile")


def sections() -> dict[str, list[tuple[str, str, str]]]:
    """Section title -> its fenced blocks as (language, file name or '', code)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        title, _, body = part.partition("\n")
        out[title.strip()] = [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(body)]
    return out


@pytest.fixture
def run_section(tmp_path, monkeypatch):
    """Run one section; returns the namespace as it was after each Python block."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(layer_rules, "_RULES", dict(layer_rules._RULES))
    saved_criteria, saved_passes = dict(importance._REGISTRY), dict(passes.REGISTRY)
    custom_objects = keras.saving.get_custom_objects()
    saved_objects = dict(custom_objects)

    def run(title: str) -> list[dict]:
        namespace: dict = {"__name__": "docs_extending"}
        after_each = []
        for language, filename, code in sections()[title]:
            if language == "python":
                exec(compile(code, f"{DOC}: {title}", "exec"), namespace)  # noqa: S102 - the documented code
                after_each.append(dict(namespace))
            elif filename:
                Path(filename).write_text(code)
        return after_each

    yield run
    importance._REGISTRY.clear()
    importance._REGISTRY.update(saved_criteria)
    passes.REGISTRY.clear()
    passes.REGISTRY.update(saved_passes)
    custom_objects.clear()
    custom_objects.update(saved_objects)


def test_every_section_is_checked_here():
    found = sections()
    assert tuple(found) == SECTIONS
    assert all(any(lang == "python" for lang, _, _ in blocks) for blocks in found.values())


def test_custom_layers_are_pruned_exactly(run_section):
    (ns,) = run_section("A rule for a custom layer")
    pruned = ns["pruned"]
    assert pruned.get_layer("swish1").units == 16 and pruned.get_layer("scale1").get_weights()[0].shape == (16,)
    assert pruned.get_layer("swish2").units == 16 and pruned.get_layer("head").get_weights()[0].shape == (16, 4)

    model = randomize(ns["build_model"]())
    _, groups, keep, _ = check_exact(model, seed=3, consumers={"SwishDense": ("kernel", 0)})
    assert len(groups.prunable) == 2 and all(len(k) < 32 for k in keep.values())

    del layer_rules._RULES["ChannelScale"]  # without its rule the layer freezes its channels, saying why
    reasons = [r for g in find_channel_groups(ModelGraph.from_keras(model)).groups for r in g.frozen]
    assert any(r.endswith("unknown layer class 'ChannelScale': register a rule with register_layer_rule") for r in reasons)


def _kept_columns(before: keras.Model, after: keras.Model, layer: str) -> list[int]:
    """Which output channels of ``layer`` the pruned model kept, found by matching kernel columns."""
    old, new = before.get_layer(layer).get_weights()[0], after.get_layer(layer).get_weights()[0]
    return [int(np.flatnonzero((old == new[:, [j]]).all(0))[0]) for j in range(new.shape[1])]


def test_custom_criteria_choose_the_channels(run_section):
    by_random, by_activation = run_section("A custom importance criterion")

    model = by_random["model"]
    graph = ModelGraph.from_keras(model)
    groups = find_channel_groups(graph)
    (group,) = groups.prunable
    scores = by_random["random_scores"](graph, groups, model, None, None)[group.id]
    assert _kept_columns(model, by_random["pruned"], "fc") == sorted(np.argsort(-scores)[:16].tolist())

    model, x = by_activation["model"], by_activation["x"]
    kernel, bias = model.get_layer("fc").get_weights()
    calibration = make_bundle(x).calibration()  # what the pass hands the criterion as x
    activation = np.abs(np.maximum(calibration @ kernel + bias, 0)).mean(0)
    kept = _kept_columns(model, by_activation["pruned"], "fc")
    assert kept == sorted(np.argsort(-activation)[:16].tolist())
    assert importance.criterion_needs_data("mean_activation")


def test_custom_pass_runs_in_optimize_and_by_name_from_yaml(run_section):
    in_code, from_yaml = run_section("A custom pass")
    step = in_code["result"].report.step("zero_small_weights")
    assert step.status == "applied" and step.details["zeroed_weights"] > 0
    assert step.benefit == "compressed-size" and step.after.gzip_bytes < step.before.gzip_bytes
    steps = [s.name for s in from_yaml["result"].report.steps]
    assert steps == ["zero_small_weights", "quantize:int8"]
    assert passes.get("ZeroSmallWeights") is in_code["ZeroSmallWeights"]
    assert Path("out/report.json").exists() and Path("out_yaml/report.json").exists()


def test_custom_target_profile_from_yaml_and_in_code(run_section):
    from_file, in_code = run_section("A custom target profile")
    board = from_file["board"]
    assert board.full_integer_only and board.channel_multiple == 16 and board.device == "npu"
    assert board.source("channel_multiple") == "vendor guide: 16 channels per MAC row"
    steps = {s.name: s.status for s in from_file["result"].report.steps}
    assert steps.pop("quantize:int8") == "applied" and set(steps.values()) == {"skipped"}
    reloaded = passes.get("Quantize")  # the in-code target gates like the file
    assert not reloaded("fp16").gate(in_code["board"], passes.ModelState(in_code["model"])).allowed
    from kerascompress.targets import load

    again = load("my-board-from-code.yaml")
    assert again.channel_multiple == 16 and again.full_integer_only and again.supports("int8")
