"""Building, running and timing a TensorRT engine: the code that runs on the device.

These functions run here (when TensorRT and a GPU are present) and, copied verbatim by
`kerascompress.export.tensorrt.engine_script_source`, inside the generated
build_engine.py on the device. They may only use the standard library, numpy, tensorrt
and torch or cuda-python for device memory, and import them inside their bodies.

Correct by construction: every copy and every execution goes on one CUDA stream, the
host waits for that stream before it reads a result or a clock, and every device buffer
and the stream are released when the run ends, also when it fails.
"""


def trt_device_memory():
    """Device memory on one CUDA stream: torch's CUDA tensors if torch imports, else cuda-python.

    The returned object has ``stream`` (the handle TensorRT enqueues on), ``alloc(shape,
    dtype)``, ``ptr(buf)``, ``to_device(buf, array)`` (queued on the stream),
    ``to_host(buf)`` (queued, then waits for the stream), ``sync()``, ``free(buf)`` and
    ``close()``.
    """
    import numpy as np

    try:
        import torch
    except ImportError:
        torch = None

    if torch is not None:

        class TorchMemory:
            def __init__(self):
                self._stream = torch.cuda.Stream()
                self.stream = self._stream.cuda_stream
                self._live = []

            def alloc(self, shape, dtype):
                with torch.cuda.stream(self._stream):
                    buf = torch.empty(tuple(shape), dtype=getattr(torch, np.dtype(dtype).name), device="cuda")
                self._live.append(buf)
                return buf

            def ptr(self, buf):
                return int(buf.data_ptr())

            def to_device(self, buf, array):
                host = torch.from_numpy(np.ascontiguousarray(array))
                with torch.cuda.stream(self._stream):
                    buf.copy_(host)

            def to_host(self, buf):
                with torch.cuda.stream(self._stream):
                    out = buf.cpu()  # waits for the stream's earlier work
                self.sync()
                return out.numpy()

            def sync(self):
                self._stream.synchronize()

            def free(self, buf):
                self._live = [b for b in self._live if b is not buf]  # the caching allocator reclaims it

            def close(self):
                self.sync()
                self._live = []

        return TorchMemory()

    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python before 12.6
        except ImportError as err:
            raise RuntimeError(
                "running a TensorRT engine needs device memory from torch (with CUDA) or cuda-python: "
                "pip install cuda-python"
            ) from err

    def check(result):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    class Buf:
        def __init__(self, shape, dtype):
            self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
            self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
            self.ptr = int(check(cudart.cudaMalloc(max(1, self.nbytes))))

    class CudartMemory:
        def __init__(self):
            self.stream = int(check(cudart.cudaStreamCreate()))
            self._pending = []  # host arrays of queued copies: kept alive until the stream is done

        def alloc(self, shape, dtype):
            return Buf(shape, dtype)

        def ptr(self, buf):
            return buf.ptr

        def to_device(self, buf, array):
            host = np.ascontiguousarray(array, dtype=buf.dtype)
            self._pending.append(host)
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            check(cudart.cudaMemcpyAsync(buf.ptr, host.ctypes.data, buf.nbytes, kind, self.stream))

        def to_host(self, buf):
            out = np.empty(buf.shape, dtype=buf.dtype)
            kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            check(cudart.cudaMemcpyAsync(out.ctypes.data, buf.ptr, buf.nbytes, kind, self.stream))
            self.sync()
            return out

        def sync(self):
            check(cudart.cudaStreamSynchronize(self.stream))
            self._pending = []

        def free(self, buf):
            check(cudart.cudaFree(buf.ptr))

        def close(self):
            self.sync()
            check(cudart.cudaStreamDestroy(self.stream))

    return CudartMemory()


