"""C-GET and C-MOVE on an association (PS3.4 C.4.2, C.4.3): sub-operations and their counts.

A mixin of ``net.dimse_server.Association``: C-GET sends C-STORE sub-operations on the same
association, C-MOVE through our own storage SCU (``net.storage_scu``); the statuses and
identifier rules live in ``dimse.retrieve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from hpacs.dimse import commands as cmd
from hpacs.dimse import status
from hpacs.dimse.find import (
    STATUS_UNABLE_TO_PROCESS,
    FindError,
)
from hpacs.dimse.retrieve import (
    GET_SOP_CLASSES,
    MOVE_SOP_CLASSES,
    STATUS_MOVE_DESTINATION_UNKNOWN,
    SubOperations,
    choose_context,
    parse_retrieve,
    refused,
    response_field_for,
    store_outcome,
    store_request,
)
from hpacs.log import get_logger
from hpacs.net.filesend import SocketSink, sendfile_wanted
from hpacs.net.storage_scu import (
    AssociationFailed,
    SendError,
    StorageSCU,
    StoredInstance,
    response_status,
    send_instance,
    start_open,
    storage_contexts,
    stored_instance,
)
from hpacs.net.window import Outstanding
from hpacs.ul import LocalProtocolError

log = get_logger("hpacs.dimse")

#: Presentation contexts that fit in one A-ASSOCIATE-RQ (odd context IDs 1..255).
MAX_CONTEXTS = 128



class RetrieveService:
    """The C-GET / C-MOVE half of an association."""

    #: The asynchronous operations window the last C-GET/C-MOVE's sub-operations ran with.
    _sub_window = 1
    #: The association's socket for ``sendfile`` of C-GET data sets (made on first use).
    _sink: SocketSink | None = None
    #: Data sets the last C-GET/C-MOVE sent by ``sendfile`` (logged with its outcome).
    _sub_sendfile = 0
    #: Cached files read and written instead, the transport still holding earlier bytes.
    _sub_sendfile_busy = 0

    #: The last C-MOVE's sub-associations still to release (after its final response).
    _to_release: list[StorageSCU] | None = None
    #: ms from the first sub-association's connect to its A-ASSOCIATE-AC (last C-MOVE).
    _sub_connect_ms: float | None = None

    def _release_sub_associations(self) -> int:
        """Release the C-MOVE's sub-associations in the background, after its final response
        went out: the C-MOVE SCU need not wait for the A-RELEASE exchange with the destination
        (PS3.4 C.4.2.3 asks for the final response once the sub-operations are complete; the
        sub-association's release is not one of them). Returns how many."""
        scus, self._to_release = self._to_release or [], None
        for scu in scus:
            task = asyncio.ensure_future(scu.release())
            _RELEASING.add(task)
            task.add_done_callback(_RELEASING.discard)
        return len(scus)

    def _get_sink(self) -> SocketSink:
        if self._sink is None:
            self._sink = SocketSink(self.transport)
        return self._sink

    async def _run_retrieve(self, context_id: int, request: cmd.Command, identifier: bytes,
                            overflow: bool, previous: asyncio.Task | None) -> None:
        """Answer one C-GET or C-MOVE, after the operation before it (no async ops window)."""
        message_id = request.get(cmd.MESSAGE_ID, 0)
        rsp_field = response_field_for(request.get(cmd.COMMAND_FIELD, 0))
        await self._in_order(
            previous, context_id, message_id,
            lambda: self._retrieve(context_id, request, identifier, overflow, message_id,
                                   rsp_field),
            refused(request, rsp_field, STATUS_UNABLE_TO_PROCESS, "internal error"),
            "retrieve.internal_error")

    async def _retrieve(self, context_id: int, request: cmd.Command, identifier: bytes,
                        overflow: bool, message_id: int, rsp_field: int) -> None:
        abstract, transfer_syntax = self.conn.accepted_contexts[context_id]
        sop_class = request.get(cmd.AFFECTED_SOP_CLASS_UID, "")
        is_get = rsp_field == cmd.CommandField.C_GET_RSP
        models = GET_SOP_CLASSES if is_get else MOVE_SOP_CLASSES
        if sop_class != abstract or sop_class not in models:
            self._respond(context_id, refused(
                request, rsp_field, status.SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {sop_class} not negotiated on context {context_id}"))
            return
        if overflow:
            self._respond(context_id, refused(request, rsp_field, status.OUT_OF_RESOURCES,
                                              "identifier larger than 1 MiB"))
            return
        config = self.server.config
        remote = None
        if not is_get:
            destination = request.get(cmd.MOVE_DESTINATION, "")
            remote = config.remote_ae(destination)
            if remote is None:
                log.warning("move.unknown_destination", ae=self.calling_ae,
                            destination=destination)
                self._respond(context_id, refused(
                    request, rsp_field, STATUS_MOVE_DESTINATION_UNKNOWN,
                    f"move destination {destination!r} unknown"))
                return
        try:
            rq = parse_retrieve(sop_class, identifier, transfer_syntax)
        except FindError as exc:
            log.warning("retrieve.refused", ae=self.calling_ae, status=hex(exc.status),
                        reason=exc.comment)
            self._respond(context_id, refused(request, rsp_field, exc.status, exc.comment,
                                              exc.offending))
            return
        started = time.perf_counter()
        items = await self._list_instances(rq.query)
        listed = time.perf_counter()
        subops = SubOperations(request, rsp_field, total=len(items),
                               explicit_vr=rq.explicit_vr, little_endian=rq.little_endian)
        if self.conn.closed:
            return
        comment = ""
        self._sub_window = self._get_window() if is_get else 1
        self._sub_sendfile = self._sub_sendfile_busy = 0
        waits = self._get_sink().waits
        if is_get:
            cancelled = await self._get_suboperations(context_id, message_id, items, subops)
        else:
            assert remote is not None
            try:
                cancelled, comment = await self._move_suboperations(
                    context_id, request, message_id, remote, items, subops)
            except BaseException:
                self._release_sub_associations()
                raise
        if self.conn.closed:
            self._release_sub_associations()
            return
        final, ident = subops.final(cancelled, comment)
        self._respond(context_id, final, ident)
        released = self._release_sub_associations()
        log.info("get.done" if is_get else "move.done", ae=self.calling_ae, qr_level=rq.level,
                 destination=remote.ae_title if remote else None, total=subops.total,
                 completed=subops.completed, failed=subops.failed, warning=subops.warning,
                 status=hex(subops.final_status(cancelled)), window=self._sub_window,
                 sendfile=self._sub_sendfile, sendfile_busy=self._sub_sendfile_busy,
                 sendfile_waits=self._get_sink().waits - waits,
                 ms=round((time.perf_counter() - started) * 1000, 2),
                 **({} if is_get else {"list_ms": round((listed - started) * 1000, 2),
                                       "connect_ms": self._sub_connect_ms,
                                       "released_after": released}))

    async def _list_instances(self, query) -> list[StoredInstance]:
        """Every instance the query selects (UIDs and paths only, never data), page by page:
        the instance entries of the matches' rows as they are (an IMAGE-level query: the
        match's own row is its instance entry; no merged attributes, no second look-up)."""
        data_dir = os.fspath(self.server.ingestor.hot.data_dir)
        tiers = self.server.tiers
        out: list[StoredInstance] = []
        pages = self.server.query_engine.row_pages(query, page_size=256, views=False)
        try:
            for page in pages:
                out += [stored_instance(rows[-1], data_dir, tiers) for rows in page]
                await asyncio.sleep(0)
                if self.conn.closed:
                    break
        finally:
            pages.close()
        return out

    @property
    def _allow_lossy(self) -> bool:
        """Lossy transcoding for a peer that accepted only lossy syntaxes (config, default no)."""
        return self.server.config.pixels.allow_lossy_transcode

    @property
    def _transcode_workers(self) -> int:
        return self.server.config.pixels.transcode_workers

    def _stop_reason(self, message_id: int) -> str | None:
        if message_id in self._cancelled:
            return "cancel"
        if self.conn.closed or not self.conn.established:
            return "closed"
        if self._draining:
            return "draining"
        return None

    def _get_window(self) -> int:
        """C-STORE sub-operations a C-GET keeps outstanding: what the peer said it performs
        (PS3.7 D.3.3.3; 1 when it negotiated no window), within ``dicom.async_window``."""
        ours = max(1, self.server.config.dicom.async_window)
        granted = self.conn.we_may_invoke
        return min(granted, ours) if granted else ours

    async def _get_suboperations(self, context_id: int, message_id: int,
                                 items: list[StoredInstance], subops: SubOperations) -> bool:
        """C-STORE each instance back on this association; True if cancelled.

        Up to the negotiated window of sub-operations are outstanding (one without a window):
        each C-STORE-RQ goes out whole (command and data set, never interleaved with another),
        the responses are matched by Message ID in whatever order they come. The next instance
        is read while responses are awaited, so the disk and the network overlap. A pending
        C-GET-RSP per answered sub-operation rides in the same write as the next C-STORE-RQ
        (one send, one wake-up of the peer); once nothing is left to invoke it goes out alone.
        On C-CANCEL no further sub-operation is invoked and the outstanding ones are awaited:
        the Cancel response counts every answer."""
        accepted = self.conn.accepted_contexts
        accept = self.conn.accept_pdu
        scp_classes = {r.sop_class_uid for r in (accept.role_selections if accept else ())
                       if r.scp_role}
        allowed = {cid for cid, (abstract, _) in accepted.items() if abstract in scp_classes}
        choices = [choose_context(accepted, item.sop_class_uid, item.transfer_syntax_uid,
                                  allowed, allow_lossy=self._allow_lossy) for item in items]
        upcoming = self._open_ahead(items, choices, 0)
        window = Outstanding(self._get_window())
        held: list = []  # pending responses not written yet (framed PDUs)
        try:
            for i, item in enumerate(items):
                while window.full:
                    self._get_answered(await self._get_wait(window), context_id, subops, held)
                self._get_answered(window.done(), context_id, subops, held)
                reason = self._stop_reason(message_id)
                if reason is not None:
                    await self._get_drain(window, context_id, subops, held)
                    if reason == "cancel":
                        return True
                    subops.fail_remaining([it.sop_instance_uid for it in items[i:]])
                    return False
                opening, upcoming = upcoming, self._open_ahead(items, choices, i + 1)
                choice = choices[i]
                if choice is None or opening is None:
                    log.warning("get.no_context", ae=self.calling_ae, sop=item.sop_instance_uid,
                                sop_class=item.sop_class_uid, ts=item.transfer_syntax_uid)
                    self._get_answered([(item.sop_instance_uid, "failed")], context_id, subops,
                                       held)
                    continue
                invoked = await self._get_invoke(item, choice[0], opening, held)
                if isinstance(invoked, str):
                    self._get_answered([(item.sop_instance_uid, invoked)], context_id, subops,
                                       held)
                else:
                    window.add(item.sop_instance_uid, invoked)
                if not self._writable.is_set():
                    await self._writable.wait()
            await self._get_drain(window, context_id, subops, held)
            return False  # a C-CANCEL after the last invocation cancels nothing
        finally:
            window.cancel()
            self._write_held(held)
            if upcoming is not None:
                upcoming.add_done_callback(_close_opened)
                upcoming.cancel()

    async def _get_drain(self, window: Outstanding, context_id: int, subops: SubOperations,
                         held: list) -> None:
        """Await every outstanding sub-operation, writing each pending response at once."""
        while len(window):
            self._get_answered(await self._get_wait(window), context_id, subops, held)
            self._write_held(held)
        self._write_held(held)

    async def _get_wait(self, window: Outstanding) -> list:
        """Answered sub-operations: at least one, or, when none answered within
        ``dicom.idle_timeout``, every outstanding one given up (failed; each of them has
        then waited at least that long for its response)."""
        answered = await window.wait(self.server.config.dicom.idle_timeout)
        if answered or not len(window):
            return answered
        expired = window.expire()
        gone = {id(fut) for _, fut in expired}
        for mid in [m for m, w in self._store_waiters.items() if id(w) in gone]:
            del self._store_waiters[mid]
        log.warning("get.response_timeout", ae=self.calling_ae, outstanding=len(expired))
        return expired

    def _get_answered(self, answered: list, context_id: int, subops: SubOperations,
                      held: list) -> None:
        """Count answered sub-operations ((SOP Instance UID, outcome or the finished future of
        the peer's C-STORE-RSP)) and queue a pending response while some remain.

        One C-STORE outstanding (no window): a pending response after each sub-operation,
        as before. Under a window, one pending response for all the sub-operations answered
        since the last one went out: a held (unwritten) one is replaced by the newer counts.
        PS3.4 C.4.3.3 makes pending responses optional; the final response's counts are
        exact either way (checked with pynetdicom, dcmtk getscu)."""
        for uid, outcome in answered:
            if not isinstance(outcome, str):
                outcome = _store_rsp_outcome(outcome)
            subops.record(uid, outcome)
            if subops.remaining and not self.conn.closed:
                if self._sub_window != 1:
                    held.clear()  # only pending responses wait there: superseded
                with contextlib.suppress(LocalProtocolError):
                    held += self.conn.send_data_buffers(context_id, True, subops.pending())

    def _get_region(self) -> bool:
        """This C-GET's data sets may go by ``sendfile`` (``dicom.sendfile`` and its window)."""
        return self._get_sink().usable and sendfile_wanted(
            self.server.config.dicom.sendfile, self._sub_window)

    def _open_ahead(self, items: list[StoredInstance], choices: list,
                    i: int) -> asyncio.Future | None:
        """Start opening (reading, or transcoding) item ``i`` if it can be sent."""
        if i >= len(items) or choices[i] is None:
            return None
        return start_open(items[i], choices[i][1], allow_lossy=self._allow_lossy,
                          workers=self._transcode_workers, region=self._get_region())

    def _write_held(self, held: list) -> None:
        """Write a held pending response now (nothing follows it to carry it)."""
        if held and not self.conn.closed:
            self._write_buffers(held)
            held.clear()

    async def _get_invoke(self, item: StoredInstance, context_id: int, opening: asyncio.Future,
                          held: list) -> str | asyncio.Future:
        """Invoke one C-GET sub-operation: our C-STORE-RQ on the peer's association (after
        ``held``, pending responses, in the same write). Returns the outcome when it failed
        before going out, else the future of the peer's C-STORE-RSP command (an exception
        when the association goes; the idle timeout is :meth:`_get_wait`'s)."""
        try:
            opened = await opening
        except SendError as exc:
            log.warning("get.unreadable", sop=item.sop_instance_uid, error=str(exc))
            return "failed"
        message_id = next(self._sub_ids) & 0xFFFF or next(self._sub_ids)
        waiter = asyncio.get_running_loop().create_future()
        self._store_waiters[message_id] = waiter
        command = store_request(message_id, item.sop_class_uid, item.sop_instance_uid)
        self._streaming = True
        before = held[:]
        held.clear()  # written with the command, or lost with the association
        region = opened.fd is not None  # cached: sendfile unless the transport holds bytes
        try:
            if await send_instance(self.conn, self._write_buffers, self._wait_writable,
                                   context_id, command, opened, before=before,
                                   sink=self._get_sink()):
                self._sub_sendfile += 1
            elif region:
                self._sub_sendfile_busy += 1
        except LocalProtocolError:
            self._store_waiters.pop(message_id, None)
            return "failed"
        except OSError as exc:
            self._store_waiters.pop(message_id, None)
            self._protocol_abort(f"read error while sending {item.sop_instance_uid}: {exc}")
            return "failed"
        finally:
            opened.close()
            self._streaming = False
            deferred, self._deferred = self._deferred, []
            for bufs in deferred:
                self._write_buffers(bufs)
        return waiter  # the C-STORE-RSP, matched by Message ID (no task per sub-operation)

    async def _move_suboperations(self, context_id: int, request: cmd.Command, message_id: int,
                                  remote, items: list[StoredInstance],
                                  subops: SubOperations) -> tuple[bool, str]:
        """C-STORE each instance to the destination on our own association(s).

        PS3.4 C.4.2 only requires the C-STORE sub-operations to run on an association other
        than the C-MOVE's; C.4.2.3.1 words it as "reuse an established and compatible
        Association or establish a new Association ... over that Association", i.e. one.
        ``dicom.move_associations`` > 1 opens that many associations to the destination at
        once and splits the instances between them (each association still has one C-STORE
        outstanding, PS3.7 10.1.1's default window): the counts, statuses and Failed SOP
        Instance UID List of the C-MOVE responses are those of the whole set. It is off (1) by
        default: a destination may limit associations per calling AE, and the wording above
        reads as one; docs/CONFORMANCE.md says so."""
        if not items:
            return False, ""
        config = self.server.config
        contexts = storage_contexts(items)[:MAX_CONTEXTS]
        wanted = max(1, min(config.dicom.move_associations, len(items)))
        plan = _MovePlan(items)
        originator = (self.calling_ae, message_id)
        self._sub_connect_ms = None
        # one sub-association: released after the final response; several: each as soon as
        # it is out of instances (a destination serving one association at a time may hold
        # the others' A-ASSOCIATE until then)
        self._to_release = [] if wanted == 1 else None
        async with asyncio.TaskGroup() as group:
            for _ in range(wanted):
                scu = StorageSCU(remote.host, remote.port, called_ae=remote.ae_title,
                                 calling_ae=config.server.ae_title, contexts=contexts,
                                 timeout=config.dicom.acse_timeout,
                                 async_window=config.dicom.async_window,
                                 sendfile=config.dicom.sendfile)
                group.create_task(self._move_association(scu, plan, subops, context_id,
                                                         message_id, originator, remote))
        leftover = plan.leftover()
        self._sub_window = plan.window
        if plan.stop == "cancel":
            return True, plan.comment
        if leftover:  # closed, draining, or no sub-association left to send them
            subops.fail_remaining([items[i].sop_instance_uid for i in leftover])
        # a sub-association that failed while others sent everything is only logged
        return False, plan.comment if subops.failed else ""

    async def _move_association(self, scu: StorageSCU, plan: _MovePlan, subops: SubOperations,
                                context_id: int, message_id: int, originator: tuple[str, int],
                                remote) -> None:
        """One sub-association: connect, send what is left in ``plan``, release at once (a
        destination serving one association at a time then accepts the next one)."""
        connecting = time.perf_counter()
        try:
            await scu.connect()
        except AssociationFailed as exc:
            log.warning("move.destination_failed", ae=self.calling_ae,
                        destination=remote.ae_title, error=str(exc))
            plan.comment = plan.comment or f"destination {remote.ae_title}: {exc}"
            await scu.release()
            return
        if self._sub_connect_ms is None:
            self._sub_connect_ms = round((time.perf_counter() - connecting) * 1000, 2)
        later = False
        try:
            await self._move_worker(scu, plan, subops, context_id, message_id, originator,
                                    remote)
            # sent everything: released after the final C-MOVE response
            later = self._to_release is not None and plan.exhausted and scu.alive
        finally:
            self._sub_sendfile += scu.sent_by_sendfile
            if later:
                self._to_release.append(scu)  # type: ignore[union-attr]
            else:
                await scu.release()

    async def _move_worker(self, scu: StorageSCU, plan: _MovePlan, subops: SubOperations,
                           context_id: int, message_id: int, originator: tuple[str, int],
                           remote) -> None:
        """Send instances taken from ``plan`` on one sub-association until none is left.

        Up to the window the destination granted (1 unless it answered an asynchronous
        operations window) C-STOREs are outstanding; the next instance is opened while
        responses are awaited. On a lost association the instances in flight fail and the one
        opened ahead goes back to the plan for the other sub-associations."""
        window = Outstanding(scu.window)
        plan.window = max(plan.window, scu.window)
        ahead = self._move_open(scu, plan)
        try:
            while ahead is not None:
                while window.full:
                    await self._move_answered(await self._move_wait(window, scu), context_id,
                                              subops, plan, remote, scu)
                await self._move_answered(window.done(), context_id, subops, plan, remote,
                                          scu)
                reason = self._stop_reason(message_id)
                if reason is not None:
                    plan.stop = plan.stop or reason
                    break
                if not scu.alive:  # lost while no response was awaited
                    self._move_lost(scu, plan, remote, AssociationFailed(scu.failure or "lost"))
                    break
                (i, sub_context, opening), ahead = ahead, self._move_open(scu, plan)
                item = plan.items[i]
                if opening is None:
                    log.warning("move.no_context", destination=remote.ae_title,
                                sop=item.sop_instance_uid, sop_class=item.sop_class_uid,
                                ts=item.transfer_syntax_uid)
                    await self._move_answered([(item.sop_instance_uid, "failed")], context_id,
                                              subops, plan, remote, scu)
                    continue
                try:
                    opened = await opening
                except SendError as exc:
                    log.warning("move.unreadable", sop=item.sop_instance_uid, error=str(exc))
                    await self._move_answered([(item.sop_instance_uid, "failed")], context_id,
                                              subops, plan, remote, scu)
                    continue
                try:
                    response = await scu.invoke(item, sub_context, opened,
                                                move_originator=originator, untimed=True)
                except (AssociationFailed, OSError) as exc:
                    self._move_lost(scu, plan, remote, exc)
                    await self._move_answered([(item.sop_instance_uid, "failed")], context_id,
                                              subops, plan, remote, scu)
                    break
                finally:
                    opened.close()
                window.add(item.sop_instance_uid, response)
            while len(window):
                await self._move_answered(await self._move_wait(window, scu), context_id,
                                          subops, plan, remote, scu)
        finally:
            window.cancel()
            if ahead is not None:
                plan.give_back(ahead[0])
                if ahead[2] is not None:
                    ahead[2].add_done_callback(_close_opened)
                    ahead[2].cancel()

    @staticmethod
    async def _move_wait(window: Outstanding, scu: StorageSCU) -> list:
        """Answered sub-operations: at least one; when none came within the association's
        timeout, it is aborted and every outstanding one fails with it (as a timed-out
        response does on :meth:`StorageSCU.invoke`'s own awaitable)."""
        answered = await window.wait(scu.timeout)
        if answered or not len(window):
            return answered
        scu.abort("no C-STORE response in time")  # fails every outstanding response
        return await window.wait()

    def _move_lost(self, scu: StorageSCU, plan: _MovePlan, remote, exc: Exception) -> None:
        """Log a lost sub-association once and name it in the C-MOVE's Error Comment."""
        if id(scu) in plan.lost:
            return
        plan.lost.add(id(scu))
        log.warning("move.association_lost", destination=remote.ae_title, error=str(exc))
        plan.comment = f"destination {remote.ae_title}: {exc}"

    async def _move_answered(self, answered: list, context_id: int, subops: SubOperations,
                             plan: _MovePlan, remote, scu: StorageSCU) -> None:
        """Count answered sub-operations ((SOP Instance UID, outcome or finished task giving
        the C-STORE-RSP status)), each followed by a pending C-MOVE response; under a window
        (several C-STOREs outstanding) one pending response for the ones answered together
        (optional responses, PS3.4 C.4.2.1.5; the counts stay exact)."""
        for uid, outcome in answered:
            if not isinstance(outcome, str):
                try:
                    outcome = store_outcome(response_status(outcome))
                except (AssociationFailed, OSError) as exc:
                    self._move_lost(scu, plan, remote, exc)
                    outcome = "failed"
            subops.record(uid, outcome)
            if scu.window == 1:
                await self._move_pending(context_id, subops)
        if scu.window != 1 and answered:
            await self._move_pending(context_id, subops)

    def _move_open(self, scu: StorageSCU,
                   plan: _MovePlan) -> tuple[int, int, asyncio.Future | None] | None:
        """Take the next instance from ``plan`` and start opening it for ``scu``: (index,
        presentation context, opening task), the task None when no context fits."""
        i = plan.take()
        if i is None:
            return None
        item = plan.items[i]
        choice = choose_context(scu.accepted_contexts, item.sop_class_uid,
                                item.transfer_syntax_uid, allow_lossy=self._allow_lossy)
        if choice is None:
            return i, 0, None
        return i, choice[0], start_open(item, choice[1], allow_lossy=self._allow_lossy,
                                        workers=self._transcode_workers, region=scu.sendfile)

    async def _move_pending(self, context_id: int, subops: SubOperations) -> None:
        if subops.remaining and not self.conn.closed:
            self._respond(context_id, subops.pending())
            if not self._writable.is_set():
                await self._writable.wait()


class _MovePlan:
    """The instances of one C-MOVE, shared by the workers of its sub-associations (one loop:
    no locks): each index is taken once, or given back when its worker stops first."""

    def __init__(self, items: list[StoredInstance]) -> None:
        self.items = items
        self._next = 0
        self._returned: list[int] = []
        #: Why a worker stopped taking instances ("cancel", "closed", "draining"), if it did.
        self.stop: str | None = None
        self.comment = ""
        #: The largest asynchronous operations window a sub-association was granted.
        self.window = 1
        #: Sub-associations (ids) found lost, each logged once.
        self.lost: set[int] = set()

    def take(self) -> int | None:
        if self._returned:
            return self._returned.pop()
        if self._next >= len(self.items):
            return None
        self._next += 1
        return self._next - 1

    def give_back(self, i: int) -> None:
        self._returned.append(i)

    @property
    def exhausted(self) -> bool:
        """Every instance was taken (no other worker waits for one)."""
        return not self._returned and self._next >= len(self.items)

    def leftover(self) -> list[int]:
        """Indexes no worker sent (and nobody will)."""
        out = sorted(self._returned) + list(range(self._next, len(self.items)))
        self._returned, self._next = [], len(self.items)
        return out


#: Sub-association releases under way after their C-MOVE's final response (kept referenced).
_RELEASING: set[asyncio.Future] = set()


def _store_rsp_outcome(response: asyncio.Future) -> str:
    """The outcome of a C-GET sub-operation from the future of its C-STORE-RSP: failed when
    the association went or its response was given up."""
    if response.cancelled() or response.exception() is not None:
        return "failed"
    return store_outcome(int(response.result().get(cmd.STATUS, status.PROCESSING_FAILURE)))


def _close_opened(task: asyncio.Future) -> None:
    """Release an instance opened ahead for a sub-operation that will not run."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()
