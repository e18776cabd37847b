"""File I/O primitives: the compiled module behaves exactly like its pure-Python twin."""

from __future__ import annotations

import errno
import os
import select
import time

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


# -- Committer: finish_file jobs on threads, completions through an eventfd -------------------

def _job(root, token, kind):
    """One commit job of ``kind``; returns the submit arguments and the file it should make."""
    temp = root / f"t{token}.part"
    fd = _open(temp)
    os.write(fd, bytes([token % 256]) * (token + 1))
    final_dir = root / ("missing" if kind == "missing-dir" else "d")
    if kind == "bad-fd":  # fdatasync of a pipe fails (EINVAL): the error names the temp file
        os.close(fd)
        r, fd = os.pipe()
        os.close(r)
    return (token, fd, str(temp), str(final_dir / f"f{token}.dcm"), str(final_dir),
            kind != "no-sync")


def _wait_all(committer, count, timeout=10.0):
    done = []
    while len(done) < count:
        ready, _, _ = select.select([committer.fileno()], [], [], timeout)
        assert ready, "no completion signalled"
        done += committer.drain()
    return done


def _outcomes(done):
    return {token: None if err is None else (type(err), err.errno) for token, err in done}


@settings(max_examples=15, deadline=None)
@given(kinds=st.lists(st.sampled_from(["ok", "no-sync", "missing-dir", "bad-fd"]),
                      min_size=1, max_size=24), threads=st.integers(1, 4))
def test_committer_twins_agree(tmp_path_factory, kinds, threads):
    results = []
    for mod in (fileio, _fileio):
        root = tmp_path_factory.mktemp("c")
        (root / "d").mkdir()
        committer = mod.Committer(threads)
        try:
            for token, kind in enumerate(kinds):
                committer.submit(*_job(root, token, kind))
            done = _wait_all(committer, len(kinds))
        finally:
            assert committer.close() == []
        assert sorted(t for t, _ in done) == list(range(len(kinds)))
        files = {p.name: p.read_bytes() for p in sorted((root / "d").iterdir())}
        temps = sorted(p.name for p in root.glob("*.part"))
        results.append((_outcomes(done), files, temps))
    assert results[0] == results[1]
    outcomes, files, temps = results[1]
    for token, kind in enumerate(kinds):
        if kind in ("ok", "no-sync"):
            assert outcomes[token] is None
            assert files[f"f{token}.dcm"] == bytes([token % 256]) * (token + 1)
        elif kind == "missing-dir":
            assert outcomes[token] == (FileNotFoundError, errno.ENOENT)
            assert f"t{token}.part" in temps  # left for the caller to retry or remove
        else:
            assert outcomes[token] == (OSError, errno.EINVAL)


@pytest.mark.parametrize("mod", TWINS)
def test_committer_errors_name_the_file_like_finish_file(tmp_path, mod):
    (tmp_path / "d").mkdir()
    committer = mod.Committer(1)
    try:
        committer.submit(*_job(tmp_path, 0, "bad-fd"))
        committer.submit(*_job(tmp_path, 1, "missing-dir"))
        done = dict(_wait_all(committer, 2))
    finally:
        committer.close()
    assert done[0].filename == str(tmp_path / "t0.part")
    assert str(tmp_path / "missing") in str(done[1].filename)


@pytest.mark.parametrize("mod", TWINS)
def test_committer_signals_once_per_batch_and_close_finishes_the_queue(tmp_path, mod):
    (tmp_path / "d").mkdir()
    committer = mod.Committer(2)
    for token in range(40):
        committer.submit(*_job(tmp_path, token, "no-sync"))
    done = committer.close()  # every queued job runs before the threads stop
    assert sorted(t for t, _ in done) == list(range(40))
    assert all(err is None for _, err in done)
    assert len(list((tmp_path / "d").iterdir())) == 40
    assert committer.close() == []
    with pytest.raises(RuntimeError):
        committer.submit(*_job(tmp_path, 99, "ok"))


