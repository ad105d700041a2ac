"""Hardware targets: the facts every pass asks before it runs.

``load("nvidia-t4-sm75")`` reads a shipped profile (configs/targets/*.yaml) or any YAML
path, ``detect()`` describes this host, and ``resolve(x)`` accepts whatever a user may
pass as ``target=`` ("auto", a name, a path, or a `Target`).
"""
from kerascompress.targets.detect import describe_host, detect
from kerascompress.targets.profiles import list_profiles, load, resolve, to_yaml
from kerascompress.targets.target import FEATURES, PRECISIONS, Kernel, Target

__all__ = [
    "FEATURES",
    "PRECISIONS",
    "Kernel",
    "Target",
    "describe_host",
    "detect",
    "list_profiles",
    "load",
    "resolve",
    "to_yaml",
]
