"""Trained zstd dictionaries for DICOM headers, one per modality, immutable once written.

Why: a header is a few KB of mostly the same tags, VRs and boilerplate values in every instance
of a modality; a dictionary trained on earlier headers lets each record's header frame stay
independent (decodable alone) yet compress several times better than plain zstd.

A dictionary is trained once per modality from the first ``train_at`` headers seen (until then
those records use none), written atomically and fsync'd *before* any record refers to it, and
never changed: its id in a record always names the same bytes. Files:
``root/dicts/<id:08d>-<modality>.zdict``.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import zstandard

from hpacs.log import get_logger
from hpacs.store.hot import _fsync_dir

__all__ = ["Dictionaries"]

log = get_logger(__name__)

SUFFIX = ".zdict"
_NAME = re.compile(r"^(\d{8})-([A-Z0-9_]*)\.zdict$")
#: Headers collected per modality before training; bytes kept per sample at most.
TRAIN_AT = 64
SAMPLE_MAX = 64 * 1024
DICT_SIZE = 32 * 1024


def _modality_key(modality: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", modality.strip().upper())[:16]


class Dictionaries:
    """Dictionary ids by modality for the appender; dictionaries by id for any reader thread."""

    def __init__(self, directory: Path, *, fsync: bool = True, train_at: int = TRAIN_AT) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.train_at = train_at
        self._lock = threading.Lock()
        self._by_id: dict[int, zstandard.ZstdCompressionDict] = {}
        self._latest: dict[str, int] = {}  # modality -> newest dictionary id
        self._samples: dict[str, list[bytes]] = {}
        self._next_id = 1
        for p in sorted(self.directory.iterdir()):
            m = _NAME.match(p.name)
            if m:
                i = int(m.group(1))
                self._latest[m.group(2)] = max(i, self._latest.get(m.group(2), 0))
                self._next_id = max(self._next_id, i + 1)

    def get(self, dict_id: int) -> zstandard.ZstdCompressionDict:
        """Dictionary ``dict_id`` (KeyError if it does not exist)."""
        d = self._by_id.get(dict_id)
        if d is not None:
            return d
        with self._lock:
            if dict_id not in self._by_id:
                matches = list(self.directory.glob(f"{dict_id:08d}-*{SUFFIX}"))
                if len(matches) != 1:
                    raise KeyError(dict_id)
                data = matches[0].read_bytes()
                self._by_id[dict_id] = zstandard.ZstdCompressionDict(data)
            return self._by_id[dict_id]

    def for_modality(self, modality: str, header: bytes) -> int:
        """The dictionary id to compress ``header`` with (0: none yet). Collects ``header`` as a
        training sample while the modality has no dictionary, and trains one when enough are in."""
        key = _modality_key(modality)
        found = self._latest.get(key)
        if found is not None:
            return found
        samples = self._samples.setdefault(key, [])
        samples.append(bytes(header[:SAMPLE_MAX]))
        if len(samples) < self.train_at:
            return 0
        del self._samples[key]
        try:
            size = min(DICT_SIZE, sum(map(len, samples)) // 8)
            data = zstandard.train_dictionary(size, samples).as_bytes()
        except zstandard.ZstdError as exc:  # too few distinct samples: try again later
            log.warning("cold.dict_training_failed", modality=key, error=str(exc))
            return 0
        return self._write(key, data)

    def _write(self, key: str, data: bytes) -> int:
        dict_id = self._next_id
        self._next_id += 1
        final = self.directory / f"{dict_id:08d}-{key}{SUFFIX}"
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if self.fsync:
            _fsync_dir(self.directory)  # durable before any record names it
        with self._lock:
            self._by_id[dict_id] = zstandard.ZstdCompressionDict(data)
        self._latest[key] = dict_id
        log.info("cold.dict_trained", modality=key, dict_id=dict_id, size=len(data))
        return dict_id
