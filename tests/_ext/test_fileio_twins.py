"""File I/O primitives: the compiled module behaves exactly like its pure-Python twin."""

from __future__ import annotations

import errno
import os
import select

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
