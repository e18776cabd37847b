"""The per-file sink: fragments written in order (inline by the loop or by a thread when large; or
every one by the C commit threads' writer), commit, discard, and failures that fail the instance
instead of hanging it. Every test runs with the executor path and with the C commit threads
(store/commits.py: writes and commit there)."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from hpacs.store import sink as sink_module
from hpacs.store.commits import Commits
from hpacs.store.hot import HotStore
from hpacs.store.sink import INLINE_MAX, FileSink


@pytest.fixture
def io():
    with ThreadPoolExecutor(4) as executor:
        yield executor


@pytest.fixture(params=["executor", "commit-threads"])
def make_sink(request, io):
    made: list[Commits] = []

    def make(hot: HotStore) -> FileSink:
        commits = None
        if request.param == "commit-threads":
            commits = Commits(hot, io, threads=2)
            made.append(commits)
        return FileSink(hot, io, commits)

    def settle() -> None:
        """Let every queued job run (a discard on the commit threads is not awaited)."""
        io.shutdown(wait=True)
        for commits in made:
            commits.close()

    make.kind = request.param
    make.settle = settle
    yield make
    for commits in made:
        commits.close()


async def test_fragments_land_in_order_and_commit_renames(tmp_path, io, make_sink):
    hot = HotStore(tmp_path)
    sink = make_sink(hot)
    parts = [bytes([i]) * (1000 + i * 37_000) for i in range(20)]
    for part in parts:
        sink.write(memoryview(part))
    if make_sink.kind == "executor":
        assert sink.queued_bytes == 0  # all small: written by the caller, nothing queued
    await sink.commit("hot/aa/bb/s/se/1.2.dcm")
    assert sink.queued_bytes == 0
    assert (tmp_path / "hot/aa/bb/s/se/1.2.dcm").read_bytes() == b"".join(parts)
    assert list(hot.tmp.iterdir()) == []


async def test_large_fragments_go_to_a_thread_and_order_holds(tmp_path, io, make_sink):
    hot = HotStore(tmp_path)
    sink = make_sink(hot)
    parts = [b"a" * 1000, b"b" * (INLINE_MAX + 1), b"c" * 5000, b"d" * 7, b"e" * (INLINE_MAX * 2)]
    for part in parts:
        sink.write(part)
    await sink.commit("hot/aa/bb/s/se/2.dcm")
    assert (tmp_path / "hot/aa/bb/s/se/2.dcm").read_bytes() == b"".join(parts)
    assert sink.queued_bytes == 0


async def test_commit_recreates_a_directory_removed_meanwhile(tmp_path, io, make_sink):
    hot = HotStore(tmp_path)
    for n in range(2):
        sink = make_sink(hot)
        sink.write(b"z" * 10)
        await sink.commit(f"hot/aa/bb/s/se/{n}.dcm")
        if n == 0:  # e.g. emptied by a migration
            os.remove(tmp_path / "hot/aa/bb/s/se/0.dcm")
            os.rmdir(tmp_path / "hot/aa/bb/s/se")
    assert (tmp_path / "hot/aa/bb/s/se/1.dcm").read_bytes() == b"z" * 10


@pytest.mark.parametrize("size", [200_000, INLINE_MAX + 1])
async def test_discard_leaves_nothing(tmp_path, io, make_sink, size):
    hot = HotStore(tmp_path)
    sink = make_sink(hot)
    sink.write(b"x" * size)
    sink.discard()
    sink.write(b"y" * 10)  # ignored once discarded
    make_sink.settle()
    assert list(hot.tmp.iterdir()) == []
    assert not list((tmp_path / "hot").rglob("*.dcm"))


@pytest.mark.parametrize("size", [100_000, INLINE_MAX + 1])
async def test_a_write_error_fails_the_commit(tmp_path, io, make_sink, monkeypatch, size):
    def full(fd, views):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink_module, "write_all", full)
    hot = HotStore(tmp_path)
    expected = errno.ENOSPC
    if make_sink.kind == "commit-threads":
        # the C writer creates the temp file: one it cannot create fails the commit like a
        # failed write (which tests/_ext/test_fileio_twins.py covers with a read-only fd)
        missing = str(tmp_path / "no-such-dir" / "t.part")
        monkeypatch.setattr(hot, "temp_name", lambda: missing)
        expected = errno.ENOENT
    sink = make_sink(hot)
    sink.write(b"x" * size)
    sink.write(b"y" * 1000)  # skipped after the failure
    with pytest.raises(OSError) as info:
        await sink.commit("hot/aa/bb/s/se/1.dcm")
    assert info.value.errno == expected
    assert list(hot.tmp.iterdir()) == []
    assert not (tmp_path / "hot/aa/bb/s/se/1.dcm").exists()


async def test_an_unexpected_worker_error_fails_instead_of_hanging(tmp_path, io, monkeypatch):
    def broken(fd, views):
        raise RuntimeError("bug")

    monkeypatch.setattr(sink_module, "write_all", broken)
    hot = HotStore(tmp_path)
    sink = FileSink(hot, io)  # the executor's worker (the C writer runs no Python)
    sink.write(b"x" * (INLINE_MAX + 1))  # large: written by the worker, which fails
    with pytest.raises(OSError, match="I/O worker failed"):
        await sink.commit("hot/aa/bb/s/se/1.dcm")
    assert list(hot.tmp.iterdir()) == []