def trt_build_engine(onnx_path, engine_path, shapes, sparsity=False, workspace_mb=2048,
                     strongly_typed=True, builder_flags=()):
    """Parse the ONNX into a network and serialize the engine.

    ``strongly_typed`` (TensorRT 10/11): the ONNX's types are the engine's. Otherwise
    (TensorRT 8.x) the network is weakly typed and ``builder_flags`` (e.g. ("INT8",
    "FP16")) allow the precisions the ONNX carries: without INT8 a Q/DQ graph does not
    build as int8.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if typed is None:
            raise RuntimeError(
                f"TensorRT {trt.__version__} has no strongly typed networks (added in 10.0); this kit was written "
                "for TensorRT 10/11: write it again for a profile whose runtime_version matches this device"
            )
        flags |= 1 << int(typed)
    else:
        explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        if explicit is not None:  # needed for ONNX on 8.x; gone in 11.x, where this kit does not apply
            flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse the ONNX: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in builder_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise RuntimeError(
                f"TensorRT {trt.__version__} has no BuilderFlag.{name}: this kit was written for weakly typed "
                "TensorRT 8.x; write it again for a profile whose runtime_version matches this device"
            )
        config.set_flag(flag)
    if sparsity:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        lo, opt, hi = shapes[tensor.name]
        profile.set_shape(tensor.name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    with open(engine_path, "wb") as f:
        f.write(bytes(serialized))
    return engine_path


def trt_run_engine(engine_path, inputs, runs=50, warmup=10, memory=None):
    """Run the engine on ``inputs`` (name -> array); return outputs (float32) and per-run times (ms).

    Each timed run is one ``execute_async_v3`` on the memory's stream followed by a wait
    for that stream. ``memory`` (a `trt_device_memory` object) is borrowed; without it one
    is made here and closed at the end. Every buffer is freed, also on failure.
    """
    import time

    import numpy as np
    import tensorrt as trt

    own = memory is None
    mem = trt_device_memory() if own else memory
    buffers = {}
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as f:
            engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if engine is None:
            raise RuntimeError(f"{engine_path} is not a TensorRT engine for this GPU and TensorRT version")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        out_names = [n for n in names if n not in in_names]
        missing = [n for n in in_names if n not in inputs]
        if missing:
            raise RuntimeError(f"no data for engine inputs {missing}; the engine's inputs are {in_names}")
        for n in in_names:
            arr = np.ascontiguousarray(inputs[n], dtype=trt.nptype(engine.get_tensor_dtype(n)))
            context.set_input_shape(n, arr.shape)
            buffers[n] = mem.alloc(arr.shape, arr.dtype)
            mem.to_device(buffers[n], arr)
        for n in out_names:
            buffers[n] = mem.alloc(tuple(context.get_tensor_shape(n)), trt.nptype(engine.get_tensor_dtype(n)))
        for n in names:
            context.set_tensor_address(n, mem.ptr(buffers[n]))

        def execute():
            if not context.execute_async_v3(mem.stream):
                raise RuntimeError("TensorRT failed to enqueue the engine (see the log above)")
            mem.sync()

        for _ in range(int(warmup)):
            execute()
        times = []
        for _ in range(max(1, int(runs))):
            start = time.perf_counter()
            execute()
            times.append((time.perf_counter() - start) * 1000.0)
        outputs = {n: mem.to_host(buffers[n]).astype(np.float32) for n in out_names}
    finally:
        try:
            mem.sync()
        finally:
            for buf in buffers.values():
                mem.free(buf)
            if own:
                mem.close()
    return outputs, times


def trt_time_batches(engine_path, sample, batch_sizes, runs=50, memory=None):
    """Median / p90 latency (ms) and throughput (samples/s) at each batch size."""
    import numpy as np

    result = {}
    for b in batch_sizes:
        feeds = {n: np.repeat(np.asarray(a)[:1], b, axis=0) for n, a in sample.items()}
        _, times = trt_run_engine(engine_path, feeds, runs=runs, warmup=max(1, runs // 10), memory=memory)
        times = sorted(times)
        median = float(np.median(times))
        result[int(b)] = {
            "median_ms": median,
            "p90_ms": float(times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]),
            "throughput_per_s": float(b * 1000.0 / median) if median > 0 else 0.0,
        }
    return result
