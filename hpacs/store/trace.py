"""Opt-in timeline of each C-STORE's ack chain, for ``benchmarks.ingest_timeline``.

Off unless ``HPACS_INGEST_TRACE`` names a file in the server's environment when it starts. Off,
each hook is one test of the module constant ``ON`` (no clock read, no allocation), so the
receive path pays nothing for it. On, every C-STORE gets a dict of ``time.monotonic()`` stamps
(the clock the C commit threads stamp their steps with, ``Committer.trace``), written as JSON
lines to that file at exit. The stages, in the order of the chain:

``cmd`` command received, ``data0`` first data fragment handed on, ``last`` last fragment,
``finish`` the store task started, ``validated`` record built (scan, checks) and the commit
queued, ``written`` last write done (writer thread), ``presynced`` early fdatasync done,
``taken`` commit taken by a thread, ``synced`` its fdatasync done, ``renamed`` rename +
directory fsync done, ``settled`` the loop took the completion, ``resumed`` the store task ran
again, ``indexed`` index commit done and the task back, ``responded`` C-STORE-RSP written to
the transport. The client's share is ``responded`` to the next ``cmd`` of the association.
"""

from __future__ import annotations

import atexit
import json
import os
import time

#: Where the records go at exit (None: tracing is off).
PATH = os.environ.get("HPACS_INGEST_TRACE") or None
ON = PATH is not None
#: The C commit threads' stamp names, in ``Committer.traces`` order after the token.
C_STAGES = ("written", "presynced", "taken", "synced", "renamed")

_records: list[dict] = []


def begin(association: int) -> dict:
    """A new instance's record (stamped ``cmd`` now) on the association ``association``."""
    rec = {"assoc": association, "cmd": time.monotonic()}
    _records.append(rec)
    return rec


def stamp(rec: dict | None, stage: str) -> None:
    """Stamp ``stage`` now (kept if already stamped: the first time counts)."""
    if rec is not None and stage not in rec:
        rec[stage] = time.monotonic()


def add_c_stamps(rec: dict | None, stamps: tuple) -> None:
    """The commit threads' stamps of one commit (``Committer.traces`` without the token)."""
    if rec is not None:
        for stage, t in zip(C_STAGES, stamps, strict=True):
            if t > 0:
                rec[stage] = t


def dump(path: str | None = PATH) -> None:
    """Write every record as one JSON line (at exit)."""
    if path is None:
        return
    with open(path, "w") as out:
        for rec in _records:
            out.write(json.dumps(rec) + "\n")


if ON:
    atexit.register(dump)
