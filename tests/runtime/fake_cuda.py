"""Test doubles for the TensorRT engine path: `tensorrt`, cuda-python's `cudart` and `torch`.

They share one fake GPU whose memory is real bytes, and which records every call it
receives (allocations, copies with their stream, executions, synchronisations, frees),
so tests can check the engine code's discipline: one stream, a wait before results are
read, every buffer freed. The fake engine is the ONNX itself, run with onnxruntime on
the bytes in the fake device buffers, so outputs are real numbers.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import sys
import types
from typing import Any

import numpy as np

ENGINE_MAGIC = b"FAKETRT\0"


class FakeGpu:
    """Device memory (pointer -> bytearray) and the log of everything done to it."""

    def __init__(self) -> None:
        self.memory: dict[int, bytearray] = {}
        self.log: list[tuple] = []
        self.streams: set[int] = {0}  # 0: the legacy default stream
        self._ids = itertools.count(0x1000, 0x1000)
        self.last_copy_stream: dict[int, int] = {}  # device pointer -> stream of its last host-to-device copy

    def malloc(self, nbytes: int) -> int:
        ptr = next(self._ids)
        self.memory[ptr] = bytearray(nbytes)
        self.log.append(("malloc", ptr, nbytes))
        return ptr

    def free(self, ptr: int) -> None:
        if ptr not in self.memory:
            raise RuntimeError(f"double free or unknown pointer {ptr:#x}")
        del self.memory[ptr]
        self.log.append(("free", ptr))

    def h2d(self, ptr: int, data: bytes, stream: int) -> None:
        self._check_stream(stream)
        self.memory[ptr][: len(data)] = data
        self.last_copy_stream[ptr] = stream
        self.log.append(("h2d", ptr, stream))

    def d2h(self, ptr: int, nbytes: int, stream: int) -> bytes:
        self._check_stream(stream)
        self.log.append(("d2h", ptr, stream))
        return bytes(self.memory[ptr][:nbytes])

    def new_stream(self) -> int:
        handle = next(self._ids)
        self.streams.add(handle)
        self.log.append(("stream_create", handle))
        return handle

    def sync(self, stream: int) -> None:
        self._check_stream(stream)
        self.log.append(("sync", stream))

    def destroy_stream(self, stream: int) -> None:
        self._check_stream(stream)
        self.streams.discard(stream)
        self.log.append(("stream_destroy", stream))

    def _check_stream(self, stream: int) -> None:
        if stream not in self.streams:
            raise RuntimeError(f"unknown or destroyed stream {stream:#x}")

    def events(self, kind: str) -> list[tuple]:
        return [e for e in self.log if e[0] == kind]


# ----------------------------------------------------------------------------- cuda-python


def fake_cudart(gpu: FakeGpu) -> types.ModuleType:
    """cuda-python's runtime module: every call returns (error, value...) with error 0."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    rt.cudaMalloc = lambda n: (0, gpu.malloc(int(n)))
    rt.cudaFree = lambda ptr: (gpu.free(int(ptr)), 0)[1:]
    rt.cudaStreamCreate = lambda: (0, gpu.new_stream())
    rt.cudaStreamSynchronize = lambda s: (gpu.sync(int(s)), 0)[1:]
    rt.cudaStreamDestroy = lambda s: (gpu.destroy_stream(int(s)), 0)[1:]

    def memcpy_async(dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple:
        if kind == 1:
            gpu.h2d(int(dst), ctypes.string_at(int(src), int(nbytes)), int(stream))
        else:
            data = gpu.d2h(int(src), int(nbytes), int(stream))
            ctypes.memmove(int(dst), data, int(nbytes))
        return (0,)

    rt.cudaMemcpyAsync = memcpy_async
    return rt


def install_cudart(monkeypatch, gpu: FakeGpu) -> None:
    """Make ``from cuda.bindings import runtime`` give the fake, and torch unimportable."""
    rt = fake_cudart(gpu)
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    monkeypatch.setitem(sys.modules, "torch", None)


# ----------------------------------------------------------------------------- torch


def fake_torch(gpu: FakeGpu) -> types.ModuleType:
    """The few torch pieces the engine code uses: CUDA tensors, streams, the stream context."""
    torch = types.ModuleType("torch")
    current = [0]

    class HostTensor:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def numpy(self) -> np.ndarray:
            return self.array

    class CudaTensor:
        def __init__(self, shape: tuple, dtype: np.dtype) -> None:
            self.shape, self.dtype = tuple(shape), np.dtype(dtype)
            self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
            self.ptr = gpu.malloc(max(1, self.nbytes))

        def data_ptr(self) -> int:
            return self.ptr

        def copy_(self, host: HostTensor, non_blocking: bool = False) -> "CudaTensor":
            gpu.h2d(self.ptr, np.ascontiguousarray(host.array, dtype=self.dtype).tobytes(), current[0])
            return self

        def cpu(self) -> HostTensor:
            data = gpu.d2h(self.ptr, self.nbytes, current[0])
            gpu.sync(current[0])  # .cpu() waits for the current stream
            return HostTensor(np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy())

        def __del__(self) -> None:  # the caching allocator reclaims the block
            if self.ptr in gpu.memory:
                gpu.free(self.ptr)

    class Stream:
        def __init__(self) -> None:
            self.cuda_stream = gpu.new_stream()

        def synchronize(self) -> None:
            gpu.sync(self.cuda_stream)

    @contextlib.contextmanager
    def stream(s: Stream):
        before, current[0] = current[0], s.cuda_stream
        try:
            yield
        finally:
            current[0] = before

    for name in ("float32", "float16", "int8", "int32", "int64", "bool"):
        setattr(torch, name, np.dtype(name))
    torch.empty = lambda shape, dtype, device: CudaTensor(shape, dtype)
    torch.from_numpy = HostTensor
    torch.cuda = types.SimpleNamespace(Stream=Stream, stream=stream)
    return torch


def install_torch(monkeypatch, gpu: FakeGpu) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(gpu))


