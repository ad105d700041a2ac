"""Keras 3 model -> TFLite flatbuffer at the number format a `PrecisionPlan` asks for.

We trace the model ourselves (instead of ``TFLiteConverter.from_keras_model``) for two
reasons: the converted graph's tensor names then carry a scope we can map back to each
Keras layer call exactly (the names TF makes up are uniquified per graph, so ``dense``
may appear as ``dense_1`` and a shared layer as two scopes), and inputs and outputs keep
the Keras model's order in the flatbuffer, which the LiteRT runner relies on.

Modes: ``float32``, ``fp16`` (fp16 weights), ``dynamic`` (int8 weights, float compute),
``int8`` (full integer with float fallback for ops without int8 kernels; ``int8_io``
makes the model integer-only, int8 in and out), ``int16x8`` (int16 activations, int8
weights; accepted as a string only) and ``int8`` with ``float_layers`` (those Keras
layers' ops are kept in float through the quantization debugger's node denylist).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from kerascompress.errors import (
    ConfigError,
    DataError,
    ExportError,
    UnsupportedModelError,
)
from kerascompress.fileio import write_atomic
from kerascompress.quant.calibration import RangeCollector
from kerascompress.quant.plan import PrecisionPlan

#: Modes `to_tflite` accepts (the same as `PrecisionPlan` modes).
TFLITE_MODES = ("float32", "fp16", "dynamic", "int8", "int16x8", "mixed")

#: Representative samples used for calibration when the caller does not say.
DEFAULT_CALIBRATION_SAMPLES = 200

# Ops whose float outputs are bookkeeping, not arithmetic left in float.
_INTEGER_ONLY_EXEMPT = {"QUANTIZE", "DEQUANTIZE"}


#: Activation range methods (see kerascompress.passes.calibration).
CALIBRATIONS = ("minmax", "percentile", "mse")


# --------------------------------------------------------------------------- plan


def _mixed_as_int8(plan: PrecisionPlan) -> tuple[str, PrecisionPlan]:
    """A per-layer plan in the one form LiteRT can run: int8 with float32 fallback.

    The converter cannot mix fp16 and int8 in one model (asking for both silently gives
    plain fp16), so a plan with both is refused rather than exported wrongly.
    """
    import dataclasses

    kinds = {p for _, p in plan.layer_precisions}
    unknown = kinds - {"int8", "fp16", "fp32"}
    if unknown:
        raise ConfigError(f"layer_precisions may name int8, fp16 or fp32; got {sorted(unknown)}")
    if "fp16" in kinds:
        raise ConfigError(
            "a mixed plan with fp16 layers cannot be exported to LiteRT: the converter makes all weights fp16 or "
            "none, and asking for fp16 and int8 together silently gives plain fp16; keep the non-int8 layers in "
            "fp32 (int8 with float fallback) or use mode 'fp16' for the whole model"
        )
    if "int8" not in kinds:
        return "float32", dataclasses.replace(plan, mode="float32", layer_precisions=(), int8_io=False)
    floats = tuple(n for n, p in plan.layer_precisions if p != "int8")
    return "int8", dataclasses.replace(plan, mode="int8", float_layers=tuple(plan.float_layers) + floats)


def _normalize_plan(plan: Union[PrecisionPlan, str], int8_io: Optional[bool]) -> tuple[str, PrecisionPlan, bool]:
    """(mode, plan, int8_io) with the argument overriding the plan's ``int8_io``."""
    if isinstance(plan, str):
        mode = plan
        if mode not in TFLITE_MODES:
            raise ConfigError(f"unknown TFLite precision {mode!r}; choose one of {', '.join(TFLITE_MODES)}")
        plan_obj = PrecisionPlan(mode=mode)
    elif isinstance(plan, PrecisionPlan):
        mode, plan_obj = plan.mode, plan
    else:
        raise ConfigError(f"`plan` must be a PrecisionPlan or a mode name, got {type(plan).__name__}")
    io = plan_obj.int8_io if int8_io is None else bool(int8_io)
    if mode == "mixed":
        mode, plan_obj = _mixed_as_int8(plan_obj)
    if plan_obj.calibration not in CALIBRATIONS:
        raise ConfigError(
            f"unknown calibration {plan_obj.calibration!r}; choose one of {', '.join(CALIBRATIONS)}"
        )
    if plan_obj.float_layers and mode != "int8":
        raise ConfigError(
            f"float_layers only applies to mode 'int8' (got mode {mode!r}); the other modes keep "
            "every layer at one precision"
        )
    if io and mode != "int8":
        raise ConfigError(f"int8_io=True needs mode 'int8' (got {mode!r}): only a full-integer model has int8 I/O")
    return mode, plan_obj, io


