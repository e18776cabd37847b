"""A sans-IO DICOM Upper Layer connection (PS3.8 §9.2), in the manner of h11/wsproto.

The adapter owns the socket and the clock; this object owns the protocol:

* bytes from the peer go in through :meth:`Connection.receive_data` (``b""`` = transport
  closed, Evt17); it returns the events they caused, in order;
* bytes the protocol itself must send in reply (A-ABORT on a protocol error, the automatic
  A-ASSOCIATE-RJ for an unsupported protocol version) are queued: drain :meth:`data_to_send`
  after every ``receive_data``;
* user calls (``accept``, ``send_data``, ``release_reply``, ``abort``, ...) return the bytes to
  send directly, and raise :class:`LocalProtocolError` when the state forbids them;
* after every call the adapter reads ``artim_running``/``artim_epoch`` to (re)arm or cancel the
  ARTIM timer and calls :meth:`timeout` when it fires; once ``closed`` is true it closes the
  transport. In ``awaiting_close`` (Sta13) it keeps reading until the peer closes or ARTIM fires.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from hpacs.ul.async_window import SYNCHRONOUS, window_in_force
from hpacs.ul.events import (
    Aborted,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    ConnectionClosed,
    DataReceived,
    Event,
    ProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
)
from hpacs.ul.framer import MAX_CONTROL_PDU, PDataFramer, split_pdata
from hpacs.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    ABORT_REASON_NOT_SPECIFIED,
    ABORT_REASON_UNEXPECTED_PDU,
    ABORT_SOURCE_PROVIDER,
    ABORT_SOURCE_USER,
    P_DATA_TF,
    PC_ACCEPTANCE,
    PDV,
    REJECT_ACSE_PROTOCOL_VERSION,
    REJECT_PERMANENT,
    REJECT_SOURCE_ACSE,
    Abort,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    PDUError,
    ReleaseReply,
    ReleaseRequest,
    decode_body,
    encode,
    encode_abort,
    encode_pdata,
    pdata_headers,
)
from hpacs.ul.states import NEXT_STATE, TRANSITIONS, Evt, State

#: Our default maximum P-DATA-TF body length (what we advertise and accept).
DEFAULT_MAX_PDU_LENGTH = 256 * 1024
#: Largest P-DATA-TF we send, whatever larger size (or "no limit", 0) the peer accepts. A
#: receiver can act on a PDU only once all of it is in, so smaller PDUs let it work while the
#: rest is still on the wire. Measured: C-GET of a 100-slice CT (526 KB per instance) to a
#: receiver accepting 1 MiB took 120 ms median in 1 MiB PDUs and 69 ms in 128 KiB ones
#: (16-256 KiB all within 70-78 ms); dcmtk sends at most 128 KiB too.
MAX_SEND_PDU = 128 * 1024
#: Receive cap when we ourselves advertise "no limit" (0): memory must stay bounded.
UNLIMITED_RECEIVE_PDU = 16 << 20
#: The smallest PDU that carries one byte of PDV data.
_MIN_SEND_PDU = 7

_PDU_EVENT = {
    A_ASSOCIATE_RQ: Evt.Evt6,
    A_ASSOCIATE_AC: Evt.Evt3,
    A_ASSOCIATE_RJ: Evt.Evt4,
    P_DATA_TF: Evt.Evt10,
    A_RELEASE_RQ: Evt.Evt12,
    A_RELEASE_RP: Evt.Evt13,
    A_ABORT: Evt.Evt16,
}

_S = State
_DATA_STATES = (_S.Sta6, _S.Sta7)  # where P-DATA-TF is an indication (DT-2, AR-6)


class Role(StrEnum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


class LocalProtocolError(RuntimeError):
    """Our own user asked for something the current state does not allow."""


_Handler = Callable[["Connection", object], "bytes | list | None"]


class Connection:
    """One association's protocol state, no I/O. See the module docstring for the contract."""

    def __init__(
        self,
        role: Role | str,
        *,
        max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH,
        max_control_pdu: int = MAX_CONTROL_PDU,
    ) -> None:
        self.role = Role(role)
        self.state = State.Sta1
        #: Our advertised maximum P-DATA-TF body; request_association/accept update it from the
        #: PDU actually sent.
        self.max_pdu_length = max_pdu_length
        #: The peer's maximum (0 = none); our outgoing P-DATA-TF PDUs respect it.
        self.peer_max_pdu_length = 0
        self.request: AssociateRequest | None = None
        self.accept_pdu: AssociateAccept | None = None
        #: context_id -> (abstract syntax, transfer syntax) for accepted contexts.
        self.accepted_contexts: dict[int, tuple[str, str]] = {}
        #: True while PS3.8's ARTIM timer should run; artim_epoch changes on every (re)start.
        self.artim_running = False
        self.artim_epoch = 0
        self._framer = PDataFramer(
            self._receive_cap(max_pdu_length), max_control_pdu, self.accepted_contexts
        )
        #: Bumped whenever accepted_contexts is replaced (the framer checks PDVs against it).
        self._contexts_epoch = 0
        self._send_limit = MAX_SEND_PDU
        self._outbox: list[bytes] = []
        self._events: list[Event] = []
        self._opened = False
        self._framing_failed = False
        if self.role is Role.ACCEPTOR:
            self._fire(Evt.Evt5)  # the adapter built us for an accepted transport connection

    # -- inspection ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The transport must be closed now (back in Sta1 after having been used)."""
        return self._opened and self.state is State.Sta1

    @property
    def awaiting_close(self) -> bool:
        """Sta13: the association is over; wait for the peer to close or for ARTIM."""
        return self.state is State.Sta13

    @property
    def established(self) -> bool:
        """Data transfer possible in at least one direction (Sta6..Sta12)."""
        return self.state in _ESTABLISHED

    @property
    def async_window(self) -> tuple[int, int]:
        """(Maximum Number Operations Invoked, Performed) in force, as the A-ASSOCIATE-AC
        states them (the requestor's view; 0 = unlimited): 1/1 until accepted, and when no
        window was proposed or answered (PS3.7 D.3.3.3)."""
        if self.request is None or self.accept_pdu is None:
            return SYNCHRONOUS
        return window_in_force(self.request.async_ops_window, self.accept_pdu.async_ops_window)

    @property
    def we_may_invoke(self) -> int:
        """Operations we may have outstanding (invoked, not yet answered); 0 = unlimited."""
        invoked, performed = self.async_window
        return invoked if self.role is Role.REQUESTOR else performed

    @property
    def peer_may_invoke(self) -> int:
        """Operations the peer may have outstanding on us; 0 = unlimited."""
        invoked, performed = self.async_window
        return performed if self.role is Role.REQUESTOR else invoked

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete incoming PDU."""
        return self._framer.buffered

    # -- the peer side ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the transport; ``b""`` means it closed. Returns the events caused.

        Consecutive P-DATA-TF PDUs are reported as one DataReceived. Payload views reference
        ``data``, which must not be mutated while they live (asyncio's ``bytes`` never is; a
        reused receive buffer must check that no view of it is left, see net/dimse_server.py).
        The Connection itself keeps no reference to them once this returns.
        """
        events: list[Event] = []
        self._events = events
        if self.state is State.Sta1:
            return events
        if not data:
            self._fire(Evt.Evt17)
            return events
        framer = self._framer
        epoch = self._contexts_epoch
        pending: list[PDV] | None = None
        for pdu_type, body, pdvs in framer.feed(data):
            if self.state is State.Sta1:
                break
            if pdu_type == P_DATA_TF and self.state in _DATA_STATES:
                if epoch != self._contexts_epoch:  # contexts set by a PDU of this same chunk
                    pdvs = split_pdata(body, self.accepted_contexts)
                if type(pdvs) is not list:  # the PDUError the framer found in this PDU
                    pending = None
                    self._peer(Evt.Evt19, pdvs)
                    continue
                if pending is None:
                    pending = pdvs
                    events.append(DataReceived(pdvs))
                else:
                    pending.extend(pdvs)
                continue
            pending = None
            self._on_pdu(pdu_type, body)
        if framer.error is not None and not self._framing_failed and self.state is not State.Sta1:
            self._framing_failed = True  # the framer now ignores all input: stream unframeable
            self._peer(Evt.Evt19, framer.error)
        self._events = []  # the caller owns the events (and the views of `data` they hold)
        return events

    def data_to_send(self) -> bytes:
        """Bytes the protocol queued by itself (A-ABORT, automatic A-ASSOCIATE-RJ)."""
        if not self._outbox:  # nearly always: asked after every read
            return b""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def timeout(self) -> bytes:
        """ARTIM expired (Evt18): closes the connection. Stale timers are ignored."""
        if not self.artim_running or self.state not in (State.Sta2, State.Sta13):
            return b""
        self._events = []
        self._fire(Evt.Evt18)
        return b""

    # -- the local user side ---------------------------------------------------------------

    def request_association(self, request: AssociateRequest) -> bytes:
        """Requestor: the transport is connected; returns the A-ASSOCIATE-RQ PDU (Sta5)."""
        if self.role is not Role.REQUESTOR:
            raise LocalProtocolError("only a requestor requests an association")
        self._user(Evt.Evt1, request)
        return self._user(Evt.Evt2, request)

    def accept(self, accept: AssociateAccept) -> bytes:
        """Acceptor in Sta3: returns the A-ASSOCIATE-AC PDU; the association is up (Sta6)."""
        return self._user(Evt.Evt7, accept)

    def reject(self, reject: AssociateReject) -> bytes:
        """Acceptor in Sta3: returns the A-ASSOCIATE-RJ PDU; then Sta13 with ARTIM running."""
        return self._user(Evt.Evt8, reject)

    def send_data(
        self, context_id: int, is_command: bool, payload: bytes | memoryview, *, last: bool = True
    ) -> bytes:
        """One command or data set (or a piece of one, ``last=False``) as P-DATA-TF PDUs."""
        return b"".join(self.send_data_buffers(context_id, is_command, payload, last=last))

    def send_data_buffers(
        self, context_id: int, is_command: bool, payload: bytes | memoryview, *, last: bool = True
    ) -> list[bytes | memoryview]:
        """As send_data, but [header, payload slice, ...] for ``transport.writelines`` (no copy)."""
        self._check_data(context_id)
        bufs = encode_pdata(context_id, is_command, payload, self._send_limit, last=last)
        self._user(Evt.Evt9, None)
        return bufs

    def send_data_headers(
        self, context_id: int, is_command: bool, length: int, *, last: bool = True
    ) -> list[tuple[bytes, int]]:
        """As send_data_buffers for ``length`` bytes the caller writes itself (a file sent by
        ``sendfile``): [(header, payload bytes that follow it), ...]."""
        self._check_data(context_id)
        headers = pdata_headers(context_id, is_command, length, self._send_limit, last=last)
        self._user(Evt.Evt9, None)
        return headers

    def _check_data(self, context_id: int) -> None:
        if (self.state, Evt.Evt9) not in TRANSITIONS:
            raise LocalProtocolError(f"cannot send data in {self.state}")
        if context_id not in self.accepted_contexts:
            raise LocalProtocolError(f"presentation context {context_id} was not accepted")

    def release_request(self) -> bytes:
        """Sta6: returns A-RELEASE-RQ; then Sta7 (data may still arrive)."""
        return self._user(Evt.Evt11, None)

    def release_reply(self) -> bytes:
        """Answer a ReleaseRequested (Sta8/Sta9/Sta12): returns A-RELEASE-RP."""
        return self._user(Evt.Evt14, None)

    def abort(
        self, source: int = ABORT_SOURCE_USER, reason: int = ABORT_REASON_NOT_SPECIFIED
    ) -> bytes:
        """A-ABORT from the local user (Sta3, Sta5..Sta12): returns the PDU; then Sta13."""
        return self._user(Evt.Evt15, Abort(source, reason))

    # -- machinery -------------------------------------------------------------------------

    def _user(self, evt: Evt, arg: object) -> bytes:
        if (self.state, evt) not in TRANSITIONS:
            raise LocalProtocolError(f"{evt.name} is not allowed in {self.state}")
        self._events = []
        out = self._fire(evt, arg)
        return out if isinstance(out, bytes) else b""

    def _peer(self, evt: Evt, arg: object) -> None:
        out = self._fire(evt, arg)
        if out:
            self._outbox.append(out)

    def _on_pdu(self, pdu_type: int, body: memoryview) -> None:
        evt = _PDU_EVENT[pdu_type]
        if self.state is State.Sta13:
            self._peer(evt, None)  # ignored or answered with A-ABORT; content irrelevant
            return
        try:
            # P-DATA-TF reaches here only outside Sta6/Sta7, where it is unexpected anyway
            pdu = decode_body(pdu_type, body)
        except PDUError as exc:
            self._peer(Evt.Evt19, exc)
            return
        self._peer(evt, pdu)

    def _fire(self, evt: Evt, arg: object = None) -> bytes | None:
        action = TRANSITIONS[(self.state, evt)]
        self._next: State | None = NEXT_STATE[action]
        out = _HANDLERS[action](self, arg)
        self.state = self._next  # type: ignore[assignment]
        if self.state is State.Sta1:
            self.artim_running = False
            self._framer = PDataFramer(0, 0)  # drop any partial PDU; no input is read in Sta1
        return out

    @staticmethod
    def _receive_cap(max_pdu_length: int) -> int:
        return max_pdu_length if max_pdu_length > 0 else UNLIMITED_RECEIVE_PDU

    @property
    def send_limit(self) -> int:
        """The largest P-DATA-TF PDU we send (the peer's maximum, within our own caps): what
        ``encode_pdata`` needs to frame more messages after one :meth:`send_data_buffers`
        checked the state (a C-FIND page of pending responses)."""
        return self._send_limit

    def _start_artim(self) -> None:
        self.artim_running = True
        self.artim_epoch += 1

    def _set_peer_max(self, peer_max: int) -> None:
        self.peer_max_pdu_length = peer_max
        self._send_limit = min(max(peer_max, _MIN_SEND_PDU), MAX_SEND_PDU) if peer_max \
            else MAX_SEND_PDU

    def _set_our_max(self, our_max: int) -> None:
        self.max_pdu_length = our_max
        self._framer.max_pdata = self._receive_cap(our_max)

    def _set_contexts(self, request: AssociateRequest, accept: AssociateAccept) -> None:
        proposed = {pc.context_id: pc.abstract_syntax for pc in request.presentation_contexts}
        self.accepted_contexts = {
            res.context_id: (proposed[res.context_id], res.transfer_syntax)
            for res in accept.presentation_contexts
            if res.result == PC_ACCEPTANCE and res.context_id in proposed
        }
        self._framer.contexts = self.accepted_contexts
        self._contexts_epoch += 1

    def _peer_abort(self, arg: object) -> bytes:
        """An A-ABORT answering a peer's fault (unexpected or invalid PDU)."""
        if isinstance(arg, PDUError):
            reason, message = arg.reason, str(arg)
        else:
            reason = ABORT_REASON_UNEXPECTED_PDU
            name = type(arg).__name__ if arg is not None else "PDU"
            message = f"unexpected {name} in {self.state}"
        self._events.append(ProtocolError(reason, message))
        return encode_abort(ABORT_SOURCE_PROVIDER, reason)

    # Actions (PS3.8 Tables 9-6..9-9). Each returns the bytes to send, if any.

    def _ae1(self, request: object) -> None:
        assert isinstance(request, AssociateRequest)
        self._opened = True
        self.request = request
        self._set_our_max(request.max_pdu_length)

    def _ae2(self, request: object) -> bytes:
        assert isinstance(request, AssociateRequest)
        return encode(request)

    def _ae3(self, accept: object) -> None:
        assert isinstance(accept, AssociateAccept) and self.request is not None
        self.accept_pdu = accept
        self._set_peer_max(accept.max_pdu_length)
        self._set_contexts(self.request, accept)
        self._events.append(AssociationAccepted(accept))

    def _ae4(self, reject: object) -> None:
        assert isinstance(reject, AssociateReject)
        self._events.append(AssociationRejected(reject))

    def _ae5(self, _: object) -> None:
        self._opened = True
        self._start_artim()

    def _ae6(self, request: object) -> bytes | None:
        assert isinstance(request, AssociateRequest)
        self.artim_running = False
        self.request = request
        self._set_peer_max(request.max_pdu_length)
        if not request.protocol_version & 1:  # bit 0 = version 1, the only one defined
            self._start_artim()
            self._next = State.Sta13
            return encode(
                AssociateReject(REJECT_PERMANENT, REJECT_SOURCE_ACSE, REJECT_ACSE_PROTOCOL_VERSION)
            )
        self._events.append(AssociationRequested(request))
        return None

    def _ae7(self, accept: object) -> bytes:
        assert isinstance(accept, AssociateAccept) and self.request is not None
        out = encode(accept)
        self.accept_pdu = accept
        self._set_our_max(accept.max_pdu_length)
        self._set_contexts(self.request, accept)
        return out

    def _ae8(self, reject: object) -> bytes:
        assert isinstance(reject, AssociateReject)
        out = encode(reject)
        self._start_artim()
        return out

    def _dt1(self, _: object) -> None:
        return None  # send_data_buffers already built the PDUs

    def _dt2(self, pdvs: object) -> None:
        self._events.append(DataReceived(pdvs))  # type: ignore[arg-type]

    _ar6 = _dt2  # P-DATA indication while awaiting A-RELEASE-RP
    _ar7 = _dt1  # P-DATA request after the peer asked to release

    def _ar1(self, _: object) -> bytes:
        return encode(ReleaseRequest())

    def _ar2(self, _: object) -> None:
        self._events.append(ReleaseRequested(collision=False))

    def _ar3(self, _: object) -> None:
        self._events.append(ReleaseConfirmed())

    def _ar4(self, _: object) -> bytes:
        self._start_artim()
        return encode(ReleaseReply())

    def _ar5(self, _: object) -> None:
        self._events.append(ConnectionClosed())

    def _ar8(self, _: object) -> None:
        self._next = State.Sta9 if self.role is Role.REQUESTOR else State.Sta10
        self._events.append(ReleaseRequested(collision=True))

    def _ar9(self, _: object) -> bytes:
        return encode(ReleaseReply())

    def _ar10(self, _: object) -> None:
        self._events.append(ReleaseConfirmed())

    def _aa1(self, arg: object) -> bytes:
        self._start_artim()
        if isinstance(arg, Abort):  # local user (Evt15)
            return encode(arg)
        return self._peer_abort(arg)  # peer fault in Sta2

    def _aa2(self, _: object) -> None:
        self.artim_running = False

    def _aa3(self, abort: object) -> None:
        assert isinstance(abort, Abort)
        self._events.append(Aborted(abort.source, abort.reason))

    def _aa4(self, _: object) -> None:
        self._events.append(
            Aborted(ABORT_SOURCE_PROVIDER, ABORT_REASON_NOT_SPECIFIED, transport_closed=True)
        )

    def _aa5(self, _: object) -> None:
        self.artim_running = False
        self._events.append(ConnectionClosed())

    def _aa6(self, _: object) -> None:
        return None

    def _aa7(self, arg: object) -> bytes:
        return self._peer_abort(arg)

    def _aa8(self, arg: object) -> bytes:
        self._start_artim()
        return self._peer_abort(arg)


_ESTABLISHED = frozenset((_S.Sta6, _S.Sta7, _S.Sta8, _S.Sta9, _S.Sta10, _S.Sta11, _S.Sta12))

_HANDLERS: dict[str, _Handler] = {
    name: getattr(Connection, "_" + name.replace("-", "").lower()) for name in NEXT_STATE
}