# ----------------------------------------------------------------------------- tensorrt


def fake_tensorrt(gpu: FakeGpu, version: str = "10.8.0", execute_ok: bool = True) -> types.ModuleType:
    """A `tensorrt` module of ``version``'s API shape (8.x: weak typing; 10.x: both; 11.x: strong only).

    ``trt.calls`` records the build calls; engines are ENGINE_MAGIC + the ONNX bytes.
    """
    import onnx
    import onnxruntime as ort

    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    flags = {}
    if major < 11:
        flags["EXPLICIT_BATCH"] = 0
    if major >= 10:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    builder_flags = {"SPARSE_WEIGHTS": "SPARSE_WEIGHTS"}
    if major < 11:
        builder_flags.update(FP16="FP16", INT8="INT8")
    trt.BuilderFlag = types.SimpleNamespace(**builder_flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT")
    trt.nptype = lambda dtype: np.float32

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Network:
        def __init__(self, flag_bits: int) -> None:
            self.flags = flag_bits
            self.inputs: list[str] = []
            self.onnx = b""

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Any:
            return types.SimpleNamespace(name=self.inputs[i])

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            model = onnx.load_from_string(data)
            init = {i.name for i in model.graph.initializer}
            self.network.inputs = [i.name for i in model.graph.input if i.name not in init]
            self.network.onnx = data
            return True

    class Config:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.profiles: list[dict] = []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            trt.calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag: str) -> None:
            self.flags.append(flag)
            trt.calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile: "Profile") -> None:
            self.profiles.append(profile.shapes)

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = (lo, opt, hi)
            trt.calls.append(("set_shape", name, lo, opt, hi))

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flag_bits: int) -> Network:
            trt.calls.append(("create_network", flag_bits))
            return Network(flag_bits)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            missing = [n for n in network.inputs if not any(n in p for p in config.profiles)]
            if missing:
                raise RuntimeError(f"no optimization profile for inputs {missing}")
            trt.calls.append(("build_serialized_network", tuple(config.flags)))
            return ENGINE_MAGIC + network.onnx

    class Context:
        def __init__(self, engine: "Engine") -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shapes[name] = tuple(int(d) for d in shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            batch = next(iter(self.shapes.values()))[0]
            dims = self.engine.output_dims[name]
            return tuple(batch if d is None else d for d in dims)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream: int) -> bool:
            gpu._check_stream(stream)
            gpu.log.append(("exec", stream))
            if not execute_ok:
                return False
            names = self.engine.inputs + self.engine.outputs
            unset = [n for n in names if n not in self.addresses]
            if unset:
                raise RuntimeError(f"tensor addresses not set: {unset}")
            feeds = {}
            for n in self.engine.inputs:
                ptr = self.addresses[n]
                if gpu.last_copy_stream.get(ptr) != stream:
                    raise RuntimeError(f"input {n} was copied on stream {gpu.last_copy_stream.get(ptr)}, executed on {stream}")
                shape = self.shapes[n]
                feeds[n] = np.frombuffer(bytes(gpu.memory[ptr]), np.float32)[: int(np.prod(shape))].reshape(shape)
            for n, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feeds)):
                gpu.memory[self.addresses[n]][: value.nbytes] = np.ascontiguousarray(value, np.float32).tobytes()
            return True

    class Engine:
        def __init__(self, data: bytes) -> None:
            model = onnx.load_from_string(data)
            init = {i.name for i in model.graph.initializer}
            self.inputs = [i.name for i in model.graph.input if i.name not in init]
            self.outputs = [o.name for o in model.graph.output]
            self.output_dims = {
                o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
                for o in model.graph.output
            }
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

        @property
        def num_io_tensors(self) -> int:
            return len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i: int) -> str:
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name in self.inputs else "OUTPUT"

        def get_tensor_dtype(self, name: str) -> str:
            return "FLOAT"

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            return Engine(data[len(ENGINE_MAGIC):]) if data.startswith(ENGINE_MAGIC) else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


def install_tensorrt(monkeypatch, gpu: FakeGpu, version: str = "10.8.0", execute_ok: bool = True) -> types.ModuleType:
    trt = fake_tensorrt(gpu, version, execute_ok)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt
