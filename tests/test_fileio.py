"""Atomic writes: the file appears whole or not at all."""
import pytest

from kerascompress.fileio import write_atomic


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "model.bin"
    assert write_atomic(path, b"abc") == path
    write_atomic(path, b"defg")
    assert path.read_bytes() == b"defg"
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]
