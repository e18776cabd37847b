"""The DICOM server: an asyncio Protocol per association around ``ul.Connection``.

All protocol decisions live in ``ul`` (PDUs, state table, negotiation) and ``dimse`` (message
assembly, statuses); this module only moves bytes, runs timers and awaits the store. C-FIND and
C-GET/C-MOVE driving code sits in the ``find_service`` and ``retrieve_service`` mixins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Awaitable, Callable

from hpacs.config import Config
from hpacs.dimse import commands as cmd
from hpacs.dimse import status
from hpacs.dimse.assembler import CommandReceived, DimseError, MessageAssembler
from hpacs.dimse.find import (
    MAX_IDENTIFIER_BYTES,
)
from hpacs.dimse.services import echo_response, store_refused, store_response, unsupported_response
from hpacs.index.query import QueryEngine
from hpacs.log import get_logger
from hpacs.metrics import Metrics
from hpacs.net.find_service import FindService
from hpacs.net.retrieve_service import RetrieveService
from hpacs.store import trace
from hpacs.store.ingest import Ingestor, Receiver
from hpacs.store.tiers import Tiers
from hpacs.ul import (
    Aborted,
    AcceptorPolicy,
    AssociateReject,
    AssociationRequested,
    Connection,
    ConnectionClosed,
    DataReceived,
    LocalProtocolError,
    ProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
    local_limit_exceeded,
    negotiate,
)
from hpacs.ul.pdu import ABORT_REASON_UNEXPECTED_PARAMETER, ABORT_SOURCE_PROVIDER

log = get_logger("hpacs.dimse")

VERIFICATION = "1.2.840.10008.1.1"
#: While reading is paused for the disk (dicom.disk_backlog_bytes), check this often.
DISK_BACKLOG_POLL_S = 0.005


def _free_refs() -> int:
    """``sys.getrefcount`` of a buffer held by one attribute only (CPython: 2)."""
    holder = type("Holder", (), {})()
    holder.buf = bytearray(1)
    return sys.getrefcount(holder.buf)


_FREE_REFS = _free_refs()


def _held_free_refs() -> int:
    """The same for a buffer read as ``held[i]`` into a local (list + local + argument)."""
    held = [bytearray(1)]
    for i in range(len(held)):
        buf = held[i]
        return sys.getrefcount(buf)
    return 0


_HELD_FREE_REFS = _held_free_refs()
#: Receive buffers still referenced by queued writes, kept for reuse (beyond: left to the GC).
MAX_HELD_BUFFERS = 16


class DimseServer:
    """Listens for associations; owns the set of live ones (for limits and shutdown)."""

    def __init__(self, config: Config, ingestor: Ingestor, metrics: Metrics,
                 tiers: Tiers | None = None) -> None:
        self.config = config
        self.ingestor = ingestor
        #: The archive's tier reader: C-GET/C-MOVE read instances that are not hot through it.
        self.tiers = tiers
        self.metrics = metrics
        d = config.dicom
        self.policy = AcceptorPolicy(
            ae_title=config.server.ae_title,
            check_called_ae=d.check_called_ae,
            allowed_calling_aes=frozenset(d.allowed_calling_aes) or None,
            max_pdu_length=d.max_pdu_length,
            async_window=max(1, d.async_window),
        )
        self.query_engine = QueryEngine(ingestor.db)
        self.associations: set[Association] = set()
        self.draining = False
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Association(self), host, port,
                                                reuse_address=True, backlog=256)

    async def stop(self, grace: float) -> None:
        """Stop accepting; let each association finish the message it is in; then abort."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        for assoc in list(self.associations):
            assoc.drain()
        while self.associations and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for assoc in list(self.associations):
            await assoc.finish_pending()
            assoc.close(abort=True)
        if self._server is not None:
            await self._server.wait_closed()


