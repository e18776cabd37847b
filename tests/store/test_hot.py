"""HotStore: empty directories are pruned after files leave, safely against a writer that is
creating a file in the same directory at that moment."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hpacs.store import hot as hot_module
from hpacs.store.hot import HotStore


def _write(hot: HotStore, rel: str, data: bytes) -> None:
    fd, temp = hot.open_temp()
    os.write(fd, data)
    hot.commit(fd, temp, rel)


def test_prune_removes_empty_directories_up_to_the_root_only(tmp_path):
    hot = HotStore(tmp_path, fsync=False)
    a1 = hot.relative_path("1.2.1", "1.2.1.1", "1.2.1.1.1")
    a2 = hot.relative_path("1.2.1", "1.2.1.2", "1.2.1.2.1")  # same study, second series
    b = hot.relative_path("1.2.2", "1.2.2.1", "1.2.2.1.1")
    for rel in (a1, a2, b):
        _write(hot, rel, b"x")
    for rel in (a1, a2):
        hot.absolute(rel).unlink()
    assert hot.prune_dirs([a1, a2]) >= 3  # both series, the study (and its empty hash dirs)
    assert not hot.absolute(a1).parent.parent.exists()
    assert hot.absolute(b).read_bytes() == b"x"  # the other study is untouched
    hot.absolute(b).unlink()
    hot.prune_dirs([b])
    assert hot.root.is_dir() and list(hot.root.iterdir()) == []
    assert hot.prune_dirs([b]) == 0  # nothing left to do, no error


def test_a_file_being_written_keeps_its_directory(tmp_path, monkeypatch):
    """The prune runs exactly before the writer's rename into an existing (empty) directory:
    the rename fails, the writer recreates the directory and lands its file."""
    hot = HotStore(tmp_path, fsync=False)
    first = hot.relative_path("1.2.3", "1.2.3.1", "1.2.3.1.0")
    rel = hot.relative_path("1.2.3", "1.2.3.1", "1.2.3.1.1")
    _write(hot, first, b"old")
    hot.absolute(first).unlink()  # the series directory is empty: prunable
    real_finish = hot_module.finish_file
    raced: list[int] = []

    def prune_then_finish(*args):
        if not raced:
            raced.append(hot.prune_dirs([rel]))
        return real_finish(*args)

    monkeypatch.setattr(hot_module, "finish_file", prune_then_finish)
    _write(hot, rel, b"data")
    assert raced[0] >= 2
    assert hot.absolute(rel).read_bytes() == b"data"
    assert hot.prune_dirs([rel]) == 0  # a directory holding a file is never removed


def test_prune_and_ingest_in_parallel_lose_no_file(tmp_path):
    hot = HotStore(tmp_path, fsync=False)
    rels = [hot.relative_path("1.2.9", "1.2.9.1", f"1.2.9.1.{i}") for i in range(300)]
    stop = threading.Event()

    def pruner() -> None:
        while not stop.is_set():
            hot.prune_dirs(rels[:1])

    t = threading.Thread(target=pruner)
    t.start()
    try:
        for rel in rels:
            _write(hot, rel, rel.encode())
            hot.absolute(rel).unlink()  # the directory is empty again: prunable
        for rel in rels[:50]:
            _write(hot, rel, rel.encode())
    finally:
        stop.set()
        t.join()
    assert all(hot.absolute(rel).read_bytes() == rel.encode() for rel in rels[:50])
    assert Path(hot.absolute(rels[0])).parent.is_dir()