@pytest.mark.parametrize("mod", TWINS)
def test_committer_eventfd_is_quiet_until_a_job_completes(tmp_path, mod):
    (tmp_path / "d").mkdir()
    committer = mod.Committer(1)
    try:
        assert select.select([committer.fileno()], [], [], 0.05)[0] == []
        assert committer.drain() == []
        committer.submit(*_job(tmp_path, 0, "ok"))
        assert _wait_all(committer, 1) == [(0, None)]
        assert select.select([committer.fileno()], [], [], 0.05)[0] == []  # drained: quiet
    finally:
        committer.close()


@pytest.mark.parametrize("mod", TWINS)
def test_committer_writeback_works_on_a_copy_of_the_fd(tmp_path, mod):
    (tmp_path / "d").mkdir()
    open_fds = len(os.listdir("/proc/self/fd"))
    committer = mod.Committer(2)
    token, fd, temp, final, directory, sync = _job(tmp_path, 7, "ok")
    for _ in range(20):
        committer.writeback(fd, 0, 8)
    committer.writeback(-1, 0, 10)  # a bad descriptor only loses the head start
    committer.submit(token, fd, temp, final, directory, sync)  # may close fd before they run
    assert committer.close() == [(7, None)]
    with open(final, "rb") as f:
        assert f.read() == bytes([7]) * 8
    assert len(os.listdir("/proc/self/fd")) == open_fds  # every duplicate closed


# -- Stream: a file's writes on the commit threads, then its commit or discard ---------------

def _stream_file(committer, root, token, kind, pieces):
    """Write ``pieces`` (lists of chunk sizes, one write job each) to a temp file through a
    stream, then commit or discard it as ``kind`` says; returns the expected content."""
    temp = root / f"s{token}.part"
    if kind.startswith("at"):  # created by the first write job (in a missing directory: fails)
        if kind == "at-missing":
            temp = root / "missing" / f"s{token}.part"
        stream = committer.stream_at(str(temp))
    else:
        if kind == "bad-fd":  # a read-only fd: every write of some bytes fails (EBADF)
            temp.touch()
            fd = os.open(temp, os.O_RDONLY)
        else:
            fd = _open(temp)
        stream = committer.stream(fd)
    expected = bytearray()
    for n, sizes in enumerate(pieces):
        chunks = [bytes([(token + n + i) % 256]) * size for i, size in enumerate(sizes)]
        data = b"".join(chunks)
        # bytes, a memoryview and a bytearray slice view all work; writeback of what is new
        views = [memoryview(c) if i % 2 else c for i, c in enumerate(chunks)]
        assert stream.write(views, len(expected), len(expected), len(data)) == len(data)
        expected += data
    if token % 2:
        stream.presync()  # the commit (or discard) waits for it
    if kind == "discard":
        stream.discard(str(temp))
    else:
        stream.commit(token, str(temp), str(root / "d" / f"f{token}.dcm"), str(root / "d"),
                      True)
    with pytest.raises(RuntimeError):
        stream.write([b"x"], 0)  # spent
    return bytes(expected)


@settings(max_examples=15, deadline=None)
@given(files=st.lists(st.tuples(
    st.sampled_from(["ok", "discard", "bad-fd", "at", "at-missing"]),
    st.lists(st.lists(st.integers(0, 90_000), max_size=4), max_size=5)),
    min_size=1, max_size=8), threads=st.integers(1, 4))
def test_stream_twins_agree(tmp_path_factory, files, threads):
    results = []
    for mod in (fileio, _fileio):
        root = tmp_path_factory.mktemp("s")
        (root / "d").mkdir()
        committer = mod.Committer(threads)
        expected = {}
        try:
            for token, (kind, pieces) in enumerate(files):
                expected[token] = _stream_file(committer, root, token, kind, pieces)
            reported = sum(kind != "discard" for kind, _ in files)
            done = _wait_all(committer, reported)
        finally:
            assert committer.close() == []
        assert committer.pending_bytes == 0
        written = {p.name: p.read_bytes() for p in sorted((root / "d").iterdir())}
        temps = sorted(p.name for p in root.glob("*.part"))
        results.append((_outcomes(done), written, temps))
        for token, (kind, pieces) in enumerate(files):
            created = kind == "ok" or (kind == "at" and pieces)  # "at": by a write job
            if created or (kind == "bad-fd" and not expected[token]):
                assert dict(done)[token] is None
                assert written[f"f{token}.dcm"] == expected[token]
            elif kind == "bad-fd":  # nothing renamed; the temp file left for the caller
                assert dict(done)[token].errno == errno.EBADF
                assert dict(done)[token].filename == str(root / f"s{token}.part")
                assert f"s{token}.part" in temps
            elif kind.startswith("at"):  # not created (no write, or no directory): ENOENT
                assert dict(done)[token].errno == errno.ENOENT
            else:
                assert token not in dict(done) and f"s{token}.part" not in temps
    assert results[0] == results[1]


