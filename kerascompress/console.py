"""A quiet console: TensorFlow's native chatter off, our progress lines and errors kept.

Why: a user of the command line or the demo should read our progress and the report,
not oneDNN notices, CPU-feature banners, converter warnings and tf2onnx INFO lines.
Part of that chatter goes through Python (loggers, warnings) and is turned down there;
the rest is written by C++ straight to file descriptor 2, some of it before TensorFlow
has initialised its logging, where TF_CPP_MIN_LOG_LEVEL does not reach (TensorFlow 2.21
prints its oneDNN notice whatever the level). So `quiet` also routes descriptor 2
through a small filter process that drops the known native log formats and passes
every other line on unchanged (our progress, Python tracebacks, native errors).

Call `quiet` before TensorFlow is imported (the command line does so first thing);
nothing here imports TensorFlow. ``--verbose`` skips it and shows everything.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import warnings
from typing import Optional

#: Lines of native chatter that carry no message for a kerascompress user.
NATIVE_NOISE = re.compile(
    rb"^(?:"
    rb"[IW]\d{4} [\d:.]+\s+\d+ [\w.\-]+:\d+\]"  # absl/glog INFO and WARNING lines (C++ and absl-py)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: (?:Created TensorFlow Lite (?:XNNPACK )?delegate|Initialized TensorFlow Lite runtime)"
    rb"|fully_quantize: \d+, inference_type: \d+"  # the TFLite quantizer's settings dump
    rb"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags"
    rb")"
)

#: Python loggers of the libraries we drive, and the level they are turned down to.
_LOGGERS = ("tensorflow", "tf2onnx", "absl", "h5py", "onnx", "onnxruntime")

_filter: Optional["_LineFilter"] = None


def quiet() -> None:
    """Silence TensorFlow's C++, absl, converter and tf2onnx chatter for the rest of the process.

    Idempotent. Native ERROR and FATAL lines, Python tracebacks and everything we print
    still reach stderr.
    """
    global _filter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # native INFO and WARNING after initialisation
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        absl_logging.set_stderrthreshold("error")
    except ImportError:  # pragma: no cover - absl-py is a dependency
        pass
    for module in ("tensorflow", "keras", "tf2onnx", "onnx", "ai_edge_litert", "google.protobuf"):
        warnings.filterwarnings("ignore", module=module + r"(\.|$)")
    if _filter is None:
        _filter = _LineFilter(2, NATIVE_NOISE)


def restore() -> None:
    """Undo `quiet`'s descriptor filter (tests; the filter also restores itself at exit)."""
    global _filter
    if _filter is not None:
        _filter.close()
        _filter = None


class _LineFilter:
    """Route a file descriptor through a small filter process that drops the lines matching ``drop``.

    A process, not a thread: native code that writes while holding the GIL (the TFLite
    converter does) would otherwise fill the pipe and wait forever on a thread that
    needs the GIL to empty it. The filter ignores Ctrl-C, so it outlives an interrupted
    run long enough to pass on the traceback, and ends when the last writer closes.
    """

    def __init__(self, fd: int, drop: re.Pattern) -> None:
        self.fd = fd
        _flush_python_streams()
        self.original = os.dup(fd)
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-c", _FILTER_PROGRAM, drop.pattern.decode()],
            stdin=read_end, stdout=self.original, stderr=subprocess.DEVNULL, close_fds=True,
        )
        os.close(read_end)
        os.dup2(write_end, fd)
        os.close(write_end)
        atexit.register(self.close)

    def close(self) -> None:
        """Put the descriptor back and wait until the filter has passed on what is left."""
        if self.original < 0:
            return
        _flush_python_streams()
        os.dup2(self.original, self.fd)  # drops our write end of the pipe: the filter reads EOF
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child of ours still holds the pipe; it ends with it
            pass
        os.close(self.original)
        self.original = -1


_FILTER_PROGRAM = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
drop = re.compile(sys.argv[1].encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not drop.match(line):
        out.write(line)
        out.flush()
"""


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
