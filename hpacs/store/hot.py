"""The hot store: plain Part 10 files on local disk, laid out by UIDs, written atomically.

Layout under ``<data>/hot``: ``<h[0:2]>/<h[2:4]>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``
where ``h`` is the SHA-1 of the Study Instance UID, so that no directory grows huge and a study
stays together (migration moves whole studies). Files are written to ``<data>/tmp`` first, then
fsync'd and renamed into place; the parent directory is fsync'd so the rename survives a crash.

Directories left empty (a study migrated to cold) are removed with ``rmdir``, which only ever
removes an empty directory. A writer whose rename finds its directory gone (a new series, or
pruned just before) creates the path and renames under a lock that each ``rmdir`` also takes,
so the common path (the directory exists) never waits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from hpacs.store.fileio import finish_file

HOT_DIR = "hot"
TMP_DIR = "tmp"
SUFFIX = ".dcm"
#: Directory levels above a file inside ``hot/``: series, study, h[2:4], h[0:2].
_LEVELS = 4


@functools.lru_cache(maxsize=4096)
def _study_dir(study_uid: str) -> str:
    """A study's directory relative to the data dir. Cached: the instances of a study arrive
    together, and the SHA-1 (an OpenSSL context per call) was ~10 µs of each one's ingest."""
    h = hashlib.sha1(study_uid.encode("ascii")).hexdigest()
    return f"{HOT_DIR}/{h[0:2]}/{h[2:4]}/{study_uid}"


class HotStore:
    def __init__(self, data_dir: Path, fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / HOT_DIR
        self.tmp = self.data_dir / TMP_DIR
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._data_prefix = f"{self.data_dir}/"
        #: Held by a writer creating its directories until its rename, and by each rmdir.
        self._dirs_lock = threading.Lock()
        # a random part per store object, then a counter: no getrandom call per instance,
        # and still no clash with the names of another process (O_EXCL would refuse them)
        self._tmp_prefix = f"{self.tmp}/{os.urandom(8).hex()}-"
        self._tmp_seq = itertools.count()

    # -- layout -------------------------------------------------------------------------------
    @staticmethod
    def relative_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Path of an instance relative to the data dir (what the index stores)."""
        return f"{_study_dir(study_uid)}/{series_uid}/{sop_uid}{SUFFIX}"

    def absolute(self, relative: str) -> Path:
        return self.data_dir / relative

    # -- writing ------------------------------------------------------------------------------
    def temp_name(self) -> str:
        """A fresh temp file name in the same file system as the store (created O_EXCL by
        ``open_temp`` or by the C writer thread, store/sink.py). Plain strings, not Path
        objects: this runs once per instance on the ingest path."""
        return f"{self._tmp_prefix}{next(self._tmp_seq)}.part"

    def open_temp(self) -> tuple[int, str]:
        """A new temp file (O_EXCL) in the same file system as the store."""
        path = self.temp_name()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return fd, path

    def commit(self, fd: int, temp: str, relative: str) -> None:
        """fsync, close and atomically rename ``temp`` into place, then fsync the directory so
        the rename survives a crash. Blocking: run in an executor. The directories are created
        only when the rename says they are missing (once per series)."""
        final, parent = self.final_path(relative)
        try:
            finish_file(fd, temp, final, parent, self.fsync)
            return
        except FileNotFoundError:  # a new series, or ``prune_dirs`` removed the directory
            if not os.path.exists(temp):
                raise
        self.commit_into_new_dirs(temp, relative)

    def final_path(self, relative: str) -> tuple[str, str]:
        """The absolute path of a stored file and of its directory, as plain strings."""
        final = self._data_prefix + relative
        return final, final.rpartition("/")[0]

    def commit_into_new_dirs(self, temp: str, relative: str) -> None:
        """The rest of a commit whose rename found its directory missing (``temp`` is already
        synced and closed): create the directories, rename, fsync. Blocking. Under the lock no
        prune can remove the directories between their creation and the rename."""
        final, parent = self.final_path(relative)
        with self._dirs_lock:
            self._make_dirs(Path(parent))
            finish_file(-1, temp, final, parent, self.fsync)

    def _make_dirs(self, directory: Path) -> None:
        """Create missing directories, fsyncing each new entry's parent so it is durable.
        Called with ``_dirs_lock`` held, so no prune removes a parent meanwhile."""
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                _fsync_dir(d.parent)

    def prune_dirs(self, relatives: list[str]) -> int:
        """Remove the directories above these (removed) files that are now empty, up to
        ``hot/``; returns how many went. ``rmdir`` refuses a directory a concurrent write has
        put a file (or a subdirectory) into, and ``commit`` survives losing its directory, so
        this is safe while ingest runs. Not fsync'd: an empty directory coming back after a
        crash is harmless."""
        removed = 0
        level = {(self.data_dir / rel).parent for rel in relatives}
        for _ in range(_LEVELS):  # deepest first: a study goes once all its series went
            above: set[Path] = set()
            for d in level:
                if d == self.root or self.root not in d.parents:
                    continue
                try:
                    with self._dirs_lock:
                        os.rmdir(d)
                except OSError:  # not empty (or already gone)
                    continue
                removed += 1
                above.add(d.parent)
            level = above
        return removed

    @staticmethod
    def discard(fd: int | None, temp: str) -> None:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)

    def remove(self, relative: str) -> None:
        """Delete a stored file (e.g. the old copy of a replaced instance)."""
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / relative).unlink()

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted transfers; they were never acknowledged."""
        count = 0
        for entry in self.tmp.iterdir():
            entry.unlink(missing_ok=True)
            count += 1
        return count

    # -- reading ------------------------------------------------------------------------------
    def iter_files(self, modified_since: float | None = None) -> Iterator[str]:
        """Relative paths of every stored file (or those in series dirs changed since a time)."""
        for top in sorted(os.scandir(self.root), key=lambda e: e.name):
            if not top.is_dir():
                continue
            for mid in os.scandir(top.path):
                if not mid.is_dir():
                    continue
                for study in os.scandir(mid.path):
                    if not study.is_dir():
                        continue
                    for series in os.scandir(study.path):
                        if not series.is_dir():
                            continue
                        if modified_since is not None and series.stat().st_mtime < modified_since:
                            continue
                        for inst in os.scandir(series.path):
                            if inst.name.endswith(SUFFIX) and inst.is_file():
                                yield os.path.relpath(inst.path, self.data_dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