@pytest.mark.parametrize("mod", TWINS)
def test_stream_holds_buffers_until_drained_and_commit_waits_for_writes(tmp_path, mod):
    (tmp_path / "d").mkdir()
    open_fds = len(os.listdir("/proc/self/fd"))
    committer = mod.Committer(3)
    buf = bytearray(b"abcd" * 300_000)
    baseline = None
    try:
        streams = []
        for token in range(6):
            fd = _open(tmp_path / f"t{token}.part")
            stream = committer.stream(fd)
            for k in range(4):  # out of order offsets: each write lands where it says
                stream.write([memoryview(buf)[k * 300_000:(k + 1) * 300_000]],
                             (3 - k) * 300_000)
            streams.append(stream)
        for token, stream in enumerate(streams):
            stream.commit(token, str(tmp_path / f"t{token}.part"),
                          str(tmp_path / "d" / f"f{token}.dcm"), str(tmp_path / "d"), False)
        done = _wait_all(committer, 6)
        assert sorted(done) == [(t, None) for t in range(6)]
        baseline = committer.pending_bytes
    finally:
        committer.close()
    assert baseline == 0
    # every view was released: the bytearray can be resized again
    buf.extend(b"x")
    want = b"".join(bytes(buf[k * 300_000:(k + 1) * 300_000]) for k in (3, 2, 1, 0))
    for token in range(6):
        assert (tmp_path / "d" / f"f{token}.dcm").read_bytes() == want
    assert len(os.listdir("/proc/self/fd")) == open_fds
    with pytest.raises(RuntimeError):
        committer.stream(0)


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("end", ["commit", "discard", "bad-fd"])
def test_stream_presync_runs_between_the_writes_and_the_end(tmp_path, mod, end):
    (tmp_path / "d").mkdir()
    open_fds = len(os.listdir("/proc/self/fd"))
    committer = mod.Committer(2)
    temp = tmp_path / "t.part"
    if end == "bad-fd":
        temp.touch()
        fd = os.open(temp, os.O_RDONLY)
    else:
        fd = _open(temp)
    stream = committer.stream(fd)
    for k in range(8):
        stream.write([bytes([k]) * 200_000], k * 200_000)
    stream.presync()
    stream.presync()  # twice: harmless
    if end == "discard":
        stream.discard(str(temp))
    else:
        stream.commit(3, str(temp), str(tmp_path / "d" / "f.dcm"), str(tmp_path / "d"), True)
    done = committer.close()  # runs everything queued or deferred, in order
    assert committer.pending_bytes == 0
    assert len(os.listdir("/proc/self/fd")) == open_fds
    if end == "commit":
        assert done == [(3, None)]
        assert (tmp_path / "d" / "f.dcm").read_bytes() == b"".join(
            bytes([k]) * 200_000 for k in range(8))
    elif end == "discard":
        assert done == [] and not temp.exists()
    else:
        assert [(t, e.errno) for t, e in done] == [(3, errno.EBADF)]
        assert temp.exists() and not (tmp_path / "d" / "f.dcm").exists()


