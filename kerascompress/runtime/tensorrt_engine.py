"""Building, running and timing a TensorRT engine: the code that runs on the device.

These functions run here (when TensorRT and a GPU are present) and, copied verbatim by
`kerascompress.export.tensorrt.engine_script_source`, inside the generated
build_engine.py on the device. They may only use the standard library, numpy, tensorrt
and cuda-python / torch for device memory, and import them inside their bodies.
"""


def trt_build_engine(onnx_path, engine_path, shapes, sparsity=False, workspace_mb=2048):
    """Parse the ONNX into a strongly typed network and serialize the engine."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if typed is not None:  # required on 10.x, accepted (always on) on 11.x
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT could not parse the ONNX: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
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


def trt_run_engine(engine_path, inputs, runs=50, warmup=10):
    """Run the engine on ``inputs`` (name -> array); return outputs and per-call times (ms)."""
    import time

    import numpy as np
    import tensorrt as trt

    try:
        import torch

        def alloc(shape, dtype):
            return torch.empty(tuple(shape), dtype=getattr(torch, np.dtype(dtype).name), device="cuda")

        def to_device(buf, arr):
            buf.copy_(torch.from_numpy(np.ascontiguousarray(arr)).to(buf.device))

        def to_host(buf):
            return buf.cpu().numpy()

        def ptr(buf):
            return buf.data_ptr()

        stream = torch.cuda.Stream()
        stream_handle = stream.cuda_stream

        def sync():
            stream.synchronize()

    except ImportError:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # older cuda-python

        def check(res):
            err = res[0] if isinstance(res, tuple) else res
            if int(err) != 0:
                raise RuntimeError(f"CUDA error {err}")
            return res[1] if isinstance(res, tuple) and len(res) > 1 else None

        class Buf:
            def __init__(self, shape, dtype):
                self.shape, self.dtype = tuple(shape), np.dtype(dtype)
                self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
                self.ptr = check(cudart.cudaMalloc(max(1, self.nbytes)))

        def alloc(shape, dtype):
            return Buf(shape, dtype)

        def to_device(buf, arr):
            arr = np.ascontiguousarray(arr, dtype=buf.dtype)
            check(cudart.cudaMemcpy(buf.ptr, arr.ctypes.data, buf.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

        def to_host(buf):
            out = np.empty(buf.shape, dtype=buf.dtype)
            check(cudart.cudaMemcpy(out.ctypes.data, buf.ptr, buf.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
            return out

        def ptr(buf):
            return int(buf.ptr)

        stream_handle = int(check(cudart.cudaStreamCreate()))

        def sync():
            check(cudart.cudaStreamSynchronize(stream_handle))

    logger = trt.Logger(trt.Logger.WARNING)
    with open(engine_path, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    out_names = [n for n in names if n not in in_names]
    buffers = {}
    for n in in_names:
        arr = np.asarray(inputs[n], dtype=trt.nptype(engine.get_tensor_dtype(n)))
        context.set_input_shape(n, arr.shape)
        buffers[n] = alloc(arr.shape, arr.dtype)
        to_device(buffers[n], arr)
    for n in out_names:
        shape = tuple(context.get_tensor_shape(n))
        buffers[n] = alloc(shape, trt.nptype(engine.get_tensor_dtype(n)))
    for n in names:
        context.set_tensor_address(n, ptr(buffers[n]))
    for _ in range(warmup):
        context.execute_async_v3(stream_handle)
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        context.execute_async_v3(stream_handle)
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    outputs = {n: to_host(buffers[n]).astype(np.float32) for n in out_names}
    return outputs, times


def trt_time_batches(engine_path, sample, batch_sizes, runs=50):
    """Median / p90 latency (ms) and throughput (samples/s) at each batch size."""
    import numpy as np

    result = {}
    for b in batch_sizes:
        feeds = {n: np.repeat(a[:1], b, axis=0) for n, a in sample.items()}
        _, times = trt_run_engine(engine_path, feeds, runs=runs)
        times = sorted(times)
        median = float(np.median(times))
        result[int(b)] = {
            "median_ms": median,
            "p90_ms": float(times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]),
            "throughput_per_s": float(b * 1000.0 / median) if median > 0 else 0.0,
        }
    return result
