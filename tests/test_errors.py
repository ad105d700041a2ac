"""Errors: one base class to catch, one subclass per kind of mistake."""
from __future__ import annotations

import pytest

import kerascompress as kc
from kerascompress import errors

KINDS = (errors.UnsupportedModelError, errors.UnsupportedOnTarget, errors.DataError, errors.ConfigError,
         errors.ExportError)


@pytest.mark.parametrize("kind", KINDS)
def test_every_error_is_caught_by_the_base_class_and_keeps_its_message(kind):
    with pytest.raises(errors.KerasCompressError, match="what to do"):
        raise kind("what went wrong; what to do")


def test_the_kinds_are_distinct_and_exported_at_the_top():
    for a in KINDS:
        assert sum(issubclass(a, b) for b in KINDS) == 1  # only itself
        assert getattr(kc, a.__name__) is a
    assert kc.KerasCompressError is errors.KerasCompressError
    assert not issubclass(errors.KerasCompressError, (ValueError, RuntimeError))  # never caught by accident