def test_stream_wakes_the_loop_when_written_buffers_pile_up(tmp_path):
    """The compiled writer holds written buffers until a drain (the twin drops them at once):
    past 16 MiB of them it wakes the loop itself, so a huge data set is not kept in memory
    until its commit."""
    committer = _fileio.Committer(1)
    buf = bytearray(1 << 20)
    try:
        stream = committer.stream(_open(tmp_path / "big.part"))
        for k in range(20):
            stream.write([memoryview(buf)], k << 20)
        ready, _, _ = select.select([committer.fileno()], [], [], 10.0)
        assert ready, "no wake-up for the held buffers"
        deadline = time.monotonic() + 10
        while committer.pending_bytes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert committer.drain() == []  # write completions are not reported
        buf.extend(b"x")  # every view released: the bytearray can be resized again
        stream.discard(str(tmp_path / "big.part"))
    finally:
        committer.close()
    assert not (tmp_path / "big.part").exists()


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("on", [True, False])
def test_stream_trace_stamps_each_commit_in_chain_order(tmp_path, mod, on):
    """Traced, every stream commit that ran its steps gets one (token, written, presynced,
    taken, synced, renamed) of monotonic stamps in that order; off, nothing is recorded."""
    (tmp_path / "d").mkdir()
    committer = mod.Committer(2)
    committer.trace = on
    before = time.monotonic()
    try:
        for token in range(4):
            stream = committer.stream_at(str(tmp_path / f"t{token}.part"))
            stream.write([b"x" * 100_000], 0)
            stream.write([b"y" * 100_000], 100_000)
            if token % 2:
                stream.presync()
            stream.commit(token, str(tmp_path / f"t{token}.part"),
                          str(tmp_path / "d" / f"f{token}.dcm"), str(tmp_path / "d"), True)
        discarded = committer.stream_at(str(tmp_path / "gone.part"))
        discarded.write([b"z"], 0)
        discarded.discard(str(tmp_path / "gone.part"))
        done = _wait_all(committer, 4)
    finally:
        done += committer.close()
    assert sorted(done) == [(t, None) for t in range(4)]
    traces = sorted(committer.traces)
    if not on:
        assert traces == []
        return
    assert [t[0] for t in traces] == [0, 1, 2, 3]
    after = time.monotonic()
    for token, written, presynced, taken, synced, renamed in traces:
        assert before <= written <= taken <= synced <= renamed <= after
        if token % 2:
            assert written <= presynced <= taken
        else:
            assert presynced == 0.0


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("streams", [1, 3])
def test_stream_commit_runs_after_its_presync_on_the_same_thread(tmp_path, mod, streams):
    """The commit thread that ends a file's early fdatasync runs the commit released by it
    (no other thread woken): files, outcomes and the order of steps stay the same."""
    (tmp_path / "d").mkdir()
    committer = mod.Committer(2)
    committer.trace = True
    done = []
    try:
        for round_ in range(3):
            live = []
            for k in range(streams):
                token = round_ * streams + k
                stream = committer.stream_at(str(tmp_path / f"t{token}.part"))
                stream.write([bytes([token]) * 150_000], 0)
                stream.write([bytes([token]) * 150_000], 150_000)
                stream.presync()
                live.append((token, stream))
            for token, stream in live:
                stream.commit(token, str(tmp_path / f"t{token}.part"),
                              str(tmp_path / "d" / f"f{token}.dcm"), str(tmp_path / "d"), True)
            done += _wait_all(committer, streams)
    finally:
        done += committer.close()
    assert sorted(done) == [(t, None) for t in range(3 * streams)]
    for token in range(3 * streams):
        assert (tmp_path / "d" / f"f{token}.dcm").read_bytes() == bytes([token]) * 300_000
    assert list(tmp_path.glob("*.part")) == []
    for _token, written, presynced, taken, synced, renamed in committer.traces:
        assert 0 < written <= presynced <= taken <= synced <= renamed


@pytest.mark.parametrize("mod", TWINS)
def test_resident_follows_the_page_cache(tmp_path, mod):
    """Both say whether every page of the first ``size`` bytes is cached, the compiled one
    also past its on-stack vector (files over 4 MiB)."""
    for size in (1, 4096, 526_000, (6 << 20) + 17):
        path = tmp_path / f"f{size}.bin"
        path.write_bytes(os.urandom(size))
        fd = os.open(path, os.O_RDONLY)
        try:
            assert mod.MINCORE
            assert mod.resident(fd, size)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
            assert mod.resident(fd, size) is False
            os.pread(fd, size // 2, 0)  # the first half (and read-ahead) back
            if size // 2:
                assert mod.resident(fd, size // 2)
            os.pread(fd, size, 0)
            assert mod.resident(fd, size)
            assert mod.resident(fd, 0) is False
        finally:
            os.close(fd)
