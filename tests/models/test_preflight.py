"""Every kind of bad input to `optimize` ends in a KerasCompressError naming the problem, before any pass runs.

One parametrized case per bad input. Each asserts the error class and that the message
names the problem (and, where there is one, the fix). The cases are listed in `CASES`
(`optimize`) and `VALIDATE_CASES` (`validate`); the command line's are in tests/test_cli.py.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest
from keras import layers as L

import kerascompress as kc
from kerascompress.errors import ConfigError, DataError, ExportError, UnsupportedModelError
from kerascompress.models.io import weights_digest
from kerascompress.models.preflight import preflight

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- small models


def classifier(classes: int = 10, activation: str = "softmax") -> keras.Model:
    x = keras.Input((8, 8, 1))
    y = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", activation="relu")(x))
    return keras.Model(x, L.Dense(classes, activation=activation)(y))


def images(n: int = 64) -> np.ndarray:
    return RNG.random((n, 8, 8, 1)).astype("float32")


def labels(n: int = 64, classes: int = 10) -> np.ndarray:
    return RNG.integers(0, classes, n)


def text_model() -> keras.Model:
    x = keras.Input((12,), dtype="int32")
    y = L.GlobalMaxPooling1D()(L.Conv1D(8, 3)(L.Embedding(50, 8)(x)))
    return keras.Model(x, L.Dense(2, activation="softmax")(y))


def two_input_model() -> keras.Model:
    a, b = keras.Input((8, 8, 1)), keras.Input((5,))
    y = L.Concatenate()([L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(a)), L.Dense(4)(b)])
    return keras.Model([a, b], L.Dense(3, activation="softmax")(y))


def with_weight(model: keras.Model, value: float) -> keras.Model:
    kernel = model.layers[-1].kernel
    w = kernel.numpy()
    w[0, 0] = value
    kernel.assign(w)
    return model


def log_model() -> keras.Model:
    """Finite weights, NaN outputs on data in [0, 1]: log of a negative number."""
    x = keras.Input((8, 8, 1))
    y = keras.ops.log(L.GlobalAveragePooling2D()(x) - 10.0)
    return keras.Model(x, L.Dense(3)(y))


def exp_model() -> keras.Model:
    x = keras.Input((8, 8, 1))
    y = keras.ops.exp(L.GlobalAveragePooling2D()(x) * 1000.0)
    return keras.Model(x, L.Dense(3)(y))


class Subclassed(keras.Model):
    def __init__(self, units: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv = L.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(units, activation="softmax")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


class NotRecreatable(keras.Model):
    """Takes a layer object in its constructor and has no get_config: Keras cannot make a copy."""

    def __init__(self, body: L.Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body = body
        self.head = L.Dense(3)

    def call(self, x):
        return self.head(self.body(x))


def built(model: keras.Model, x: np.ndarray) -> keras.Model:
    model(x[:2])
    return model


def lambda_file(tmp: Path, suffix: str) -> Path:
    x = keras.Input((8, 8, 1))
    y = L.Lambda(lambda t: t * 2.0)(x)
    path = tmp / f"lambda{suffix}"
    keras.Model(x, L.Dense(3)(L.Flatten()(y))).save(path)
    return path


def saved_file(tmp: Path, model: keras.Model, name: str = "m.keras") -> Path:
    model.save(tmp / name)
    return tmp / name


def truncated(tmp: Path) -> Path:
    good = saved_file(tmp, classifier())
    bad = tmp / "truncated.keras"
    bad.write_bytes(good.read_bytes()[:400])
    return bad


def recipe_file(tmp: Path, text: str) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(text)
    return path


def profile_file(tmp: Path, text: str) -> Path:
    path = tmp / "target.yaml"
    path.write_text(text)
    return path


def existing_file(tmp: Path) -> Path:
    path = tmp / "out.txt"
    path.write_text("keep me")
    return path


def empty_dataset() -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,), "int64")))


def ragged() -> np.ndarray:
    samples = np.empty(2, dtype=object)
    samples[0], samples[1] = np.zeros((8, 8, 1)), np.zeros((7, 8, 1))
    return samples


def regression() -> keras.Model:
    x = keras.Input((4,))
    return keras.Model(x, L.Dense(1)(L.Dense(8, activation="relu")(x)))


# ----------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    """``make(tmp)`` returns optimize's keyword arguments; the call must raise ``error`` matching ``names``."""

    id: str
    make: Callable[[Path], dict]
    error: type
    names: str


