"""The PS3.8 §9.2 Upper Layer state machine as data: states, events, actions, Table 9-10.

Kept as a literal table (like h11) so it can be read against the standard line by line and
checked against pynetdicom's copy in the tests; connection.py only interprets it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class State(StrEnum):
    """Upper layer states (PS3.8 Table 9-1). The value is the standard's name."""

    Sta1 = "Sta1"  # Idle (no transport, or transport to be closed)
    Sta2 = "Sta2"  # Transport connection open (awaiting A-ASSOCIATE-RQ PDU)
    Sta3 = "Sta3"  # Awaiting local A-ASSOCIATE response primitive
    Sta4 = "Sta4"  # Awaiting transport connection opening to complete
    Sta5 = "Sta5"  # Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU
    Sta6 = "Sta6"  # Association established and ready for data transfer
    Sta7 = "Sta7"  # Awaiting A-RELEASE-RP PDU
    Sta8 = "Sta8"  # Awaiting local A-RELEASE response primitive
    Sta9 = "Sta9"  # Release collision requestor side; awaiting local A-RELEASE response
    Sta10 = "Sta10"  # Release collision acceptor side; awaiting A-RELEASE-RP PDU
    Sta11 = "Sta11"  # Release collision requestor side; awaiting A-RELEASE-RP PDU
    Sta12 = "Sta12"  # Release collision acceptor side; awaiting local A-RELEASE response
    Sta13 = "Sta13"  # Awaiting transport connection close indication (association gone)


class Evt(IntEnum):
    """Upper layer events (PS3.8 Table 9-2)."""

    Evt1 = 1  # A-ASSOCIATE request (local user)
    Evt2 = 2  # Transport connect confirm (local transport)
    Evt3 = 3  # A-ASSOCIATE-AC PDU received
    Evt4 = 4  # A-ASSOCIATE-RJ PDU received
    Evt5 = 5  # Transport connection indication (local transport)
    Evt6 = 6  # A-ASSOCIATE-RQ PDU received
    Evt7 = 7  # A-ASSOCIATE response primitive (accept)
    Evt8 = 8  # A-ASSOCIATE response primitive (reject)
    Evt9 = 9  # P-DATA request primitive
    Evt10 = 10  # P-DATA-TF PDU received
    Evt11 = 11  # A-RELEASE request primitive
    Evt12 = 12  # A-RELEASE-RQ PDU received
    Evt13 = 13  # A-RELEASE-RP PDU received
    Evt14 = 14  # A-RELEASE response primitive
    Evt15 = 15  # A-ABORT request primitive
    Evt16 = 16  # A-ABORT PDU received
    Evt17 = 17  # Transport connection closed indication
    Evt18 = 18  # ARTIM timer expired
    Evt19 = 19  # Unrecognized or invalid PDU received


#: What each action does (PS3.8 Table 9-6..9-9), for logs and readers.
ACTIONS: dict[str, str] = {
    "AE-1": "Issue TRANSPORT CONNECT request to local transport",
    "AE-2": "Send A-ASSOCIATE-RQ PDU",
    "AE-3": "Issue A-ASSOCIATE confirmation (accept)",
    "AE-4": "Issue A-ASSOCIATE confirmation (reject) and close transport",
    "AE-5": "Issue transport connection response; start ARTIM",
    "AE-6": "Stop ARTIM; if the RQ is acceptable issue A-ASSOCIATE indication, "
    "else send A-ASSOCIATE-RJ and start ARTIM",
    "AE-7": "Send A-ASSOCIATE-AC PDU",
    "AE-8": "Send A-ASSOCIATE-RJ PDU and start ARTIM",
    "DT-1": "Send P-DATA-TF PDU",
    "DT-2": "Issue P-DATA indication",
    "AR-1": "Send A-RELEASE-RQ PDU",
    "AR-2": "Issue A-RELEASE indication",
    "AR-3": "Issue A-RELEASE confirmation and close transport",
    "AR-4": "Send A-RELEASE-RP PDU and start ARTIM",
    "AR-5": "Stop ARTIM",
    "AR-6": "Issue P-DATA indication",
    "AR-7": "Send P-DATA-TF PDU",
    "AR-8": "Issue A-RELEASE indication (release collision)",
    "AR-9": "Send A-RELEASE-RP PDU",
    "AR-10": "Issue A-RELEASE confirmation",
    "AA-1": "Send A-ABORT PDU and (re)start ARTIM",
    "AA-2": "Stop ARTIM if running; close transport",
    "AA-3": "Issue A-ABORT / A-P-ABORT indication and close transport",
    "AA-4": "Issue A-P-ABORT indication",
    "AA-5": "Stop ARTIM",
    "AA-6": "Ignore PDU",
    "AA-7": "Send A-ABORT PDU",
    "AA-8": "Send A-ABORT PDU (service-provider source), issue A-P-ABORT indication, start ARTIM",
}

