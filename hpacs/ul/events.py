"""What ``Connection.receive_data`` reports to its user (the UL indication primitives)."""

from __future__ import annotations

from dataclasses import dataclass

from hpacs.ul.pdu import PDV, AssociateAccept, AssociateReject, AssociateRequest


@dataclass(frozen=True, slots=True)
class AssociationRequested:
    """Peer's A-ASSOCIATE-RQ (acceptor, Sta3): answer with accept() or reject()."""

    request: AssociateRequest


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    """Peer accepted our request (requestor, now Sta6)."""

    accept: AssociateAccept


@dataclass(frozen=True, slots=True)
class AssociationRejected:
    """Peer rejected our request (requestor); the connection is closed."""

    reject: AssociateReject


@dataclass(frozen=True, slots=True)
class DataReceived:
    """PDVs from one or more consecutive P-DATA-TF PDUs, in arrival order."""

    pdvs: list[PDV]


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    """Peer asked to release; answer with release_reply() (after pending responses).

    ``collision`` is True when we had asked too (PS3.8 §7.2.2 release collision).
    """

    collision: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseConfirmed:
    """Peer's A-RELEASE-RP to our request. In a collision on the acceptor side (Sta12) the
    user must still call release_reply(); otherwise the connection is closed."""


@dataclass(frozen=True, slots=True)
class Aborted:
    """Association aborted by the peer (A-ABORT PDU) or by the transport closing under it.

    source 0: service-user, 2: service-provider; ``transport_closed`` means no A-ABORT was
    received, the connection just dropped (A-P-ABORT).
    """

    source: int
    reason: int
    transport_closed: bool = False


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; an A-ABORT (source 2, ``reason``) is queued in
    data_to_send() and the association is over (Sta13: wait for close or ARTIM)."""

    reason: int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The transport closed when no association was active (Sta2 or Sta13)."""


Event = (
    AssociationRequested
    | AssociationAccepted
    | AssociationRejected
    | DataReceived
    | ReleaseRequested
    | ReleaseConfirmed
    | Aborted
    | ProtocolError
    | ConnectionClosed
)
