"""Subclassed models: weight and converter passes run on them, layer-graph passes are skipped with the reason."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
from keras import layers as L

import kerascompress as kc
from kerascompress.graph.channel_groups import find_channel_groups
from kerascompress.graph.counting import count_model
from kerascompress.graph.model_graph import ModelGraph
from kerascompress.models.io import weights_digest
from kerascompress.models.subclassed import layer_graph_missing, wrap
from kerascompress.passes.cluster import Cluster
from kerascompress.passes.lowrank import LowRank
from kerascompress.passes.pruning import ChannelPruning
from kerascompress.passes.quantize import Quantize
from kerascompress.passes.sparsity import Sparsity
from kerascompress.runtime.litert import LiteRTModel
from kerascompress.runtime.onnx_runner import OnnxModel


class DigitsNet(keras.Model):
    """The digits CNN written as a subclassed model."""

    def __init__(self, classes: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv1 = L.Conv2D(16, 3, padding="same", activation="relu")
        self.conv2 = L.Conv2D(32, 3, padding="same", activation="relu")
        self.pool = L.MaxPooling2D()
        self.flat = L.Flatten()
        self.fc = L.Dense(64, activation="relu")
        self.out = L.Dense(classes, activation="softmax")

    def call(self, x):
        return self.out(self.fc(self.flat(self.pool(self.conv2(self.conv1(x))))))


class Block(keras.Model):
    """A residual block written as Python code, used inside a Functional model."""

    def __init__(self, width: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv = L.Conv2D(width, 3, padding="same")

    def call(self, x):
        return keras.ops.relu(x + self.conv(x))


@pytest.fixture(scope="module")
def trained_net(digits_data):
    x, y, _, _ = digits_data
    keras.utils.set_random_seed(1)
    net = DigitsNet()
    net.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    net.fit(x, y, epochs=6, batch_size=64, verbose=0)
    return net


def test_weight_and_converter_passes_run_and_graph_passes_are_skipped(trained_net, digits_data, tmp_path):
    x, y, x_test, y_test = digits_data
    digest = weights_digest(trained_net)
    recipe = [ChannelPruning(ratio=0.3), LowRank(energy=0.9), Cluster(16), Sparsity("2:4"), Quantize("int8")]
    result = kc.optimize(trained_net, target="x86-avx2", data={"train": (x, y), "eval": (x_test, y_test)},
                         recipe=recipe, constraints=kc.Constraints(max_accuracy_drop=0.03),
                         output_dir=tmp_path, latency_runs=5, verbose=False)
    assert weights_digest(trained_net) == digest
    report = result.report
    for name in ("channel_pruning", "lowrank"):
        step = report.step(name)
        assert step.status == "skipped" and "subclassed model (DigitsNet)" in step.reason, step.reason
        assert "no layer graph" in step.reason
    cluster, sparsity = report.steps[2], report.steps[3]
    assert cluster.name.startswith("cluster") and cluster.status == "applied", cluster.reason
    assert cluster.details["kernels_clustered"] == 4
    assert sparsity.status in ("applied", "rolled back") and sparsity.details["kernels_sparse"] >= 2, sparsity.reason
    assert report.step("quantize:int8").status == "applied", report.step("quantize:int8").reason
    assert report.final.precision == "int8" and report.baseline.macs > 0
    assert any("subclassed model" in note for note in report.notes)
    # the artifacts compute the compressed model: int8 within a point, float ONNX within float noise
    keras_out = result.model.predict(x_test, verbose=0)
    tflite = LiteRTModel(result.artifacts["tflite"].read_bytes()).predict(x_test)
    assert np.mean(tflite.argmax(-1) == keras_out.argmax(-1)) > 0.97
    assert np.abs(OnnxModel(result.artifacts["onnx"].read_bytes()).predict(x_test) - keras_out).max() < 1e-4


def test_strict_mode_raises_for_a_graph_pass(trained_net, digits_data, tmp_path):
    x, y, _, _ = digits_data
    with pytest.raises(kc.UnsupportedModelError, match="channel_pruning: needs the layer graph"):
        kc.optimize(trained_net, target="x86-avx2", data=(x[:200], y[:200]), recipe=[ChannelPruning(0.3)],
                    strict=True, output_dir=tmp_path, verbose=False)


def test_layer_graph_missing_names_the_model():
    net = DigitsNet()
    net(np.zeros((1, 8, 8, 1), "float32"))
    assert "subclassed model (DigitsNet)" in layer_graph_missing(net)
    assert "subclassed model (DigitsNet)" in layer_graph_missing(wrap(net))
    x = keras.Input((8, 8, 1))
    assert layer_graph_missing(keras.Model(x, L.Dense(2)(x))) is None


def test_the_wrapper_counts_macs_from_the_layers_build_shapes():
    net = DigitsNet()
    net(np.zeros((2, 8, 8, 1), "float32"))
    cost = count_model(wrap(net))
    conv1 = 8 * 8 * 16 * (3 * 3 * 1)
    conv2 = 8 * 8 * 32 * (3 * 3 * 16)
    dense = 4 * 4 * 32 * 64 + 64 * 10
    assert cost.macs == conv1 + conv2 + dense
    assert cost.params == net.count_params() and not cost.unknown


def test_a_subclassed_block_inside_a_functional_model_is_one_frozen_node():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = Block(8, name="block")(h)
    h = L.Conv2D(16, 3, padding="same", name="free")(h)
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(h)))
    graph = ModelGraph.from_keras(model)
    assert graph.nodes["block"].class_name == "Block"
    groups = find_channel_groups(graph)
    frozen = {p for g in groups.frozen for p in g.producers}
    assert "stem" in frozen
    assert any("block is a subclassed model (Block)" in r for g in groups.frozen for r in g.frozen)
    assert {p for g in groups.prunable for p in g.producers} == {"free"}
    rebuilt = graph.to_keras()
    data = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(rebuilt.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)
    assert rebuilt.get_layer("block") is not model.get_layer("block")  # a copy, never the caller's variables