S = State
_ALL_ASSOCIATED = (S.Sta6, S.Sta7, S.Sta8, S.Sta9, S.Sta10, S.Sta11, S.Sta12)


def _row(evt: Evt, default: str | None, **cells: str) -> dict[tuple[State, Evt], str]:
    """One event row: explicit cells by state name, plus ``default`` for states 3, 5..12."""
    row: dict[tuple[State, Evt], str] = {}
    if default is not None:
        for st in (S.Sta3, S.Sta5, *_ALL_ASSOCIATED):
            row[(st, evt)] = default
    for name, action in cells.items():
        row[(State(name), evt)] = action
    return row


#: Table 9-10: (state, event) -> action. Missing pairs are local errors (user calls) or
#: impossible (peer events cannot arrive in Sta1/Sta4).
TRANSITIONS: dict[tuple[State, Evt], str] = {
    **_row(Evt.Evt1, None, Sta1="AE-1"),
    **_row(Evt.Evt2, None, Sta4="AE-2"),
    **_row(Evt.Evt3, "AA-8", Sta2="AA-1", Sta5="AE-3", Sta13="AA-6"),
    **_row(Evt.Evt4, "AA-8", Sta2="AA-1", Sta5="AE-4", Sta13="AA-6"),
    **_row(Evt.Evt5, None, Sta1="AE-5"),
    **_row(Evt.Evt6, "AA-8", Sta2="AE-6", Sta13="AA-7"),
    **_row(Evt.Evt7, None, Sta3="AE-7"),
    **_row(Evt.Evt8, None, Sta3="AE-8"),
    **_row(Evt.Evt9, None, Sta6="DT-1", Sta8="AR-7"),
    **_row(Evt.Evt10, "AA-8", Sta2="AA-1", Sta6="DT-2", Sta7="AR-6", Sta13="AA-6"),
    **_row(Evt.Evt11, None, Sta6="AR-1"),
    **_row(Evt.Evt12, "AA-8", Sta2="AA-1", Sta6="AR-2", Sta7="AR-8", Sta13="AA-6"),
    **_row(Evt.Evt13, "AA-8", Sta2="AA-1", Sta7="AR-3", Sta10="AR-10", Sta11="AR-3", Sta13="AA-6"),
    **_row(Evt.Evt14, None, Sta8="AR-4", Sta9="AR-9", Sta12="AR-4"),
    **_row(Evt.Evt15, "AA-1", Sta4="AA-2"),
    **_row(Evt.Evt16, "AA-3", Sta2="AA-2", Sta13="AA-2"),
    **_row(Evt.Evt17, "AA-4", Sta2="AA-5", Sta4="AA-4", Sta13="AR-5"),
    **_row(Evt.Evt18, None, Sta2="AA-2", Sta13="AA-2"),
    **_row(Evt.Evt19, "AA-8", Sta2="AA-1", Sta13="AA-7"),
}

#: The state each action leads to. Two depend on context and are set by the connection: AE-6
#: goes to Sta13 instead of Sta3 when the provider itself refuses the RQ, AR-8 (None here) to
#: Sta9 for the requestor and Sta10 for the acceptor.
NEXT_STATE: dict[str, State | None] = {
    "AE-1": S.Sta4,
    "AE-2": S.Sta5,
    "AE-3": S.Sta6,
    "AE-4": S.Sta1,
    "AE-5": S.Sta2,
    "AE-6": S.Sta3,
    "AE-7": S.Sta6,
    "AE-8": S.Sta13,
    "DT-1": S.Sta6,
    "DT-2": S.Sta6,
    "AR-1": S.Sta7,
    "AR-2": S.Sta8,
    "AR-3": S.Sta1,
    "AR-4": S.Sta13,
    "AR-5": S.Sta1,
    "AR-6": S.Sta7,
    "AR-7": S.Sta8,
    "AR-8": None,
    "AR-9": S.Sta11,
    "AR-10": S.Sta12,
    "AA-1": S.Sta13,
    "AA-2": S.Sta1,
    "AA-3": S.Sta1,
    "AA-4": S.Sta1,
    "AA-5": S.Sta1,
    "AA-6": S.Sta13,
    "AA-7": S.Sta13,
    "AA-8": S.Sta13,
}

#: Full table view the brief asked for: (state, event) -> (action, next state or None).
TABLE: dict[tuple[State, Evt], tuple[str, State | None]] = {
    key: (action, NEXT_STATE[action]) for key, action in TRANSITIONS.items()
}
