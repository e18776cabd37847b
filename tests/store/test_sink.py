"""The per-file I/O sink: ordered writes off the loop, commit, discard, and failures that
fail the instance instead of hanging it."""

from __future__ import annotations

import errno
from concurrent.futures import ThreadPoolExecutor

import pytest

from hpacs.store import sink as sink_module
from hpacs.store.hot import HotStore
from hpacs.store.sink import FileSink


@pytest.fixture
def io():
    with ThreadPoolExecutor(4) as executor:
        yield executor


async def test_fragments_land_in_order_and_commit_renames(tmp_path, io):
    hot = HotStore(tmp_path)
    sink = FileSink(hot, io)
    parts = [bytes([i]) * (1000 + i * 37_000) for i in range(20)]
    for part in parts:
        sink.write(memoryview(part))
    await sink.commit("hot/aa/bb/s/se/1.2.dcm")
    assert (tmp_path / "hot/aa/bb/s/se/1.2.dcm").read_bytes() == b"".join(parts)
    assert list(hot.tmp.iterdir()) == []


async def test_discard_leaves_nothing(tmp_path, io):
    hot = HotStore(tmp_path)
    sink = FileSink(hot, io)
    sink.write(b"x" * 200_000)
    sink.discard()
    io.shutdown(wait=True)
    assert list(hot.tmp.iterdir()) == []
    assert not list((tmp_path / "hot").rglob("*.dcm"))


async def test_a_write_error_fails_the_commit(tmp_path, io, monkeypatch):
    def full(fd, views):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink_module.os, "writev", full)
    hot = HotStore(tmp_path)
    sink = FileSink(hot, io)
    sink.write(b"x" * 100_000)
    with pytest.raises(OSError) as info:
        await sink.commit("hot/aa/bb/s/se/1.dcm")
    assert info.value.errno == errno.ENOSPC
    assert list(hot.tmp.iterdir()) == []


async def test_an_unexpected_worker_error_fails_instead_of_hanging(tmp_path, io, monkeypatch):
    def broken(fd, views):
        raise RuntimeError("bug")

    monkeypatch.setattr(sink_module.os, "writev", broken)
    hot = HotStore(tmp_path)
    sink = FileSink(hot, io)
    sink.write(b"x" * 100_000)
    with pytest.raises(OSError, match="I/O worker failed"):
        await sink.commit("hot/aa/bb/s/se/1.dcm")
    assert list(hot.tmp.iterdir()) == []
