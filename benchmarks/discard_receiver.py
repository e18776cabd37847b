"""A fast discarding DICOM peer for the benchmarks, on hpacs's sans-IO upper layer.

dcmtk's ``getscu --ignore`` / ``storescp --ignore`` still parse every data set and, by default,
advertise a 16 KB maximum PDU; timing a C-GET or C-MOVE through them measures them as much as the
server. This receiver (asyncio on uvloop, one process, ``hpacs.ul.Connection``) advertises a
1 MiB maximum PDU, never assembles a data set (it only watches for the last data fragment) and
answers each C-STORE-RQ with success the moment that fragment arrives:

- ``python -m benchmarks.discard_receiver scp --port P [--ae AE]``: storage SCP (any storage SOP
  class, any transfer syntax, C-ECHO too), many associations at once: a C-MOVE destination
  (``--count-file F`` keeps the number of data sets received in F; ``--window N`` grants a
  requestor proposing an asynchronous operations window up to N outstanding C-STOREs);
- ``python -m benchmarks.discard_receiver get HOST PORT --aec AE --study UID``: C-GET SCU (Study
  Root, STUDY level) proposing SCP role for ``--sop-class`` in the uncompressed syntaxes (and
  each ``--syntax``; ``--window N`` proposes performing up to N C-STOREs at once); prints
  the final counts, bytes, its own clock and CPU as JSON, and exits 0 only if the C-GET
  succeeded with the expected count;
- ``python -m benchmarks.discard_receiver move HOST PORT --aec AE --dest AE --study UID``: C-MOVE
  SCU (Study Root, STUDY level) moving the study to ``--dest``; prints the final counts and its
  own clock, connect to release, as JSON (``benchmarks.retrieve``'s ``fmove`` cells: movescu's
  start-up, 30-50 ms on this machine, is then not in the time), exits 0 only if the C-MOVE
  succeeded with the expected count;
- :class:`FindSCU` (used by ``benchmarks.query`` and ``hpacs bench query``): sequential C-FINDs on
  one association that count the pending responses and never decode an identifier, so a query
  with 1,000 matches costs the client a few µs per match (pynetdicom: ~1 ms, dcmtk findscu ~26 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from hpacs.dimse import commands as cmd
from hpacs.dimse import status
from hpacs.ul import (
    AcceptorPolicy,
    AssociateAccept,
    AssociateRequest,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    Connection,
    DataReceived,
    PresentationContext,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
    RoleSelection,
    negotiate,
)

MAX_PDU = 1 << 20
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
#: Pending statuses of C-FIND/C-GET responses (PS3.4 C.4.1.1.4: 0xFF01 = optional keys unsupported).
PENDING = (status.PENDING, 0xFF01)
_HEADER = struct.Struct("<HHI")
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def response_status(data) -> tuple[int, int]:
    """(CommandField, Status) of an Implicit VR LE command set, -1 where absent: a walk over
    the element headers that decodes nothing else (a C-FIND answers each match with one)."""
    field = code = -1
    pos, end = 0, len(data)
    while pos + 8 <= end:
        group, elem, length = _HEADER.unpack_from(data, pos)
        pos += 8
        if group != 0 or pos + length > end:
            return -1, -1
        if length == 2 and elem in (0x0100, 0x0900):
            value = data[pos] | data[pos + 1] << 8
            if elem == 0x0100:
                field = value
            else:
                code = value
        pos += length
    return field, code


class Tally:
    """The SCP's count of data sets received over all associations, kept in a file (rewritten
    before each C-STORE-RSP goes out) so a benchmark can check a C-MOVE delivered them all."""

    def __init__(self, path: str | None) -> None:
        self.count = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644) if path else None
        self.add(0)

    def add(self, n: int = 1) -> None:
        self.count += n
        if self.fd is not None:
            os.pwrite(self.fd, b"%20d\n" % self.count, 0)


#: Responses to what a requestor sent, counted while pending, the final one ends ``done``.
_REQUESTED_RSP = (cmd.CommandField.C_FIND_RSP, cmd.CommandField.C_GET_RSP,
                  cmd.CommandField.C_MOVE_RSP)

#: Bytes the receiver asks the socket for per read (one reused buffer, see Receiver.get_buffer).
READ_SIZE = 1 << 20


class Receiver(asyncio.BufferedProtocol):
    """One association: answers C-STORE (and C-ECHO) requests, discards every data set.

    As a requestor it sends C-GET/C-MOVE/C-FIND requests (:meth:`request`; with
    ``get_identifier`` the C-GET, or with ``move_destination`` too the C-MOVE, goes out once
    accepted), counts their pending responses in ``pending_responses``
    and finishes ``done`` with the final response's command.

    Reads go into one reused 1 MiB buffer (``recv_into``: no new ``bytes`` per read, and
    reads up to 1 MiB instead of the loop's 256 KiB); nothing keeps a view of it past
    :meth:`buffer_updated` (data PDVs are only counted, a command's bytes are copied). What one read
    answers goes out in one write when it has been handled."""

    def __init__(self, conn: Connection, policy: AcceptorPolicy | None = None,
                 get_identifier: bytes | None = None, tally: Tally | None = None,
                 move_destination: str | None = None) -> None:
        self.conn = conn
        self.policy = policy
        self.get_identifier = get_identifier
        self.move_destination = move_destination
        self.tally = tally
        self.data_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.command = bytearray()
        self.pending: dict | None = None  # the C-STORE-RQ whose data set is arriving
        self.stored = 0
        self.pending_responses = 0
        self.message_id = 0
        self.accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self._buffer = memoryview(bytearray(READ_SIZE))
        self._batch: list | None = None  # writes held while a read is handled

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        """Handle one read; what it answers (C-STORE-RSPs of the data sets it completed) goes
        out in one write at the end, not a send per response."""
        self._batch = []
        try:
            self.data_received(self._buffer[:nbytes])
        finally:
            self.flush_batch()
            self._batch = None

    def flush_batch(self) -> None:
        """Write what the read being handled has answered so far (now, not at its end)."""
        batch, self._batch = self._batch, None
        if batch:
            self._send_buffers(batch)
        if batch is not None:
            self._batch = []

    def data_received(self, data) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, AssociationRequested):
                assert self.policy is not None
                answer = negotiate(event.request, self.policy)
                self._send(self.conn.accept(answer) if isinstance(answer, AssociateAccept)
                           else self.conn.reject(answer))
            elif isinstance(event, AssociationAccepted):
                if not self.accepted.done():
                    self.accepted.set_result(None)
                if self.get_identifier is None:
                    pass
                elif self.move_destination is not None:
                    self.request(STUDY_ROOT_MOVE, cmd.CommandField.C_MOVE_RQ,
                                 self.get_identifier, self.move_destination)
                else:
                    self.request(STUDY_ROOT_GET, cmd.CommandField.C_GET_RQ, self.get_identifier)
            elif isinstance(event, AssociationRejected):
                error = RuntimeError(f"rejected: {event.reject}")
                if not self.accepted.done():
                    self.accepted.set_exception(error)
                self._finish(error)
            elif isinstance(event, DataReceived):
                for pdv in event.pdvs:
                    self._pdv(pdv)
            elif isinstance(event, ReleaseRequested):
                self._send(self.conn.release_reply())
            elif isinstance(event, ReleaseConfirmed):
                pass
        self._flush()

    def _pdv(self, pdv) -> None:
        if not pdv.is_command:
            self.data_bytes += len(pdv.data)
            if pdv.is_last and self.pending is not None:
                request, self.pending = self.pending, None
                self.stored += 1
                if self.tally is not None:
                    self.tally.add()
                self._reply(pdv.context_id, cmd.response_to(
                    request, cmd.CommandField.C_STORE_RSP, status.SUCCESS))
            return
        if pdv.is_last and not self.command:
            field, code = response_status(pdv.data)
            if code in PENDING and field in _REQUESTED_RSP:
                self.pending_responses += 1  # the common case, without decoding the command
                return
        self.command += pdv.data
        if not pdv.is_last:
            return
        command = cmd.decode_command(bytes(self.command))
        self.command.clear()
        field = command.get(cmd.COMMAND_FIELD)
        if field == cmd.CommandField.C_STORE_RQ:
            self.pending = command
        elif field == cmd.CommandField.C_ECHO_RQ:
            self._reply(pdv.context_id, cmd.response_to(
                command, cmd.CommandField.C_ECHO_RSP, status.SUCCESS))
        elif field in _REQUESTED_RSP:
            if command.get(cmd.STATUS) in PENDING:
                self.pending_responses += 1
            else:
                self._finish(command)

    def request(self, sop_class: str, field: int, identifier: bytes,
                move_destination: str | None = None) -> asyncio.Future:
        """Send a C-GET/C-MOVE/C-FIND request with ``identifier`` (encoded in the context's
        transfer syntax) on the context accepted for ``sop_class``; returns the future of its
        final response (``done``), with ``pending_responses`` counted from zero."""
        context_id = next(cid for cid, (abstract, _) in self.conn.accepted_contexts.items()
                          if abstract == sop_class)
        self.message_id += 1
        self.pending_responses = 0
        if self.done.done():
            self.done = asyncio.get_running_loop().create_future()
        elements = {
            cmd.COMMAND_FIELD: int(field),
            cmd.AFFECTED_SOP_CLASS_UID: sop_class,
            cmd.MESSAGE_ID: self.message_id,
            cmd.PRIORITY: 0,
            cmd.COMMAND_DATA_SET_TYPE: 0x0000,
        }
        if move_destination is not None:
            elements[cmd.MOVE_DESTINATION] = move_destination
        request = cmd.encode_command(elements)
        self._send_buffers(self.conn.send_data_buffers(context_id, True, request)
                           + self.conn.send_data_buffers(context_id, False, identifier))
        return self.done

    def _reply(self, context_id: int, response: bytes) -> None:
        self._send_buffers(self.conn.send_data_buffers(context_id, True, response))

    def _send(self, data: bytes) -> None:
        if data:
            self._send_buffers([data])

    def _send_buffers(self, buffers: list) -> None:
        if self._batch is not None:
            self._batch += buffers
        elif buffers and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(buffers)

    def _flush(self) -> None:
        self._send(self.conn.data_to_send())
        if self.conn.closed and self.transport is not None:
            self.flush_batch()
            self.transport.close()

    def _finish(self, result) -> None:
        if not self.done.done():
            if isinstance(result, BaseException):
                self.done.set_exception(result)
                self.done.exception()  # an SCP association never awaits it
            else:
                self.done.set_result(result)

    def connection_lost(self, exc) -> None:
        self._finish(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


async def serve(port: int, ae: str, count_file: str | None = None, window: int = 1) -> None:
    loop = asyncio.get_running_loop()
    policy = AcceptorPolicy(ae_title=ae, max_pdu_length=MAX_PDU, async_window=window)
    tally = Tally(count_file)

    def factory() -> Receiver:
        return Receiver(Connection(Role.ACCEPTOR, max_pdu_length=MAX_PDU), policy, tally=tally)

    server = await loop.create_server(factory, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


class FindSCU:
    """Study Root C-FINDs, one at a time, on one association (``await FindSCU.connect(...)``;
    TCP_NODELAY on).

    :meth:`find` returns the number of pending responses, i.e. matches; the identifiers are
    received and dropped undecoded. Load generation, not a general client: the query is an
    already encoded identifier (:func:`identifier`)."""

    def __init__(self, receiver: Receiver, transport: asyncio.Transport) -> None:
        self.receiver = receiver
        self.transport = transport

    @classmethod
    async def connect(cls, host: str, port: int, called_ae: str, calling_ae: str = "BENCHFIND",
                      timeout: float = 30.0) -> FindSCU:
        loop = asyncio.get_running_loop()
        conn = Connection(Role.REQUESTOR, max_pdu_length=MAX_PDU)
        receiver = Receiver(conn)
        transport, _ = await loop.create_connection(lambda: receiver, host, port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(conn.request_association(AssociateRequest(
            called_ae=called_ae, calling_ae=calling_ae, max_pdu_length=MAX_PDU,
            presentation_contexts=(PresentationContext(1, STUDY_ROOT_FIND, UNCOMPRESSED[:1]),))))
        try:
            await asyncio.wait_for(receiver.accepted, timeout)
        except BaseException:
            transport.close()
            raise
        if not any(abstract == STUDY_ROOT_FIND for abstract, _ in conn.accepted_contexts.values()):
            transport.close()
            raise RuntimeError(f"{called_ae}@{host}:{port} did not accept Study Root FIND")
        return cls(receiver, transport)

    async def find(self, identifier: bytes, timeout: float = 600.0) -> int:
        done = self.receiver.request(STUDY_ROOT_FIND, cmd.CommandField.C_FIND_RQ, identifier)
        timer = asyncio.get_running_loop().call_later(timeout, done.cancel)
        try:
            final = await done
        except asyncio.CancelledError:
            if timer.cancelled():
                raise
            raise TimeoutError(f"no final C-FIND response in {timeout} s") from None
        finally:
            timer.cancel()
        code = final.get(cmd.STATUS)
        if code != status.SUCCESS:
            raise RuntimeError(f"C-FIND failed with status 0x{code:04X}")
        return self.receiver.pending_responses

    async def timed(self, identifiers: list[bytes],
                    timeout: float = 600.0) -> tuple[list[float], list[int]]:
        """Seconds (request sent -> final response) and matches of each C-FIND, in order."""
        times, counts = [], []
        for ident in identifiers:
            t0 = time.perf_counter()
            counts.append(await self.find(ident, timeout))
            times.append(time.perf_counter() - t0)
        return times, counts

    async def release(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            self.transport.write(self.receiver.conn.release_request())
            await asyncio.wait_for(self.receiver.closed, timeout)
        self.transport.close()


def _study_identifier(study: str) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return identifier(ds)


def identifier(ds: Dataset) -> bytes:
    """``ds`` in explicit VR little endian, the one syntax :class:`FindSCU` proposes."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


async def _retrieve(host: str, port: int, receiver: Receiver, request: AssociateRequest,
                    expect: int | None, received) -> int:
    """Connect, run the request ``receiver`` sends once accepted, release; print the final
    counts and the clock (connect to release) as JSON. 0 only for a Success with ``expect``
    instances (``received(receiver, final)`` counts them)."""
    loop = asyncio.get_running_loop()
    started, cpu0 = time.perf_counter(), time.process_time()
    transport, _ = await loop.create_connection(lambda: receiver, host, port)
    transport.write(receiver.conn.request_association(request))
    final = await asyncio.wait_for(receiver.done, 600)
    with contextlib.suppress(Exception):
        transport.write(receiver.conn.release_request())
        await asyncio.wait_for(receiver.closed, 5)  # the peer's A-RELEASE-RP, then close
    transport.close()
    count = received(receiver, final)
    print(json.dumps({"status": hex(final.get(cmd.STATUS, -1)),
                      "completed": final.get(cmd.COMPLETED_SUBOPERATIONS, 0),
                      "failed": final.get(cmd.FAILED_SUBOPERATIONS, 0),
                      "received": count, "bytes": receiver.data_bytes,
                      "pending_responses": receiver.pending_responses,
                      "window": list(receiver.conn.async_window),
                      "ms": round((time.perf_counter() - started) * 1000, 2),
                      "cpu_ms": round((time.process_time() - cpu0) * 1000, 2)}))
    ok = final.get(cmd.STATUS) == status.SUCCESS and (expect is None or count == expect)
    return 0 if ok else 1


async def get(host: str, port: int, aec: str, aet: str, study: str, sop_classes: list[str],
              expect: int | None, max_pdu: int = MAX_PDU, syntaxes: tuple[str, ...] = (),
              window: int = 1) -> int:
    contexts = [PresentationContext(1, STUDY_ROOT_GET, UNCOMPRESSED[:1])]
    offered = tuple(dict.fromkeys((*syntaxes, *UNCOMPRESSED)))
    contexts += [PresentationContext(3 + 2 * i, uid, offered)
                 for i, uid in enumerate(sop_classes)]
    conn = Connection(Role.REQUESTOR, max_pdu_length=max_pdu)
    request = AssociateRequest(
        called_ae=aec, calling_ae=aet, presentation_contexts=tuple(contexts),
        max_pdu_length=max_pdu, role_selections=tuple(
            RoleSelection(uid, False, True) for uid in sop_classes),
        # one C-GET invoked; up to `window` of the server's C-STOREs performed at once
        async_ops_window=(1, window) if window != 1 else None)
    return await _retrieve(host, port, Receiver(conn, get_identifier=_study_identifier(study)),
                           request, expect, lambda receiver, _final: receiver.stored)


async def move(host: str, port: int, aec: str, aet: str, study: str, dest: str,
               expect: int | None) -> int:
    """A C-MOVE of ``study`` to ``dest``: the instances arrive there, so the count checked is
    the final response's Completed (the benchmark also counts what the destination got)."""
    conn = Connection(Role.REQUESTOR, max_pdu_length=MAX_PDU)
    request = AssociateRequest(
        called_ae=aec, calling_ae=aet, max_pdu_length=MAX_PDU,
        presentation_contexts=(PresentationContext(1, STUDY_ROOT_MOVE, UNCOMPRESSED[:1]),))
    receiver = Receiver(conn, get_identifier=_study_identifier(study), move_destination=dest)
    return await _retrieve(host, port, receiver, request, expect,
                           lambda _receiver, final: final.get(cmd.COMPLETED_SUBOPERATIONS, 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scp")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ae", default="DISCARD")
    s.add_argument("--count-file", help="keep the number of data sets received in this file")
    s.add_argument("--window", type=int, default=1,
                   help="grant a requestor up to N outstanding C-STOREs (asynchronous "
                        "operations window, PS3.7 D.3.3.3) when it proposes a window")
    g = sub.add_parser("get")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("--aec", required=True)
    g.add_argument("--aet", default="BENCHGET")
    g.add_argument("--study", required=True)
    g.add_argument("--sop-class", action="append", default=None)
    g.add_argument("--expect", type=int)
    g.add_argument("--max-pdu", type=int, default=MAX_PDU)
    g.add_argument("--syntax", action="append", default=[],
                   help="transfer syntax to accept besides the uncompressed ones")
    g.add_argument("--window", type=int, default=1,
                   help="propose performing up to N of the server's C-STOREs at once "
                        "(asynchronous operations window; 1 = propose none, as dcmtk)")
    m = sub.add_parser("move")
    m.add_argument("host")
    m.add_argument("port", type=int)
    m.add_argument("--aec", required=True)
    m.add_argument("--aet", default="BENCHGET")
    m.add_argument("--dest", required=True, help="the move destination's AE title")
    m.add_argument("--study", required=True)
    m.add_argument("--expect", type=int)
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "scp":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.ae, args.count_file, args.window))
        return 0
    if args.mode == "move":
        return asyncio.run(move(args.host, args.port, args.aec, args.aet, args.study,
                                args.dest, args.expect))
    return asyncio.run(get(args.host, args.port, args.aec, args.aet, args.study,
                           args.sop_class or [CT_IMAGE_STORAGE], args.expect, args.max_pdu,
                           tuple(args.syntax), args.window))


if __name__ == "__main__":
    sys.exit(main())
