"""TensorRT releases: the GPU floor per release line and the version a profile's kit targets."""
from __future__ import annotations

import pytest

from kerascompress.errors import ConfigError
from kerascompress.targets.tensorrt_releases import (
    RELEASE_LINES,
    newest_line_for,
    pick_version,
    release_line,
    version_specifier_for,
)


@pytest.mark.parametrize(
    "version, floor, strongly_typed",
    [("8.5.3", 3.0, False), ("8.6.1", 6.0, False), ("10.0.1", 7.0, True), ("10.4.0", 7.0, True),
     ("10.5.0", 7.5, True), ("10.16.0", 7.5, True), ("11.4.1", 7.5, True)],
)
def test_gpu_floor_and_typing_per_release(version, floor, strongly_typed):
    line = release_line(version)
    assert line.min_compute_capability == floor and line.strongly_typed is strongly_typed
    assert "https://" in line.source


def test_unknown_releases_have_no_line_and_only_11x_is_unverified():
    assert release_line("9.2.0") is None and release_line("12.0") is None
    assert [line.first for line in RELEASE_LINES if not line.verified] == ["11.0"]


@pytest.mark.parametrize(
    "spec, installed, expected",
    [("<8.7", None, "8.6.1"), ("", None, "11.5.0"), ("<10.5", None, "10.4.0"), (">=10.3,<11", None, "10.16.0"),
     ("", "10.8.0", "10.8.0"), ("<8.7", "10.8.0", "8.6.1"), (">=11.4.1", None, "11.5.0")],
)
def test_the_kit_targets_the_installed_release_if_allowed_else_the_newest_allowed(spec, installed, expected):
    assert pick_version(spec, installed=installed) == expected


def test_a_specifier_that_allows_nothing_or_is_malformed_is_a_config_error():
    with pytest.raises(ConfigError, match="allows no TensorRT release"):
        pick_version("<8")
    with pytest.raises(ConfigError, match="not a version specifier"):
        pick_version("TensorRT 8")


@pytest.mark.parametrize("cc, spec", [(5.0, "<8.6"), (6.1, "<8.7"), (7.0, "<10.5"), (7.2, "<10.5"), (7.5, ""), (9.0, "")])
def test_the_runtime_version_of_a_gpu_follows_the_floors(cc, spec):
    assert version_specifier_for(cc) == spec


def test_no_release_supports_a_gpu_below_every_floor():
    assert newest_line_for(2.1) is None and version_specifier_for(2.1) == "<8.5"
    with pytest.raises(ConfigError):
        pick_version(version_specifier_for(2.1))
