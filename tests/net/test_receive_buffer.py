"""The association reads into one reusable buffer, and never overwrites data a view still holds.

(The whole receive path through that buffer, with real dcmtk and pynetdicom peers, is what
tests/interop exercises; here only the reuse rule.)
"""

from __future__ import annotations

from types import SimpleNamespace

from hpacs.config import Config
from hpacs.net.dimse_server import Association


def _association() -> Association:
    return Association(SimpleNamespace(config=Config()))  # type: ignore[arg-type]


def test_the_buffer_is_reused_while_nothing_holds_it():
    assoc = _association()
    first = id(assoc.get_buffer(-1))
    assert id(assoc.get_buffer(-1)) == first
    assert len(assoc.get_buffer(-1)) == Association.RECV_BUFFER


def test_a_live_view_keeps_its_data_and_the_next_read_gets_a_fresh_buffer():
    assoc = _association()
    buf = assoc.get_buffer(-1)
    buf[:5] = b"hello"
    kept = memoryview(buf)[:5]  # e.g. a file write queued behind a large fragment
    del buf
    fresh = assoc.get_buffer(-1)
    fresh[:5] = b"xxxxx"
    assert bytes(kept) == b"hello"
    fresh_id = id(fresh)
    del kept, fresh
    assert id(assoc.get_buffer(-1)) == fresh_id  # no view left: reused again
