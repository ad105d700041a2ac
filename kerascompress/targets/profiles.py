"""Target profiles: YAML files of hardware facts, each fact with the source it comes from.

A profile is what a pass is gated on, so a wrong or unsourced fact silently buys the
user nothing (or breaks their deployment). The loader is therefore strict: every fact
needs a ``source:``, unknown keys and values are refused, and each error names the file
and the field so a user writing their own profile can fix it without reading this code.

Schema (see configs/targets/*.yaml)::

    name: x86-avx2
    description: free text
    runtime: {value: litert, source: ...}          # required
    device:  {value: cpu, source: ...}             # required
    arch:    {value: x86_64, source: ...}          # required
    precisions:                                    # required, at least one
      int8: {kernel: fast, source: ...}            # fast | storage-only | unsupported
    isa_features: {value: [avx2, fma], source: ...}
    channel_multiple: {value: 8, source: ...}
    ...                                            # any other `Target` field, same shape
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from kerascompress.errors import ConfigError
from kerascompress.paths import config_dir
from kerascompress.targets.detect import detect
from kerascompress.targets.target import PRECISIONS, Kernel, Target

#: Runtimes an exporter exists for; a profile naming another one could never be deployed.
RUNTIMES = ("litert", "tensorrt")
DEVICES = ("cpu", "gpu", "npu", "mcu")
#: Spellings accepted for each `Kernel` ("none" is accepted as a synonym of "unsupported").
KERNEL_NAMES = {"fast": Kernel.FAST, "storage-only": Kernel.STORAGE, "unsupported": Kernel.NONE, "none": Kernel.NONE}

PathLike = Union[str, "os.PathLike[str]"]


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_opt_pos_int(v: Any) -> bool:
    return v is None or _is_pos_int(v)


def _is_opt_cc(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 1.0 <= float(v) < 100.0)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_str(x) for x in v)


def _is_version(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        SpecifierSet(v)
    except InvalidSpecifier:
        return False
    return True


# field -> (check, what the value must be, converter to the Target attribute)
_FACTS: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    "runtime": (lambda v: v in RUNTIMES, f"one of {', '.join(RUNTIMES)}", str),
    "device": (lambda v: v in DEVICES, f"one of {', '.join(DEVICES)}", str),
    "arch": (_is_str, "a non-empty string such as x86_64, arm64, armv7e-m", str),
    "isa_features": (_is_str_list, "a list of strings", lambda v: tuple(str(x) for x in v)),
    "compute_capability": (_is_opt_cc, "a number such as 8.7, or null", lambda v: None if v is None else float(v)),
    "sparse_2_4": (_is_bool, "true or false", bool),
    "unstructured_sparsity": (_is_bool, "true or false", bool),
    "clustered_weights": (_is_bool, "true or false", bool),
    "full_integer_only": (_is_bool, "true or false", bool),
    "channel_multiple": (_is_pos_int, "a positive integer", int),
    "flash_bytes": (_is_opt_pos_int, "a positive integer (bytes) or null", lambda v: v),
    "ram_bytes": (_is_opt_pos_int, "a positive integer (bytes) or null", lambda v: v),
    "runtime_version": (_is_version, "a PEP 440 version specifier such as '<8.7' or '>=10.3,<11' ('' = any)", str),
    "notes": (_is_str_list, "a list of strings", lambda v: tuple(str(x) for x in v)),
}
_REQUIRED = ("runtime", "device", "arch")
_TOP_LEVEL = {"name", "description", "precisions", *_FACTS}


def targets_dir() -> Path:
    """The folder holding the shipped ``*.yaml`` profiles."""
    return config_dir() / "targets"


def list_profiles() -> list[str]:
    """Names of the shipped profiles (file stems), sorted."""
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def _looks_like_path(spec: PathLike) -> bool:
    if isinstance(spec, os.PathLike):
        return True
    return spec.endswith((".yaml", ".yml")) or "/" in spec or os.sep in spec


def load(name_or_path: PathLike) -> Target:
    """Load a shipped profile by name (``"nvidia-t4-sm75"``) or any profile file by path.

    Raises `ConfigError` for an unknown name (listing the known ones), a missing file, or
    a malformed profile (naming the file and the field).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a target profile is named by a string or a path, not {type(name_or_path).__name__}")
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"target profile file {str(path)!r} does not exist")
        return load_file(path)
    name = str(name_or_path)
    path = targets_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_profiles()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown target {name!r}.{hint} Known targets: {', '.join(known)}; or pass 'auto' to detect "
            "this host, or the path of your own YAML profile."
        )
    return load_file(path)


