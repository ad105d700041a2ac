"""Reference models: sizes computed by hand, and every one is readable by the graph engine."""
import pytest

from kerascompress.examples import zoo
from kerascompress.graph import ModelGraph, count_model


def test_small_cnn_parameter_count_by_hand():
    w = 32
    convs = 3 * 3 * 1 * w + 3 * 3 * w * 2 * w + 3 * 3 * 2 * w * 2 * w  # no biases
    bns = 4 * (w + 2 * w + 2 * w)  # gamma, beta, moving mean, moving variance
    fc1 = (7 * 7 * 2 * w) * 2 * w + 2 * w
    head = 2 * w * 10 + 10
    assert zoo.small_cnn().count_params() == convs + bns + fc1 + head == 257_642


@pytest.mark.parametrize("build", [zoo.small_cnn, zoo.residual_cnn, lambda: zoo.mlp(100, 5)])
def test_models_are_graph_readable_and_counted(build):
    model = build()
    graph = ModelGraph.from_keras(model)
    assert count_model(graph).params == model.count_params()
    assert not count_model(graph).unknown


def test_compile_classifier_sets_sparse_loss():
    model = zoo.compile_classifier(zoo.mlp(4, 3, hidden=(8,)))
    assert model.loss == "sparse_categorical_crossentropy"