class Association(FindService, RetrieveService, asyncio.BufferedProtocol):
    """One TCP connection: bytes in → ul events → DIMSE messages → store → responses out.

    A BufferedProtocol: the transport reads straight into one receive buffer per association
    instead of into a loop-wide buffer copied into a new ``bytes`` per read (~0.5 MB of extra
    memcpy and a large allocation per CT slice). The PDVs handed on are views of that buffer;
    every consumer writes or copies them before returning (commands and identifiers are
    copied), or keeps them until written: a data set's fragments are written by the C commit
    threads, which hold them until the loop takes their completion back. ``get_buffer`` sees
    the extra references and hands the transport another buffer, so data still referenced is
    never overwritten; buffers set aside that way are reused once nothing references them (a
    fresh 256 KiB bytearray per read would be zero-filled each time).
    """

    #: Bytes one read may take.
    RECV_BUFFER = 256 * 1024

    def __init__(self, server: DimseServer) -> None:
        self.server = server
        self.conn = Connection(Role.ACCEPTOR, max_pdu_length=server.config.dicom.max_pdu_length)
        self.assembler = MessageAssembler()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.calling_ae = ""
        self.receiver: Receiver | None = None
        self.request: cmd.Command | None = None
        #: Why the current C-STORE is refused before its data set arrives (status, comment).
        self._refusal: tuple[int, str] | None = None
        self.pending: set[asyncio.Task] = set()
        self._artim: asyncio.TimerHandle | None = None
        self._artim_epoch = -1
        self._idle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._draining = False
        self._counted = False
        self._reading_paused = False
        #: C-FIND: the identifier being received (None when the data set is not a query's).
        self._identifier: bytearray | None = None
        self._identifier_overflow = False
        #: Message IDs of C-FINDs received and not yet answered, and those cancelled.
        self._find_ids: set[int] = set()
        self._cancelled: set[int] = set()
        self._last_find: asyncio.Task | None = None
        #: Cleared while the transport's write buffer is over its high-water mark.
        self._writable = asyncio.Event()
        self._writable.set()
        #: C-GET sub-operations: our C-STORE-RQ message ID -> future of the peer's C-STORE-RSP.
        self._store_waiters: dict[int, asyncio.Future] = {}
        self._sub_ids = itertools.count(1)
        #: True while a C-STORE-RQ data set is being written in pieces: other messages wait.
        self._streaming = False
        self._deferred: list = []
        self._recv = bytearray(self.RECV_BUFFER)
        self._held: list[bytearray] = []
        #: C-STOREs received whole and not answered yet (the peer's outstanding operations).
        self._stores = 0
        self._window_warned = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.associations.add(self)
        self._touch()
        self._sync_timers()

    def get_buffer(self, sizehint: int) -> bytearray:
        # the attribute and the argument are the only references unless a view of the last
        # read's data is still alive somewhere (then that data must stay as it is)
        if sys.getrefcount(self._recv) > _FREE_REFS:
            self._recv = self._free_buffer()
        return self._recv

    def _free_buffer(self) -> bytearray:
        """Set the referenced receive buffer aside; reuse one set aside earlier that nothing
        references any more, else a new one."""
        held = self._held
        held.append(self._recv)
        for i in range(len(held) - 1):
            buf = held[i]
            if sys.getrefcount(buf) <= _HELD_FREE_REFS:
                del held[i]
                return buf
        if len(held) > MAX_HELD_BUFFERS:
            del held[0]
        return bytearray(self.RECV_BUFFER)

    def buffer_updated(self, nbytes: int) -> None:
        self._last_activity = time.monotonic()
        self._handle(self.conn.receive_data(memoryview(self._recv)[:nbytes]))

    def data_received(self, data: bytes) -> None:
        """The same for bytes handed over whole (a caller that is not a transport)."""
        self._last_activity = time.monotonic()
        self._handle(self.conn.receive_data(data))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.conn.closed:
            with contextlib.suppress(LocalProtocolError):
                self._handle(self.conn.receive_data(b""))
        self._cleanup()

    # -- events -------------------------------------------------------------------------------
    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                self._on_pdvs(event.pdvs)
            elif isinstance(event, AssociationRequested):
                self._on_request(event)
            elif isinstance(event, ReleaseRequested):
                self._on_release()
            elif isinstance(event, ReleaseConfirmed):
                self._send(self.conn.release_reply())
            elif isinstance(event, Aborted):
                log.info("assoc.aborted_by_peer", peer=self.peer, ae=self.calling_ae,
                         source=event.source, reason=event.reason)
                self.server.metrics.aborts_total.labels("peer").inc()
                self._discard_receiver()
            elif isinstance(event, ProtocolError):
                log.warning("assoc.protocol_error", peer=self.peer, ae=self.calling_ae,
                            reason=event.reason, error=event.message)
                self.server.metrics.aborts_total.labels("protocol").inc()
                self._discard_receiver()
            elif isinstance(event, ConnectionClosed):
                pass
        self._flush()

    def _on_request(self, event: AssociationRequested) -> None:
        rq = event.request
        self.calling_ae = rq.calling_ae
        server = self.server
        active = sum(1 for a in server.associations if a._counted)
        if server.draining or active >= server.config.dicom.max_associations:
            answer = local_limit_exceeded()
        else:
            answer = negotiate(rq, server.policy)
        if isinstance(answer, AssociateReject):
            log.warning("assoc.rejected", peer=self.peer, calling=rq.calling_ae,
                        called=rq.called_ae, result=answer.result, source=answer.source,
                        reason=answer.reason)
            server.metrics.associations_total.labels("rejected").inc()
            self._send(self.conn.reject(answer))
            return
        self._send(self.conn.accept(answer))
        self._counted = True
        server.metrics.associations_total.labels("accepted").inc()
        server.metrics.associations_active.inc()
        log.info("assoc.accepted", peer=self.peer, calling=rq.calling_ae, called=rq.called_ae,
                 contexts=len(self.conn.accepted_contexts))

    def _on_pdvs(self, pdvs: list) -> None:
        """Runs of data set fragments go on in one piece (one write per run, not per PDV);
        every other PDV goes through the assembler one by one."""
        assembler = self.assembler
        i, n = 0, len(pdvs)
        while i < n:
            end, last = assembler.dataset_run(pdvs, i)
            if end > i:
                self._on_data(pdvs[i].context_id, [pdv.data for pdv in pdvs[i:end]], last)
                i = end
                continue
            pdv = pdvs[i]
            i += 1
            try:
                message = assembler.receive(pdv.context_id, pdv.is_command, pdv.is_last, pdv.data)
            except DimseError as exc:
                self._protocol_abort(str(exc))
                return
            if isinstance(message, CommandReceived):
                self._on_command(message)
            elif message is not None:  # a data set fragment (dataset_run takes those first)
                self._on_data(message.context_id, [message.data], message.last)

    def _on_data(self, context_id: int, parts: list, last: bool) -> None:
        """Consecutive fragments of the data set being received, in order."""
        receiver = self.receiver
        if receiver is not None:
            if trace.ON:
                trace.stamp(receiver.trace, "data0")
                if last:  # before the hand-off: the writer thread may be done before we return
                    trace.stamp(receiver.trace, "last")
            receiver.write_parts(parts, last)
            backlog = self.server.config.dicom.disk_backlog_bytes
            if receiver.sink.queued_bytes > backlog and not self._reading_paused:
                self._pause_for_disk(receiver)
        elif self._identifier is not None and not self._identifier_overflow:
            size = sum(len(p) for p in parts)
            if len(self._identifier) + size > MAX_IDENTIFIER_BYTES:
                self._identifier_overflow = True
                self._identifier.clear()
            else:
                for p in parts:
                    self._identifier += p
        if last:
            self._dataset_complete(context_id)

    def _on_command(self, message: CommandReceived) -> None:
        command = message.command
        field = command.get(cmd.COMMAND_FIELD)
        if field == cmd.CommandField.C_CANCEL_RQ:
            # PS3.7 9.3.2.3: never answered; the operation it names ends with status Cancel
            target = command.get(cmd.MESSAGE_ID_BEING_RESPONDED_TO)
            if target in self._find_ids:
                self._cancelled.add(target)
            return
        if field == cmd.CommandField.C_STORE_RSP:
            # the peer (a C-GET SCU acting as storage SCP) answers one of our sub-operations
            waiter = self._store_waiters.pop(command.get(cmd.MESSAGE_ID_BEING_RESPONDED_TO, -1),
                                             None)
            if waiter is not None and not waiter.done():
                waiter.set_result(command)
            return
        self.request = command
        if field == cmd.CommandField.C_ECHO_RQ and not message.has_dataset:
            self._respond(message.context_id, echo_response(command))
            self.request = None
            return
        if field == cmd.CommandField.C_STORE_RQ and message.has_dataset:
            self._begin_store(message.context_id, command)
            return
        if field in _QUERY_FIELDS and message.has_dataset:
            self._identifier = bytearray()
            self._identifier_overflow = False
            self._find_ids.add(command.get(cmd.MESSAGE_ID, 0))
            return
        if not message.has_dataset:
            self._respond(message.context_id, unsupported_response(command))
            self.request = None
        # otherwise the data set is drained and answered in _dataset_complete

    def _begin_store(self, context_id: int, command: cmd.Command) -> None:
        abstract, transfer_syntax = self.conn.accepted_contexts[context_id]
        sop_class = command.get(cmd.AFFECTED_SOP_CLASS_UID, "")
        sop_instance = command.get(cmd.AFFECTED_SOP_INSTANCE_UID, "")
        if sop_class != abstract or abstract == VERIFICATION:
            self._refusal = (status.SOP_CLASS_NOT_SUPPORTED,
                             f"SOP class {sop_class} not negotiated on context {context_id}")
            return
        if not sop_instance:
            self._refusal = (status.CANNOT_UNDERSTAND, "no Affected SOP Instance UID")
            return
        self._refusal = None
        self.receiver = self.server.ingestor.begin(
            sop_class, sop_instance, transfer_syntax, source=self.calling_ae)
        if trace.ON:
            self.receiver.trace = self.receiver.sink.trace = trace.begin(id(self))

    def _dataset_complete(self, context_id: int) -> None:
        request, self.request = self.request, None
        receiver, self.receiver = self.receiver, None
        if request is None:
            return
        if request.get(cmd.COMMAND_FIELD) in _QUERY_FIELDS:
            identifier, self._identifier = self._identifier, None
            overflow, self._identifier_overflow = self._identifier_overflow, False
            run = (self._run_find if request.get(cmd.COMMAND_FIELD) == cmd.CommandField.C_FIND_RQ
                   else self._run_retrieve)
            task = asyncio.ensure_future(run(
                context_id, request, bytes(identifier or b""), overflow, self._last_find))
            self._last_find = task
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            return
        if request.get(cmd.COMMAND_FIELD) != cmd.CommandField.C_STORE_RQ:
            self._respond(context_id, unsupported_response(request))
            return
        if receiver is None:
            code, comment = self._refusal or (status.PROCESSING_FAILURE, "")
            log.warning("store.refused", ae=self.calling_ae, status=hex(code), reason=comment)
            self.server.metrics.instances("refused").inc()
            self._respond(context_id, store_refused(request, code, comment))
            return
        if trace.ON:  # stamped in _on_data already unless the last fragment came empty
            trace.stamp(receiver.trace, "last")
        # create_task, not ensure_future: no Python-level type checks for each instance
        task = asyncio.get_running_loop().create_task(
            self._finish_store(context_id, request, receiver))
        self.pending.add(task)
        task.add_done_callback(self._store_answered)
        self._stores += 1
        allowed = self.conn.peer_may_invoke
        if allowed and self._stores > allowed and not self._window_warned:
            # PS3.7 D.3.3.3 bounds what the peer may invoke but names no remedy: every store
            # is still answered once durable (memory stays bounded by disk_backlog_bytes)
            self._window_warned = True
            log.warning("store.window_exceeded", peer=self.peer, ae=self.calling_ae,
                        outstanding=self._stores, window=allowed)

    def _store_answered(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        self._stores -= 1

    async def _finish_store(self, context_id: int, request: cmd.Command,
                            receiver: Receiver) -> None:
        started = time.perf_counter()
        try:
            result = await receiver.finish()
        except Exception:
            log.exception("store.internal_error", sop=receiver.sop_instance_uid)
            self._respond(context_id, store_refused(request, status.PROCESSING_FAILURE,
                                                    "internal error"))
            return
        metrics = self.server.metrics
        metrics.store_seconds.observe(time.perf_counter() - started)
        metrics.instances(result.outcome.value).inc()
        if result.outcome.ok:
            metrics.bytes_received_total.inc(receiver.size)
        self._respond(context_id, store_response(request, result))
        if trace.ON:
            trace.stamp(receiver.trace, "responded")
        if self._draining and not self.pending - {asyncio.current_task()}:
            self.close(abort=True)

    async def _in_order(self, previous: asyncio.Task | None, context_id: int, message_id: int,
                        operation: Callable[[], Awaitable[None]], failure: bytes,
                        event: str) -> None:
        """Run one C-FIND/C-GET/C-MOVE after the one before it (no asynchronous operations
        window is negotiated); an internal error is logged and answered with ``failure``; the
        message ID is forgotten and output flushed whatever happens."""
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await operation()
        except Exception:
            log.exception(event, ae=self.calling_ae)
            self._respond(context_id, failure)
        finally:
            self._find_ids.discard(message_id)
            self._cancelled.discard(message_id)
            self._flush()
        if self._draining and not self.pending - {asyncio.current_task()}:
            self.close(abort=True)

    def _pause_for_disk(self, receiver: Receiver) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._reading_paused = True
        self.server.metrics.disk_pauses_total.inc()
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(DISK_BACKLOG_POLL_S, self._resume_when_drained,
                                              receiver)

    def _resume_when_drained(self, receiver: Receiver) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if receiver.sink.queued_bytes > self.server.config.dicom.disk_backlog_bytes // 2:
            asyncio.get_running_loop().call_later(DISK_BACKLOG_POLL_S, self._resume_when_drained,
                                                  receiver)
            return
        self._reading_paused = False
        self.transport.resume_reading()

    def _on_release(self) -> None:
        if self.pending:
            task = asyncio.ensure_future(self._release_after_pending())
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        elif not self.conn.closed:  # an A-ABORT read in the same chunk may have closed it
            with contextlib.suppress(LocalProtocolError):
                self._send(self.conn.release_reply())

    async def _release_after_pending(self) -> None:
        await self.finish_pending(exclude=asyncio.current_task())
        if not self.conn.closed:
            self._send(self.conn.release_reply())
            self._flush()

    # -- helpers ------------------------------------------------------------------------------
    def _respond(self, context_id: int, response: bytes, dataset: bytes | None = None) -> None:
        if self.conn.closed or not self.conn.established:
            return
        try:
            buffers = self.conn.send_data_buffers(context_id, True, response)
            if dataset is not None:
                buffers += self.conn.send_data_buffers(context_id, False, dataset)
        except LocalProtocolError:
            return
        if self._streaming:
            # a C-GET sub-operation's data set is half written: messages must not interleave
            self._deferred.append(buffers)
            return
        self._write_buffers(buffers)

    def _write_buffers(self, buffers: list) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(buffers)

    async def _wait_writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            if self._sink is not None and self._sink.busy:  # a sendfile is mid-PDU
                self._deferred.append([data])
                return
            self.transport.write(data)

    def _flush(self) -> None:
        self._send(self.conn.data_to_send())
        self._sync_timers()
        if self.conn.closed and self.transport is not None:
            self.transport.close()

    def _protocol_abort(self, reason: str) -> None:
        log.warning("assoc.dimse_error", peer=self.peer, ae=self.calling_ae, error=reason)
        self.server.metrics.aborts_total.labels("dimse").inc()
        self._discard_receiver()
        with contextlib.suppress(LocalProtocolError):
            self._send(self.conn.abort(ABORT_SOURCE_PROVIDER, ABORT_REASON_UNEXPECTED_PARAMETER))
        if self.transport is not None:
            self.transport.close()

    def _discard_receiver(self) -> None:
        if self.receiver is not None:
            self.receiver.discard()
            self.receiver = None

    async def finish_pending(self, exclude: asyncio.Task | None = None) -> None:
        tasks = [t for t in self.pending if t is not exclude]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def drain(self) -> None:
        """Server shutdown: abort now if idle, else once the message in progress is answered."""
        self._draining = True
        if self.assembler.idle and not self.pending:
            self.close(abort=True)

    def close(self, abort: bool) -> None:
        if abort and not self.conn.closed:
            with contextlib.suppress(LocalProtocolError):
                self._send(self.conn.abort())
        self._discard_receiver()
        if self.transport is not None:
            self.transport.close()

    def _cleanup(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self._discard_receiver()
        self._writable.set()  # wake a query waiting for the peer to read
        for waiter in self._store_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("association closed"))
                waiter.exception()
        self._store_waiters.clear()
        for handle in (self._artim, self._idle):
            if handle is not None:
                handle.cancel()
        if self in self.server.associations:
            self.server.associations.discard(self)
            if self._counted:
                self.server.metrics.associations_active.dec()

    # -- timers -------------------------------------------------------------------------------
    def _sync_timers(self) -> None:
        conn = self.conn
        if not conn.artim_running:
            if self._artim is not None:
                self._artim.cancel()
                self._artim = None
        elif conn.artim_epoch != self._artim_epoch:
            if self._artim is not None:
                self._artim.cancel()
            self._artim_epoch = conn.artim_epoch
            self._artim = asyncio.get_running_loop().call_later(
                self.server.config.dicom.acse_timeout, self._on_artim)

    def _on_artim(self) -> None:
        self._artim = None
        log.warning("assoc.artim_timeout", peer=self.peer, state=self.conn.state.name)
        self._send(self.conn.timeout())
        if self.transport is not None:
            self.transport.close()

    def _touch(self) -> None:
        self._last_activity = time.monotonic()
        timeout = self.server.config.dicom.idle_timeout
        self._idle = asyncio.get_running_loop().call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        timeout = self.server.config.dicom.idle_timeout
        idle_for = time.monotonic() - self._last_activity
        if self.pending or idle_for < timeout:
            self._idle = asyncio.get_running_loop().call_later(
                max(timeout - idle_for, 0.05), self._check_idle)
            return
        log.warning("assoc.idle_timeout", peer=self.peer, ae=self.calling_ae, seconds=timeout)
        self.server.metrics.aborts_total.labels("idle").inc()
        self.close(abort=True)


_QUERY_FIELDS = frozenset({cmd.CommandField.C_FIND_RQ, cmd.CommandField.C_GET_RQ,
                           cmd.CommandField.C_MOVE_RQ})