# ------------------------------------------------------------------------ tracing


def _load_model(model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        import keras

        p = Path(model)
        if not p.exists():
            raise DataError(f"model file {str(p)!r} does not exist")
        try:
            return keras.models.load_model(p)
        except Exception as exc:  # keras raises many types for unreadable files
            raise UnsupportedModelError(f"could not load a Keras model from {str(p)!r}: {exc}") from exc
    return model


def _graph_model(model: Any) -> Any:
    """The Functional graph behind a model, or None for subclassed models."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    return None


class _Trace:
    """A traced inference function plus which graph scope belongs to which Keras layer.

    ``scopes`` maps the first component of a TF op name (``dense_3``) to the Keras layer
    name whose call created it; ``output_layers[i]`` is the layer producing output i.
    """

    def __init__(self, concrete: Any, scopes: dict[str, str], output_layers: list[Optional[str]],
                 layer_names: list[str], input_names: list[str], input_dtypes: list[Any]) -> None:
        self.concrete = concrete
        self.scopes = scopes
        self.output_layers = output_layers
        self.layer_names = layer_names
        self.input_names = input_names
        self.input_dtypes = input_dtypes


def _trace(model: Any) -> _Trace:
    """Trace ``model`` in inference mode, recording the graph ops each layer call creates."""
    import keras
    import tensorflow as tf

    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise UnsupportedModelError(
            "the model has no defined inputs; build it on keras.Input(...) (a Functional or "
            "Sequential model with an Input) before exporting"
        )
    specs = [
        tf.TensorSpec((None,) + tuple(t.shape[1:]), tf.as_dtype(t.dtype or "float32"), name=_spec_name(t, i))
        for i, t in enumerate(inputs)
    ]
    graph_model = _graph_model(model)
    op_layer: dict[str, str] = {}

    if graph_model is not None:
        from keras.src.models.functional import operation_fn as _keras_operation_fn

        def fn(*xs: Any) -> Any:
            graph = tf.compat.v1.get_default_graph()

            def recording(operation: Any) -> Callable[..., Any]:
                inner = _keras_operation_fn(operation, training=False)

                def call(*args: Any, **kwargs: Any) -> Any:
                    start = len(graph.get_operations())
                    out = inner(*args, **kwargs)
                    for op in graph.get_operations()[start:]:
                        op_layer.setdefault(op.name, operation.name)
                    return out

                return call

            outs = graph_model._run_through_graph(list(xs), operation_fn=recording)
            return list(keras.tree.flatten(outs))
    else:
        def fn(*xs: Any) -> Any:
            outs = model(xs[0] if len(xs) == 1 else list(xs), training=False)
            return list(keras.tree.flatten(outs))

    try:
        concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
    except Exception as exc:
        raise ExportError(f"tracing the model for TFLite conversion failed: {exc}") from exc

    scopes: dict[str, str] = {}
    ambiguous: set[str] = set()
    for op_name, layer in op_layer.items():
        head = op_name.split("/", 1)[0]
        if scopes.get(head, layer) != layer:
            ambiguous.add(head)
        scopes[head] = layer
    for head in ambiguous:
        scopes.pop(head, None)

    output_layers: list[Optional[str]] = []
    for t in getattr(model, "outputs", None) or []:
        history = getattr(t, "_keras_history", None)
        op = getattr(history, "operation", None) if history is not None else None
        output_layers.append(op.name if op is not None and not _is_input_layer(op) else None)
    layer_names = [layer.name for layer in (graph_model.operations if graph_model is not None else [])
                   if not _is_input_layer(layer)]
    return _Trace(concrete, scopes, output_layers, layer_names, [s.name for s in specs],
                  [s.dtype.as_numpy_dtype for s in specs])


def _spec_name(tensor: Any, index: int) -> str:
    name = str(getattr(tensor, "name", "") or f"input_{index}")
    return "".join(c if (c.isalnum() or c in "_.-") else "_" for c in name) or f"input_{index}"


def _is_input_layer(op: Any) -> bool:
    return type(op).__name__ == "InputLayer"


# ------------------------------------------------------------- representative data


def _representative(data: Any, input_names: Sequence[str], n: int,
                    dtypes: Optional[Sequence[Any]] = None) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A converter-style generator factory: one sample per step, inputs in model order."""
    if data is None:
        raise DataError(
            "full-integer quantization needs representative_data: pass a few hundred typical "
            "inputs (a numpy array, or a list of arrays for a multi-input model)"
        )
    if isinstance(data, dict):
        missing = [k for k in input_names if k not in data]
        if missing:
            raise DataError(f"representative_data has no entry for input(s) {missing}; keys are {sorted(data)}")
        arrays = [np.asarray(data[k]) for k in input_names]
    elif isinstance(data, (list, tuple)) and len(input_names) > 1:
        arrays = [np.asarray(a) for a in data]
    else:
        arrays = [np.asarray(data)]
    if len(arrays) != len(input_names):
        raise DataError(f"the model has {len(input_names)} inputs but representative_data provides {len(arrays)}")
    count = min(len(a) for a in arrays)
    if count == 0:
        raise DataError("representative_data is empty; pass a few hundred typical inputs")
    if any(len(a) != count for a in arrays):
        raise DataError(f"representative_data arrays have different lengths: {[len(a) for a in arrays]}")
    take = min(count, max(1, int(n)))
    dtypes = list(dtypes or [np.float32] * len(arrays))
    arrays = [a[:take].astype(dt, copy=False) for a, dt in zip(arrays, dtypes)]

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(take):
            yield [a[i: i + 1] for a in arrays]

    return gen


# ----------------------------------------------------------------------- convert


def to_tflite(
    model: Any,
    plan: Union[PrecisionPlan, str] = "float32",
    representative_data: Any = None,
    path: Union[str, os.PathLike, None] = None,
    int8_io: Optional[bool] = None,
    num_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    fp16_accumulation: bool = False,
) -> bytes:
    """Convert ``model`` (a Keras model or a .keras/.h5 path) to a TFLite flatbuffer.

    Returns the bytes and, when ``path`` is given, also writes them there atomically (a
    reader never sees a half-written file). ``representative_data`` is required for
    ``int8`` and ``int16x8``; ``num_samples`` of it (one per step) calibrate the ranges.
    ``fp16_accumulation`` (mode ``fp16`` only): ask for FP16 accumulation, so XNNPACK
    computes the model in FP16 on CPUs with FP16 arithmetic (see `request_fp16_accumulation`).
    Raises `ConfigError` for plans this exporter cannot honour, `DataError` for missing
    data and `ExportError` (with the converter's own message) when conversion fails.
    """
    mode, plan_obj, io = _normalize_plan(plan, int8_io)
    model = _load_model(model)
    trace = _trace(model)
    float_layers = tuple(plan_obj.float_layers)
    if float_layers:
        unknown = [n for n in float_layers if n not in trace.layer_names]
        if trace.layer_names == [] or unknown:
            raise ConfigError(
                f"float_layers names unknown layer(s) {unknown or list(float_layers)}; the model's layers are "
                f"{trace.layer_names or '(not a Functional/Sequential model: per-layer float fallback needs one)'}"
            )

    import tensorflow as tf

    def new_converter() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.TFLiteConverter.from_concrete_functions([trace.concrete])

    converter = new_converter()
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        if fp16_accumulation:
            request_fp16_accumulation(converter)
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode in ("int8", "int16x8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        samples = _representative(representative_data, trace.input_names, num_samples, trace.input_dtypes)
        converter.representative_dataset = samples
        if mode == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        elif io and not float_layers:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8

    kept_float: list[str] = []
    recalibrate = mode == "int8" and plan_obj.calibration != "minmax"
    if float_layers or recalibrate:
        data, kept_float = _with_float_layers(
            converter, trace, float_layers, io, plan_obj.calibration, samples if recalibrate else None
        )
    else:
        data = _convert(converter)
    if io:
        _check_integer_only(data, trace, kept_float)
    if mode == "fp16" and fp16_accumulation:
        check_fp16_accumulation(data)
    if path is not None:
        write_atomic(path, data)
    return data


def request_fp16_accumulation(converter: Any) -> None:
    """Make an FP16 conversion record ``reduced_precision_support = "fp16accfp16"``.

    The converter's plain FP16 model records "fp16accfp32": XNNPACK then dequantizes the
    weights and computes in FP32 everywhere. It computes in FP16 on ARMv8.2 FP16 CPUs only
    when the model says it accepts FP16 inference *and* FP16 accumulation, which this
    converter attribute requests (XNNPACK delegate README, 'Floating-Point (IEEE FP16)
    Operators', https://github.com/google-ai-edge/LiteRT/blob/main/tflite/delegates/xnnpack/README.md).
    """
    import tensorflow as tf

    converter.target_spec._experimental_supported_accumulation_type = tf.dtypes.float16


def check_fp16_accumulation(data: bytes) -> None:
    """Raise `ExportError` unless the model records FP16 accumulation (a converter that ignored the request)."""
    from kerascompress.export.tflite_graph import reduced_precision_support

    written = reduced_precision_support(data)
    if written != "fp16accfp16":
        raise ExportError(
            f"the TFLite converter wrote reduced_precision_support={written!r}, not 'fp16accfp16': XNNPACK would "
            "compute this FP16 model in FP32; use a TensorFlow whose converter honours "
            "target_spec._experimental_supported_accumulation_type"
        )


def _convert(converter: Any) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(converter.convert())
    except Exception as exc:
        raise ExportError(f"TFLite conversion failed: {_short(exc)}") from exc


def _short(exc: BaseException, limit: int = 4000) -> str:
    """The converter's message without the long MLIR call-site trail."""
    text = str(exc)
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith(("^", "/", "note:")) and "note: called from" not in ln]
    text = "\n".join(lines).strip() or str(exc)
    return text if len(text) <= limit else text[:limit] + " ..."


# ------------------------------------------------------------- layer -> TFLite ops


def _ops(model_bytes: bytes) -> tuple[list[dict], dict[int, dict], list[int]]:
    """(ops, tensors by index, subgraph output indices) of a flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    outputs = [d["index"] for d in interp.get_output_details()]
    return list(interp._get_ops_details()), tensors, outputs


def layer_nodes(model_bytes: bytes, trace: _Trace) -> dict[str, list[str]]:
    """Keras layer name -> output tensor names of the TFLite ops that compute it.

    A TFLite tensor name joins the TF op names fused into it with ``;``; the first path
    component of each is the unique scope of one layer call. Model outputs are renamed
    (``Identity_1``), so the op producing output i belongs to the layer producing Keras
    output i. The quantizer's ``denylisted_nodes`` matches these full names exactly.
    """
    ops, tensors, outputs = _ops(model_bytes)
    result: dict[str, list[str]] = {}
    for op in ops:
        layers: set[str] = set()
        names = []
        for idx in op["outputs"]:
            if idx < 0:
                continue
            name = tensors[idx]["name"]
            names.append(name)
            for piece in name.split(";"):
                layer = trace.scopes.get(piece.split("/", 1)[0])
                if layer is not None:
                    layers.add(layer)
            if idx in outputs:
                k = outputs.index(idx)
                if k < len(trace.output_layers) and trace.output_layers[k]:
                    layers.add(trace.output_layers[k])
        for layer in layers:
            result.setdefault(layer, []).extend(n for n in names if n not in result.get(layer, []))
    return result


def _with_float_layers(converter: Any, trace: _Trace, float_layers: Sequence[str],
                       io: bool, calibration: str = "minmax",
                       samples: Optional[Callable[[], Iterator[list[np.ndarray]]]] = None) -> tuple[bytes, list[str]]:
    """Full-int8 conversion with the named layers' ops denylisted (kept in float).

    With ``samples`` the calibrated activation ranges are replaced by ``calibration``
    ("percentile" or "mse") ranges computed from the same samples (`_recalibrate`).

    Returns the model and the denylisted node names.
    The debugger calibrates once; the node names are read from its calibrated model (the
    exact names its quantizer matches), then the denylist is applied by re-quantizing.
    """
    import tensorflow as tf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=converter.representative_dataset
            )
    except Exception as exc:
        raise ExportError(f"TFLite int8 calibration failed: {_short(exc)}") from exc
    calibrated = bytes(debugger.calibrated_model)
    if samples is not None:
        calibrated = _recalibrate(calibrated, samples, calibration)
    nodes = layer_nodes(calibrated, trace)
    denylist: list[str] = []
    for name in float_layers:
        found = nodes.get(name, [])
        if not found:
            warnings.warn(
                f"layer {name!r} has no op of its own in the converted model (it was folded into a "
                "neighbouring op or is an identity at inference), so there is nothing to keep in float",
                stacklevel=3,
            )
        denylist.extend(n for n in found if n not in denylist)
    if io or not denylist or samples is not None:
        # The debugger always asks for float I/O and quantizes its own calibration;
        # int8 I/O and recalibrated ranges go to the quantizer directly.
        data = _quantize(calibrated, converter, denylist, io)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
                data = bytes(debugger.get_nondebug_quantized_model())
        except Exception as exc:
            raise ExportError(
                f"TFLite int8 conversion with float layers {list(float_layers)} failed: {_short(exc)}"
            ) from exc
    _check_denylisted_float(data, denylist, float_layers, nodes)
    return data, denylist


def _recalibrate(calibrated: bytes, samples: Callable[[], Iterator[list[np.ndarray]]], method: str) -> bytes:
    """Replace the min/max statistics of a calibrated model by ``method`` ranges.

    The converter records min/max per tensor; percentile and MSE ranges need the values
    themselves, so the calibrated (still float) model is run on the same samples with
    every tensor kept, and each recorded per-tensor range is recomputed from them.
    """
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils


    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    wanted = [i for i, t in enumerate(tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1]
    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    inputs = interp.get_input_details()
    collectors = {i: RangeCollector(method) for i in wanted}
    shapes: list[tuple[int, ...]] = []
    for sample in samples():
        now = [tuple(np.shape(v)) for v in sample]
        if now != shapes:
            for detail, shape in zip(inputs, now):
                interp.resize_tensor_input(detail["index"], shape)
            interp.allocate_tensors()
            shapes = now
        for detail, value in zip(inputs, sample):
            interp.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
        interp.invoke()
        for i in wanted:
            collectors[i].update(interp.get_tensor(i))
    for i in wanted:
        lo, hi = collectors[i].range()
        tensors[i].quantization.min = np.array([lo], dtype=np.float32)
        tensors[i].quantization.max = np.array([hi], dtype=np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _quantize(calibrated: bytes, converter: Any, denylist: list[str], io: bool) -> bytes:
    """Quantize a calibrated model; used for int8 I/O, which the debugger cannot request."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as _convert_mod

    try:
        return bytes(
            _convert_mod.mlir_quantize(
                calibrated,
                disable_per_channel=converter._experimental_disable_per_channel,
                fully_quantize=io,
                input_data_type=tf.int8 if io else tf.float32,
                output_data_type=tf.int8 if io else tf.float32,
                denylisted_nodes=denylist or None,
            )
        )
    except Exception as exc:
        raise ExportError(f"TFLite int8 quantization failed: {_short(exc)}") from exc


def _check_denylisted_float(data: bytes, denylist: Sequence[str], float_layers: Sequence[str],
                            nodes: dict[str, list[str]]) -> None:
    """Fail loudly if an op we denylisted came out quantized anyway."""
    ops, tensors, _ = _ops(data)
    wanted = set(denylist)
    bad = []
    for op in ops:
        for idx in op["outputs"]:
            if idx >= 0 and tensors[idx]["name"] in wanted and np.dtype(tensors[idx]["dtype"]) in (np.int8, np.int16):
                bad.append(f"{op['op_name']} ({tensors[idx]['name']})")
    if bad:
        owners = [n for n in float_layers if set(nodes.get(n, [])) & {b.split(" (", 1)[1][:-1] for b in bad}]
        raise ExportError(
            f"the quantizer did not keep these ops of layer(s) {owners} in float: {', '.join(bad)}"
        )


def _check_integer_only(data: bytes, trace: Optional[_Trace], kept_float: Sequence[str] = ()) -> None:
    """int8 I/O promises integer arithmetic: name every op left in float that nobody asked for.

    The converter itself keeps ops without int8 kernels (SIN, CUMSUM, FLOOR, ...) in float
    even with ``TFLITE_BUILTINS_INT8`` alone, so this check is what makes the promise hold.
    ``trace`` (None for models not traced here) only names the Keras layer of each op.
    """
    scopes = trace.scopes if trace is not None else {}
    ops, tensors, _ = _ops(data)
    allowed = set(kept_float)
    leftovers = []
    for op in ops:
        if op["op_name"] in _INTEGER_ONLY_EXEMPT:
            continue
        floats = [tensors[i]["name"] for i in op["outputs"]
                  if i >= 0 and np.dtype(tensors[i]["dtype"]).kind == "f" and tensors[i]["name"] not in allowed]
        if floats:
            layer = next((scopes[p.split("/", 1)[0]] for n in floats for p in n.split(";")
                          if p.split("/", 1)[0] in scopes), None)
            leftovers.append(f"{op['op_name']}" + (f" (layer {layer!r})" if layer else f" ({floats[0]})"))
    if leftovers:
        raise ExportError(
            "int8_io=True asks for an integer-only model, but these ops have no int8 kernel and stayed "
            f"in float: {', '.join(leftovers)}. Use int8_io=False (float fallback) or replace those ops."
        )