def load_file(path: PathLike) -> Target:
    """Parse and validate one profile file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read target profile {str(path)!r}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(data, origin=str(path))


def from_dict(data: Any, origin: str = "<dict>") -> Target:
    """Build a `Target` from a profile's parsed YAML, validating every field.

    ``origin`` (a file name) is put in front of every error message.
    """

    def fail(field: str, msg: str) -> ConfigError:
        return ConfigError(f"{origin}: field {field!r}: {msg}")

    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: a target profile must be a YAML mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _TOP_LEVEL)
    if unknown:
        raise fail(unknown[0], f"unknown field; known fields: {', '.join(sorted(_TOP_LEVEL))}")
    name = data.get("name")
    if not _is_str(name):
        raise fail("name", "missing or empty; every profile needs a name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be a string")

    kwargs: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in _REQUIRED:
        if field not in data:
            raise fail(field, "missing; it is required (give {value: ..., source: ...})")
    for field, (check, expected, convert) in _FACTS.items():
        if field not in data:
            continue
        fact = data[field]
        if not isinstance(fact, Mapping) or "value" not in fact:
            raise fail(field, "must be a mapping {value: ..., source: ...}")
        extra = sorted(set(map(str, fact)) - {"value", "source"})
        if extra:
            raise fail(field, f"unknown key {extra[0]!r}; a fact has only 'value' and 'source'")
        if not _is_str(fact.get("source")):
            raise fail(field, "has no source; every fact must say where it comes from (a datasheet, a doc URL, a measurement)")
        if not check(fact["value"]):
            raise fail(field, f"value {fact['value']!r} is not {expected}")
        kwargs[field] = convert(fact["value"])
        sources[field] = fact["source"].strip()

    precisions_raw = data.get("precisions")
    if not isinstance(precisions_raw, Mapping) or not precisions_raw:
        raise fail("precisions", "missing or empty; list at least one precision with {kernel: ..., source: ...}")
    precisions: dict[str, Kernel] = {}
    for prec, spec in precisions_raw.items():
        field = f"precisions.{prec}"
        if prec not in PRECISIONS:
            raise fail(field, f"unknown precision; known: {', '.join(PRECISIONS)}")
        if not isinstance(spec, Mapping):
            raise fail(field, "must be a mapping {kernel: ..., source: ...}")
        extra = sorted(set(map(str, spec)) - {"kernel", "source"})
        if extra:
            raise fail(field, f"unknown key {extra[0]!r}; a precision has only 'kernel' and 'source'")
        kernel = spec.get("kernel")
        if kernel not in KERNEL_NAMES:
            raise fail(f"{field}.kernel", f"{kernel!r} is not one of {', '.join(KERNEL_NAMES)}")
        if not _is_str(spec.get("source")):
            raise fail(f"{field}.source", "missing or empty; every fact must say where it comes from")
        precisions[prec] = KERNEL_NAMES[kernel]
        sources[field] = spec["source"].strip()

    if kwargs.get("device") == "gpu" and kwargs.get("compute_capability") is None and kwargs.get("runtime") == "tensorrt":
        raise fail("compute_capability", "missing; a TensorRT GPU target needs its CUDA compute capability")
    return Target(name=name.strip(), description=description.strip(), precisions=precisions, sources=sources, **kwargs)


def resolve(target: Union[str, "os.PathLike[str]", Target]) -> Target:
    """Turn what a user passes as ``target=`` into a `Target`.

    Accepts a `Target` (returned as is), ``"auto"`` (this host, see `detect`), a shipped
    profile name, or the path of a YAML profile.
    """
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and target.strip().lower() == "auto":
        return detect()
    if isinstance(target, (str, os.PathLike)):
        return load(target)
    raise ConfigError(
        f"target must be 'auto', a profile name ({', '.join(list_profiles())}), a YAML path or a "
        f"kerascompress Target, not {type(target).__name__}"
    )


def to_yaml(target: Target) -> str:
    """Write a `Target` as a profile the loader reads back (e.g. to edit a detected host).

    Facts without a recorded source get an explicit "not recorded" source, so the file
    loads but the gap stays visible.
    """
    missing = "not recorded (edit this profile and give the real source)"

    def fact(field: str, value: Any) -> dict[str, Any]:
        return {"value": value, "source": target.source(field) or missing}

    out: dict[str, Any] = {"name": target.name, "description": target.description}
    for field in ("runtime", "device", "arch"):
        out[field] = fact(field, getattr(target, field))
    out["precisions"] = {
        p: {"kernel": Kernel(k).value, "source": target.source(f"precisions.{p}") or missing}
        for p, k in target.precisions.items()
    }
    defaults = {f.name: f.default for f in dataclasses.fields(Target)}
    for field in _FACTS:
        if field in _REQUIRED:
            continue
        value = getattr(target, field)
        if not target.source(field) and value == defaults[field]:
            continue  # an unsourced default is no fact; leave it out rather than invent a source
        if isinstance(value, tuple):
            value = list(value)
        out[field] = fact(field, value)
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100)
