"""File I/O primitives: the compiled module behaves exactly like its pure-Python twin."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacs._ext import _fileio, fileio
from hpacs.store import fileio as selected

TWINS = [pytest.param(fileio, id="pure"), pytest.param(_fileio, id="compiled")]


def test_fileio_is_compiled():
    assert _fileio.__file__.endswith(".so")
    assert selected.COMPILED


def _open(path):
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 70_000), max_size=12), kinds=st.randoms())
def test_write_all_writes_every_buffer_in_order(tmp_path_factory, sizes, kinds):
    chunks = []
    for i, size in enumerate(sizes):
        data = bytes([i % 251]) * size
        chunks.append(kinds.choice([data, bytearray(data), memoryview(data)]))
    expected = b"".join(bytes(c) for c in chunks)
    for mod in (fileio, _fileio):
        path = tmp_path_factory.mktemp("w") / "f"
        fd = _open(path)
        try:
            assert mod.write_all(fd, chunks) == len(expected)
        finally:
            os.close(fd)
        assert path.read_bytes() == expected


@pytest.mark.parametrize("mod", TWINS)
def test_write_all_beyond_iov_max(tmp_path, mod):
    chunks = [bytes([i % 256]) * 3 for i in range(2500)]  # more than one writev may take
    fd = _open(tmp_path / "f")
    try:
        assert mod.write_all(fd, chunks) == 7500
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"".join(chunks)


@pytest.mark.parametrize("mod", TWINS)
def test_write_all_reports_the_errno(tmp_path, mod):
    fd = os.open(tmp_path / "r", os.O_RDONLY | os.O_CREAT, 0o644)  # not open for writing
    try:
        with pytest.raises(OSError) as info:
            mod.write_all(fd, [b"abc"])
        assert info.value.errno == errno.EBADF
    finally:
        os.close(fd)


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("mod", TWINS)
def test_finish_file_renames_and_closes(tmp_path, mod, sync):
    temp, final = tmp_path / "t.part", tmp_path / "d" / "f.dcm"
    final.parent.mkdir()
    fd = _open(temp)
    mod.write_all(fd, [b"hello"])
    mod.start_writeback(fd, 0, 5)
    mod.finish_file(fd, temp, final, final.parent, sync)
    assert final.read_bytes() == b"hello"
    assert not temp.exists()
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize("mod", TWINS)
def test_finish_file_missing_directory_then_retry_without_fd(tmp_path, mod):
    temp, final = tmp_path / "t.part", tmp_path / "missing" / "f.dcm"
    fd = _open(temp)
    mod.write_all(fd, [b"x" * 10])
    with pytest.raises(FileNotFoundError):
        mod.finish_file(fd, temp, final, final.parent, True)
    with pytest.raises(OSError) as info:
        os.fstat(fd)  # closed even though the rename failed
    assert info.value.errno == errno.EBADF
    assert temp.exists()
    final.parent.mkdir()
    mod.finish_file(-1, temp, final, final.parent, True)
    assert final.read_bytes() == b"x" * 10


@pytest.mark.parametrize("mod", TWINS)
def test_start_writeback_never_raises(mod):
    mod.start_writeback(-1, 0, 10)  # a bad descriptor only loses the head start
