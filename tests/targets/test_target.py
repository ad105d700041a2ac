"""`Target`: the gate API passes call (kernel, supports, source, runs_here, to_dict)."""
from __future__ import annotations

import platform

import pytest

from kerascompress.errors import ConfigError
from kerascompress.targets import Kernel, Target


def _target(**kw) -> Target:
    base = dict(
        name="t",
        precisions={"fp32": Kernel.FAST, "fp16": Kernel.STORAGE, "int8": Kernel.FAST},
        sources={"precisions.int8": "a datasheet"},
    )
    base.update(kw)
    return Target(**base)


def test_kernel_and_supports_tell_fast_from_storage_only():
    t = _target()
    assert t.kernel("int8") is Kernel.FAST and t.supports("int8")
    assert t.kernel("fp16") is Kernel.STORAGE and not t.supports("fp16")
    assert t.kernel("fp8") is Kernel.NONE and not t.supports("fp8")  # unlisted = unsupported


def test_feature_questions():
    t = _target(sparse_2_4=True)
    assert t.supports("sparse_2_4") and not t.supports("clustered_weights")
    assert t.supports("float_fallback")
    assert not _target(full_integer_only=True).supports("float_fallback")


def test_unknown_precision_or_capability_is_a_config_error():
    with pytest.raises(ConfigError, match="fp12"):
        _target().kernel("fp12")
    with pytest.raises(ConfigError, match="warp_drive"):
        _target().supports("warp_drive")


def test_source_and_new_fields_default_empty():
    t = _target()
    assert t.source("precisions.int8") == "a datasheet"
    assert t.source("channel_multiple") == ""
    assert t.runtime_version == "" and t.notes == ()


def test_runs_here_only_for_this_hosts_litert_cpu():
    host = {"amd64": "x86_64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    assert _target(arch=host).runs_here()
    assert not _target(arch=host, runtime="tensorrt", device="gpu").runs_here()
    assert not _target(arch="armv7e-m", device="mcu").runs_here()


def test_to_dict_is_plain_data():
    d = _target(notes=("n",), runtime_version="<8.7").to_dict()
    assert d["precisions"] == {"fp32": "fast", "fp16": "storage-only", "int8": "fast"}
    assert d["runtime_version"] == "<8.7" and list(d["notes"]) == ["n"]
