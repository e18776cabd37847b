"""The Asynchronous Operations Window (PS3.7 D.3.3.3, PS3.8 D.3.3.3 sub-item 0x53), sans-IO.

The requestor proposes (Maximum Number Operations Invoked, Maximum Number Operations
Performed): how many operations it may invoke on the acceptor without waiting for their
responses, and how many the acceptor may invoke on it. 0 means unlimited. The acceptor answers
only a proposed item, with each value at most the proposed one; no item (proposed or answered)
means 1/1, i.e. one outstanding operation each way, as every dcmtk tool and Orthanc negotiate.
"""

from __future__ import annotations

#: No window negotiated: one outstanding operation in each direction.
SYNCHRONOUS = (1, 1)


def answer_window(proposed: tuple[int, int] | None, ours: int) -> tuple[int, int] | None:
    """The acceptor's answer to ``proposed`` when we allow ``ours`` (>= 1) outstanding
    operations each way: None when nothing was proposed (the item is only ever an answer),
    else min(proposed, ours) per direction, a proposed 0 (unlimited) getting ``ours``."""
    if proposed is None:
        return None
    ours = max(1, ours)
    return (_grant(proposed[0], ours), _grant(proposed[1], ours))


def window_in_force(proposed: tuple[int, int] | None,
                    answered: tuple[int, int] | None) -> tuple[int, int]:
    """(invoked, performed) in force once the A-ASSOCIATE-AC is known, as the requestor
    counts them: 1/1 unless proposed AND answered; an answer above the proposal (or 0 against
    a bounded proposal) is read as the proposal, the most the acceptor may grant."""
    if proposed is None or answered is None:
        return SYNCHRONOUS
    return (_grant(answered[0], proposed[0]) if proposed[0] else answered[0],
            _grant(answered[1], proposed[1]) if proposed[1] else answered[1])


def _grant(proposed: int, limit: int) -> int:
    return limit if proposed == 0 else min(proposed, limit)
