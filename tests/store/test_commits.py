"""Commits through the C commit threads, answered on the loop: durable renames, directories
created when missing, failures that remove the temp file, and close() answering what is queued."""

from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from hpacs.store.commits import Commits
from hpacs.store.hot import HotStore


@pytest.fixture
def hot(tmp_path):
    return HotStore(tmp_path)


@pytest.fixture
def commits(hot):
    with ThreadPoolExecutor(2) as io:
        commits = Commits(hot, io, threads=3)
        yield commits
        commits.close()


def _temp(hot: HotStore, data: bytes) -> tuple[int, str]:
    fd, temp = hot.open_temp()
    os.write(fd, data)
    return fd, temp


async def test_many_commits_land_and_resolve(hot, commits):
    futures = []
    for n in range(50):  # two series: the first of each creates its directories
        fd, temp = _temp(hot, b"%d" % n)
        futures.append(commits.commit(fd, temp, f"hot/aa/bb/st/se{n % 2}/{n}.dcm"))
    await asyncio.gather(*futures)
    for n in range(50):
        assert (hot.data_dir / f"hot/aa/bb/st/se{n % 2}/{n}.dcm").read_bytes() == b"%d" % n
    assert list(hot.tmp.iterdir()) == []


async def test_a_failed_commit_fails_its_future_and_removes_the_temp_file(hot, commits):
    _, temp = _temp(hot, b"x")
    r, w = os.pipe()  # fdatasync of a pipe fails with EINVAL
    os.close(r)
    with pytest.raises(OSError) as info:
        await commits.commit(w, temp, "hot/aa/bb/st/se/1.dcm")
    assert info.value.errno == errno.EINVAL
    assert info.value.filename == temp
    assert list(hot.tmp.iterdir()) == []
    assert not (hot.data_dir / "hot/aa/bb/st/se/1.dcm").exists()


async def test_close_answers_the_commits_still_queued(hot):
    with ThreadPoolExecutor(1) as io:
        commits = Commits(hot, io, threads=1)
        (hot.data_dir / "hot/aa/bb/st/se").mkdir(parents=True)
        futures = [commits.commit(*_temp(hot, b"y"), f"hot/aa/bb/st/se/{n}.dcm")
                   for n in range(5)]
        commits.close()  # before the loop got to read any completion
    assert [f.exception() for f in futures] == [None] * 5
    assert len(list((hot.data_dir / "hot/aa/bb/st/se").iterdir())) == 5
