"""C-FIND on an association (PS3.4 C.4.1): the query streamed as pending responses.

A mixin of ``net.dimse_server.Association``: the protocol plumbing (responding, flushing,
back-pressure, cancellation sets) lives there; the query rules in ``dimse.find`` and
``index.query``.
"""

from __future__ import annotations

import asyncio
import time

from hpacs.dimse import commands as cmd
from hpacs.dimse import status
from hpacs.dimse.find import (
    FIND_SOP_CLASSES,
    STATUS_UNABLE_TO_PROCESS,
    FindError,
    MatchEncoder,
    final_response,
    parse_find,
    pending_response,
    too_many_matches,
)
from hpacs.index.rowkernels import frame_matches
from hpacs.log import get_logger
from hpacs.ul import LocalProtocolError

log = get_logger("hpacs.dimse")



class FindService:
    """The C-FIND half of an association."""

    async def _run_find(self, context_id: int, request: cmd.Command, identifier: bytes,
                        overflow: bool, previous: asyncio.Task | None) -> None:
        """Answer one C-FIND: pending responses streamed page by page, then the final one.

        Requests on one association are answered in order (no asynchronous operations are
        negotiated): wait for the previous C-FIND first. Each page is read in its own short LMDB
        read transaction; the loop is yielded between pages (and while the peer is not reading)
        so ingest on other associations keeps flowing.
        """
        message_id = request.get(cmd.MESSAGE_ID, 0)
        await self._in_order(
            previous, context_id, message_id,
            lambda: self._find(context_id, request, identifier, overflow, message_id),
            final_response(request, STATUS_UNABLE_TO_PROCESS, "internal error"),
            "find.internal_error")

    async def _find(self, context_id: int, request: cmd.Command, identifier: bytes,
                    overflow: bool, message_id: int) -> None:
        abstract, transfer_syntax = self.conn.accepted_contexts[context_id]
        sop_class = request.get(cmd.AFFECTED_SOP_CLASS_UID, "")
        if sop_class != abstract or sop_class not in FIND_SOP_CLASSES:
            self._respond(context_id, final_response(
                request, status.SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {sop_class} not negotiated on context {context_id}"))
            return
        if overflow:
            self._respond(context_id, final_response(request, status.OUT_OF_RESOURCES,
                                                     "identifier larger than 1 MiB"))
            return
        config = self.server.config
        try:
            req = parse_find(sop_class, identifier, transfer_syntax,
                             case_insensitive_names=config.query.case_insensitive_names)
        except FindError as exc:
            log.warning("find.refused", ae=self.calling_ae, status=hex(exc.status),
                        reason=exc.comment)
            self._respond(context_id, final_response(request, exc.status, exc.comment,
                                                     exc.offending))
            return
        started, cpu_started = time.perf_counter(), time.thread_time()
        limit = config.query.max_matches
        ae = config.server.ae_title
        sent = 0
        final: bytes | None = None
        # the same pending command PDU for every match, framed once per page through the
        # connection (its state check holds for the page: nothing runs between the matches of a
        # page, so neither a C-CANCEL nor a close can arrive inside one); each identifier is
        # encoded from the match's index rows and the page framed into one buffer by the
        # compiled kernel: one write (one send, one wake-up of the peer) per page of up to 64
        # matches
        encode = MatchEncoder(req, retrieve_ae=ae).encode_rows
        pending = pending_response(request, req)
        pages = self.server.query_engine.row_pages(req.query)
        try:
            for page in pages:
                if message_id in self._cancelled or self.conn.closed:
                    break
                if len(page) > limit - sent:
                    page = page[:limit - sent]
                    final = too_many_matches(request, limit)
                if page:
                    try:
                        pending_pdu = b"".join(
                            self.conn.send_data_buffers(context_id, True, pending))
                    except LocalProtocolError:
                        break  # the association went away
                    self._send(frame_matches(encode, page, pending_pdu, context_id,
                                             self.conn.send_limit))
                    sent += len(page)
                if final is not None or self.conn.closed:
                    break
                if message_id in self._cancelled:
                    final = final_response(request, status.CANCEL)
                    break
                if self._draining:
                    final = final_response(request, status.OUT_OF_RESOURCES,
                                           "server shutting down")
                    break
                await asyncio.sleep(0)  # let other associations run between pages
                if not self._writable.is_set():
                    await self._writable.wait()
        finally:
            pages.close()
        if final is None:
            cancelled = message_id in self._cancelled
            final = final_response(request, status.CANCEL if cancelled else status.SUCCESS)
        self._respond(context_id, final)
        # ms: wall time, waiting for the peer to read included; cpu_ms: the loop thread's CPU
        # time meanwhile (this query's own work when the loop has nothing else to do)
        log.info("find.done", ae=self.calling_ae, qr_level=req.level, matches=sent,
                 ms=round((time.perf_counter() - started) * 1000, 2),
                 cpu_ms=round((time.thread_time() - cpu_started) * 1000, 2))

    # -- C-GET / C-MOVE -------------------------------------------------------------------------