def _opt(model: Any = None, data: Any = "default", **kw: Any) -> dict:
    model = classifier() if model is None else model
    if isinstance(data, str) and data == "default":
        data = (images(), labels())
    return dict(model=model, data=data, **kw)


CASES = [
    # model files
    Case("file_missing", lambda t: _opt(t / "nope.keras"), UnsupportedModelError, "does not exist"),
    Case("file_corrupt", lambda t: _opt((t / "c.keras", (t / "c.keras").write_bytes(b"not a zip"))[0]),
         UnsupportedModelError, "could not load .*corrupt"),
    Case("file_truncated", lambda t: _opt(truncated(t)), UnsupportedModelError, "could not load .*truncated"),
    Case("file_corrupt_h5", lambda t: _opt((t / "c.h5", (t / "c.h5").write_bytes(b"garbage"))[0]),
         UnsupportedModelError, "could not load"),
    Case("file_wrong_suffix", lambda t: _opt((t / "m.pt", (t / "m.pt").write_bytes(b"x"))[0]),
         UnsupportedModelError, r"unknown model format '\.pt'.*\.keras"),
    Case("file_savedmodel_folder",
         lambda t: _opt(((t / "sm").mkdir(), (t / "sm" / "saved_model.pb").write_bytes(b""), t / "sm")[2]),
         UnsupportedModelError, "SavedModel.*model.save"),
    Case("file_plain_folder", lambda t: _opt(t), UnsupportedModelError, "is a folder, not a model file"),
    Case("file_lambda_keras", lambda t: _opt(lambda_file(t, ".keras")), UnsupportedModelError,
         "Lambda layer.*safe_mode.*safe_mode=False.*--unsafe_load"),
    Case("file_lambda_h5", lambda t: _opt(lambda_file(t, ".h5")), UnsupportedModelError,
         "Lambda layer.*safe_mode=False"),
    Case("model_not_a_model", lambda t: _opt(42), UnsupportedModelError, "expected a keras.Model.*int"),
    # models
    Case("model_unbuilt_sequential", lambda t: _opt(keras.Sequential([L.Dense(2)])), UnsupportedModelError,
         "not built.*keras.Input"),
    Case("model_unbuilt_subclassed", lambda t: _opt(Subclassed()), UnsupportedModelError, "not built"),
    Case("model_subclassed_not_recreatable",
         lambda t: _opt(built(NotRecreatable(L.Flatten()), images())), UnsupportedModelError,
         "cannot be re-created from its config.*get_config"),
    Case("weights_nan", lambda t: _opt(with_weight(classifier(), math.nan)), UnsupportedModelError,
         r"weights hold NaN/Inf.*dense.*kernel \(1 NaN"),
    Case("weights_inf", lambda t: _opt(with_weight(classifier(), math.inf)), UnsupportedModelError,
         r"weights hold NaN/Inf.*1 Inf"),
    Case("outputs_nan", lambda t: _opt(log_model(), (images(), labels(classes=3))), UnsupportedModelError,
         "output .* is NaN/Inf on 13 of 13 held-out samples.*before any change"),
    Case("outputs_inf", lambda t: _opt(exp_model(), (images(), labels(classes=3))), UnsupportedModelError,
         "NaN/Inf on"),
    Case("outputs_nan_without_data", lambda t: _opt(log_model(), None), UnsupportedModelError,
         "NaN/Inf on .* random inputs"),
    # data: shapes and types
    Case("data_wrong_shape", lambda t: _opt(data=(RNG.random((64, 28, 28, 1)), labels())), DataError,
         r"expects samples of shape \(8, 8, 1\) but `data` has \(28, 28, 1\)"),
    Case("data_missing_channel_axis", lambda t: _opt(data=(RNG.random((64, 8, 8)), labels())), DataError,
         r"expects samples of shape \(8, 8, 1\) but `data` has \(8, 8\)"),
    Case("data_wrong_input_count", lambda t: _opt(two_input_model(), (images(), labels(classes=3))), DataError,
         "the model has 2 inputs but `data` provides 1"),
    Case("data_labels_in_a_list", lambda t: _opt(data=[images(), labels()]), DataError,
         r"provides 2 \(labels go in the second element of an \(x, y\) tuple"),
    Case("data_strings", lambda t: _opt(data=(np.array([["a"] * 4] * 64), labels())), DataError,
         "inputs hold strings.*TextVectorization"),
    Case("data_complex", lambda t: _opt(data=(images().astype(np.complex64), labels())), DataError, "complex"),
    Case("data_ragged", lambda t: _opt(data=(ragged(), labels(2))), DataError,
         "Python objects .*samples of different shapes"),
    Case("data_floats_for_token_ids", lambda t: _opt(text_model(), (RNG.random((64, 12)) * 10, labels(classes=2))),
         DataError, "takes integer ids .* non-integer floats"),
    Case("data_token_ids_out_of_range",
         lambda t: _opt(text_model(), (RNG.integers(0, 500, (64, 12)), labels(classes=2))), DataError,
         "model fails on held-out samples of `data`.*not in"),
    Case("data_not_arrays", lambda t: _opt(data="train.npy"), DataError, "must be a tf.data.Dataset"),
    Case("data_three_tuple", lambda t: _opt(data=(images(), labels(), labels())), DataError, "a tuple of 3"),
    # data: values
    Case("data_nan", lambda t: _opt(data=(np.where(images() > 0.99, np.nan, images()), labels())), DataError,
         "NaN .*drop or impute"),
    Case("data_inf", lambda t: _opt(data=(np.where(images() > 0.99, np.inf, images()), labels())), DataError,
         r"0 NaN and \d+ Inf"),
    Case("data_empty", lambda t: _opt(data=(np.zeros((0, 8, 8, 1), "float32"), np.zeros((0,)))), DataError,
         "is empty"),
    Case("data_empty_dataset", lambda t: _opt(data=empty_dataset()), DataError, "dataset .* is empty"),
    Case("data_one_sample", lambda t: _opt(data=(images(1), labels(1))), DataError, "has 1 samples"),
    Case("data_empty_held_out_split",
         lambda t: _opt(data={"train": (images(), labels()), "eval": (images(0), labels(0))}),
         DataError, "`validation_data` is empty"),
    Case("data_input_lengths_differ", lambda t: _opt(two_input_model(), ([images(64), RNG.random((60, 5))], None)),
         DataError, r"different numbers of samples \[64, 60\]"),
    # labels
    Case("labels_strings", lambda t: _opt(data=(images(), np.array(["cat", "dog"] * 32))), DataError,
         "labels are strings.*'cat'.*np.unique"),
    Case("labels_objects", lambda t: _opt(data=(images(), np.array([None, 1] * 32, dtype=object))), DataError,
         "Python objects"),
    Case("labels_nan", lambda t: _opt(data=(images(), np.where(labels() > 8, np.nan, 1.0))), DataError,
         "labels hold .* NaN/Inf"),
    Case("labels_length_mismatch", lambda t: _opt(data=(images(64), labels(60))), DataError,
         "64 inputs but 60 labels"),
    Case("labels_above_class_range", lambda t: _opt(data=(images(), np.arange(64) % 11)), DataError,
         r"class ids from 0 to 10, but the output has 10 units \(classes 0 to 9\)"),
    Case("labels_negative", lambda t: _opt(data=(images(), np.arange(64) % 10 - 1)), DataError,
         "class ids from -1 to 8"),
    Case("labels_not_binary_for_sigmoid", lambda t: _opt(classifier(1, "sigmoid"), (images(), labels(classes=3))),
         DataError, r"one unit in \[0, 1\] \(a binary classifier\).*0/1 labels"),
    Case("labels_onehot_wrong_width", lambda t: _opt(data=(images(), np.eye(5)[labels(classes=5)])), DataError,
         r"labels shaped \(5,\) per sample do not fit an output shaped \(10,\) per sample"),
    Case("labels_fractional_class_ids", lambda t: _opt(data=(images(), labels() + 0.5)), DataError,
         "non-integer values.*10 class units"),
    Case("labels_for_several_outputs", lambda t: _opt(data=(images(), [labels(), labels()])), DataError,
         "labels for several outputs"),
    # recipes
    Case("recipe_unknown", lambda t: _opt(recipe="turbo"), ConfigError, "unknown recipe 'turbo'; shipped recipes"),
    Case("recipe_file_missing", lambda t: _opt(recipe=str(t / "r.yaml")), ConfigError, "does not exist"),
    Case("recipe_bad_yaml", lambda t: _opt(recipe=str(recipe_file(t, "passes: [\n  - pass: Quantize\n  args: {"))),
         ConfigError, "not valid YAML"),
    Case("recipe_no_passes", lambda t: _opt(recipe=str(recipe_file(t, "steps: []\n"))), ConfigError,
         "needs a 'passes' list"),
    Case("recipe_unknown_pass", lambda t: _opt(recipe=str(recipe_file(t, "passes:\n  - pass: Magic\n"))), ConfigError,
         "unknown pass 'Magic'; known passes"),
    Case("recipe_bad_argument_name",
         lambda t: _opt(recipe=str(recipe_file(t, "passes:\n  - pass: Quantize\n    args: {bits: 3}\n"))),
         ConfigError, "bad arguments.*bits"),
    Case("recipe_bad_argument_value",
         lambda t: _opt(recipe=str(recipe_file(t, "passes:\n  - pass: Quantize\n    args: {mode: int3}\n"))),
         ConfigError, "mode must be one of"),
    Case("recipe_list_of_non_passes", lambda t: _opt(recipe=["Quantize"]), ConfigError,
         "must hold kerascompress pass objects"),
    # target profiles
    Case("profile_unknown", lambda t: _opt(target="quantum-9000"), ConfigError, "unknown target 'quantum-9000'"),
    Case("profile_file_missing", lambda t: _opt(target=str(t / "t.yaml")), ConfigError, "does not exist"),
    Case("profile_bad_yaml", lambda t: _opt(target=str(profile_file(t, "name: [oops\n"))), ConfigError,
         "not valid YAML"),
    Case("profile_missing_field", lambda t: _opt(target=str(profile_file(t, "name: mine\n"))), ConfigError,
         "runtime.*missing"),
    # constraints
    Case("constraint_drop_above_1", lambda t: _opt(constraints=kc.Constraints(max_accuracy_drop=5)), ConfigError,
         r"max_accuracy_drop must be in \[0, 1\]"),
    Case("constraint_drop_negative", lambda t: _opt(constraints=kc.Constraints(max_accuracy_drop=-0.1)), ConfigError,
         "max_accuracy_drop must be in"),
    Case("constraint_drop_nan", lambda t: _opt(constraints=kc.Constraints(max_accuracy_drop=math.nan)), ConfigError,
         "max_accuracy_drop must be in"),
    Case("constraint_slowdown_below_1", lambda t: _opt(constraints=kc.Constraints(max_slowdown=0.5)), ConfigError,
         "max_slowdown must be >= 1.0"),
    Case("constraint_size_zero", lambda t: _opt(constraints=kc.Constraints(max_size_bytes=0)), ConfigError,
         "max_size_bytes must be positive"),
    Case("constraint_latency_negative", lambda t: _opt(constraints=kc.Constraints(max_latency_ms=-1)), ConfigError,
         "max_latency_ms must be positive"),
    # output folders
    Case("output_dir_is_a_file", lambda t: _opt(output_dir=existing_file(t)), ConfigError,
         "is an existing file; pass a folder"),
    Case("output_dir_under_a_file", lambda t: _opt(output_dir=existing_file(t) / "sub"), ConfigError,
         "cannot write to the output folder .*choose a folder you can write to"),
    Case("output_dir_unwritable", lambda t: _opt(output_dir="/proc/kerascompress-out"), ConfigError,
         "cannot write to the output folder '/proc/kerascompress-out'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_to_optimize_is_named(case, tmp_path):
    try:
        kwargs = case.make(tmp_path)
    except kc.KerasCompressError as exc:  # refused while being built (e.g. Constraints(...)): same contract
        assert isinstance(exc, case.error)
        assert __import__("re").search(case.names, str(exc)), str(exc)
        return
    kwargs.setdefault("output_dir", tmp_path / "out")
    kwargs.setdefault("target", "x86-avx2")
    kwargs.setdefault("recipe", "quantize")
    with pytest.raises(case.error, match=case.names):
        kc.optimize(**kwargs, verbose=False, latency_runs=2)
    assert not (tmp_path / "out" / "report.json").exists()  # refused before anything ran


def test_nothing_is_written_or_modified_when_refused(tmp_path):
    model = classifier()
    digest = weights_digest(model)
    out = tmp_path / "out"
    with pytest.raises(DataError):
        kc.optimize(model, target="x86-avx2", data=(images(), np.arange(64) % 11), output_dir=out, verbose=False)
    assert weights_digest(model) == digest
    assert not out.exists() or not list(out.iterdir())


def test_good_input_passes_preflight_with_notes_for_value_outputs(tmp_path):
    x = RNG.random((80, 4)).astype("float32")
    checked = preflight(regression(), (x, x.sum(axis=1) * 0.37), output_dir=tmp_path / "ok")
    assert checked.data is not None and len(checked.data.y_eval) == 16
    assert any("relative MSE" in n for n in checked.notes)
    assert (tmp_path / "ok").is_dir()


def test_one_hot_and_binary_labels_are_accepted():
    preflight(classifier(), (images(), np.eye(10)[labels()]))
    preflight(classifier(1, "sigmoid"), (images(), labels(classes=2)))


def test_a_subclassed_model_is_wrapped_with_the_same_function():
    x = images()
    net = built(Subclassed(), x)
    checked = preflight(net, (x, labels(classes=3)))
    np.testing.assert_allclose(checked.model.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-6)
    assert any("subclassed" in n for n in checked.notes)


def test_the_lambda_file_loads_when_the_caller_opts_in(tmp_path):
    from kerascompress.models.io import load_model

    model = load_model(lambda_file(tmp_path, ".keras"), safe_mode=False)
    assert any(isinstance(layer, L.Lambda) for layer in model.layers)


# ----------------------------------------------------------------------------- validate


def _tflite(tmp: Path) -> Path:
    from kerascompress.export.tflite import to_tflite

    path = tmp / "m.tflite"
    to_tflite(classifier(), "float32", path=path)
    return path


VALIDATE_CASES = [
    Case("artifact_missing", lambda t: dict(artifact=t / "none.tflite"), ExportError, "does not exist"),
    Case("artifact_unknown_suffix", lambda t: dict(artifact=(t / "m.pb", (t / "m.pb").write_bytes(b"x"))[0]),
         ConfigError, "m.pb"),
    Case("artifact_corrupt", lambda t: dict(artifact=(t / "c.tflite", (t / "c.tflite").write_bytes(b"junk"))[0]),
         ExportError, "c.tflite"),
    Case("reference_missing", lambda t: dict(artifact=_tflite(t), reference=t / "none.keras", data=images()),
         UnsupportedModelError, "does not exist"),
    Case("reference_lambda", lambda t: dict(artifact=_tflite(t), reference=lambda_file(t, ".keras"), data=images()),
         UnsupportedModelError, "safe_mode=False"),
    Case("reference_without_data", lambda t: dict(artifact=_tflite(t), reference=classifier()), DataError,
         "no `data`"),
    Case("data_nan", lambda t: dict(artifact=_tflite(t), reference=classifier(),
                                    data=np.where(images() > 0.99, np.nan, images())), DataError, "NaN"),
    Case("labels_strings", lambda t: dict(artifact=_tflite(t), reference=classifier(),
                                          data=(images(), np.array(["a", "b"] * 32))),
         DataError, "labels are strings"),
    Case("labels_out_of_range", lambda t: dict(artifact=_tflite(t), reference=classifier(),
                                               data=(images(), np.arange(64) % 12)),
         DataError, "class ids from 0 to 11"),
]


@pytest.mark.parametrize("case", VALIDATE_CASES, ids=[c.id for c in VALIDATE_CASES])
def test_bad_input_to_validate_is_named(case, tmp_path):
    kwargs = case.make(tmp_path)
    with pytest.raises(case.error, match=case.names):
        kc.validate(kwargs.pop("artifact"), runs=0, **kwargs)
