"""TensorRT releases: the oldest GPU each supports and how it is told the precision.

A TensorRT target's profile names the releases that can deploy to it
(``runtime_version``, a PEP 440 specifier such as ``<8.7``); the build kit kerascompress
writes must then suit that release: TensorRT 8.x builds weakly typed networks and needs
builder precision flags (``--int8``, ``--fp16``) for a Q/DQ or FP16 ONNX, 10.x takes
``--stronglyTyped``, 11.x is always strongly typed. Every row cites NVIDIA's release
notes or support matrix; the 11.x GPU floor is the one fact not found in a matrix.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from kerascompress.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ReleaseLine:
    """Consecutive TensorRT releases that share a GPU floor and a typing model."""

    first: str  # first version of the line, e.g. "10.5"
    last: str  # last known version of the line, e.g. "10.16"
    min_compute_capability: float
    strongly_typed: bool  # the ONNX's types are the engine's (no precision flags)
    #: Precisions the builder can be asked for (weakly typed: by flag; strongly typed: from the ONNX).
    precisions: frozenset[str]
    source: str
    verified: bool = True

    def contains(self, version: Version) -> bool:
        return Version(self.first) <= version <= Version(self.last + ".999")


_BASE = frozenset({"fp32", "fp16", "int8"})

#: Known release lines, oldest first.
RELEASE_LINES: tuple[ReleaseLine, ...] = (
    ReleaseLine(
        "8.5", "8.5.3", 3.0, False, _BASE,
        "TensorRT 8.5.2 Release Notes, Announcements: 'TensorRT 8.5 will be the last release supporting NVIDIA Kepler "
        "(SM 3.x) devices' (https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-852/release-notes/tensorrt-8.html)",
    ),
    ReleaseLine(
        "8.6", "8.6.1", 6.0, False, _BASE | {"fp8"},
        "TensorRT 8.6.0 EA Release Notes, Announcements: 'TensorRT 8.5.3 was the last release supporting NVIDIA Kepler "
        "(SM 3.x) and NVIDIA Maxwell (SM 5.x) devices ... NVIDIA Pascal (SM 6.x) devices are deprecated in TensorRT 8.6' "
        "(https://docs.nvidia.com/deeplearning/tensorrt/release-notes/index.html#rel-8-6-0-EA, quoted by NVIDIA in "
        "https://github.com/NVIDIA/TensorRT/issues/3589); trtexec 8.6 has --fp8 but no --bf16 (trtexec options at tag "
        "v8.6.1, https://github.com/NVIDIA/TensorRT/blob/v8.6.1/samples/common/sampleOptions.cpp)",
    ),
    ReleaseLine(
        "10.0", "10.4", 7.0, True, _BASE | {"bf16", "fp8", "int4"},
        "NVIDIA TensorRT 10.1.0 Support Matrix, section 2 Hardware and Precision: 'TensorRT has been compiled to support "
        "all NVIDIA hardware with capability SM 7.0 or higher' "
        "(https://docs.nvidia.com/deeplearning/tensorrt/archives/tensorrt-1010/support-matrix/index.html); Pascal fails "
        "on 10.0.1 with 'Unsupported SM: 0x601' (https://github.com/NVIDIA/TensorRT/issues/3826)",
    ),
    ReleaseLine(
        "10.5", "10.16", 7.5, True, _BASE | {"bf16", "fp8", "int4"},
        "TensorRT 10.5.0 Release Notes, Announcements: 'Volta support (GPUs with compute capability 7.0) has been removed "
        "starting with TensorRT 10.5' "
        "(https://docs.nvidia.com/deeplearning/tensorrt/latest/getting-started/release-notes-10/10.5.0.html)",
    ),
    ReleaseLine(
        "11.0", "11.5", 7.5, True, _BASE | {"bf16", "fp8", "int4"},
        "TensorRT 11.0.0 Release Notes, Announcements: 'Strongly typed networks are now the default ... Weak typing is no "
        "longer supported' (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/getting-started/release-notes-11/11.0.0.html); "
        "GPU floor carried over from 10.5 (compute capability 7.5): the 11.x support matrix is an interactive explorer "
        "(https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/getting-started/support-matrix.html) whose table we could "
        "not read, so this floor is unverified",
        verified=False,
    ),
)

#: Known versions, the last of each minor release, for picking the newest a specifier allows.
KNOWN_VERSIONS: tuple[str, ...] = (
    "8.5.3", "8.6.1", "10.0.1",
    *(f"10.{m}.0" for m in range(1, 17)),
    "11.0.0", "11.1.0", "11.2.1", "11.3.0", "11.4.1", "11.5.0",
)


def release_line(version: str | Version) -> Optional[ReleaseLine]:
    """The line ``version`` belongs to, None for versions we know nothing about (9.x, 12+)."""
    v = Version(str(version))
    return next((line for line in RELEASE_LINES if line.contains(v)), None)


def specifier(spec: str) -> SpecifierSet:
    """A profile's ``runtime_version`` as a `SpecifierSet` ('' = any release)."""
    try:
        return SpecifierSet(spec or "")
    except InvalidSpecifier as err:
        raise ConfigError(
            f"runtime_version {spec!r} is not a version specifier; write e.g. '<8.7' or '>=10.3,<11' (PEP 440)"
        ) from err


def pick_version(spec: str, installed: Optional[str] = None, known: Iterable[str] = KNOWN_VERSIONS) -> str:
    """The TensorRT version a build kit for a profile with ``runtime_version=spec`` targets.

    The installed ``tensorrt`` when the profile allows it (an engine may be built here),
    else the newest known release the profile allows. Raises `ConfigError` when the
    specifier allows none we know.
    """
    allowed = specifier(spec)
    if installed and Version(installed) in allowed and release_line(installed) is not None:
        return installed
    matches = sorted((Version(v) for v in known if Version(v) in allowed), reverse=True)
    if not matches:
        raise ConfigError(
            f"runtime_version {spec!r} allows no TensorRT release kerascompress knows ({', '.join(KNOWN_VERSIONS)})"
        )
    return str(matches[0])


def newest_line_for(compute_capability: float) -> Optional[ReleaseLine]:
    """The newest release line that still supports a GPU of ``compute_capability``."""
    lines = [line for line in RELEASE_LINES if compute_capability >= line.min_compute_capability]
    return lines[-1] if lines else None


def version_specifier_for(compute_capability: float) -> str:
    """The ``runtime_version`` of a GPU: '' when the newest line supports it, else '<first release that dropped it>'
    (for a GPU older than every known line, '<' the oldest one: no known release)."""
    newest = newest_line_for(compute_capability)
    if newest is None:
        return f"<{RELEASE_LINES[0].first}"  # older than every release we know: none of them
    if newest is RELEASE_LINES[-1]:
        return ""
    dropped = RELEASE_LINES[RELEASE_LINES.index(newest) + 1]
    return f"<{_next_minor(newest.last)}" if Version(dropped.first).major != Version(newest.last).major else f"<{dropped.first}"


def _next_minor(version: str) -> str:
    v = Version(version)
    return f"{v.major}.{v.minor + 1}"
