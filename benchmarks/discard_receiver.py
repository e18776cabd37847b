"""A fast discarding DICOM receiver for the retrieve benchmark, on hpacs's sans-IO upper layer.

dcmtk's ``getscu --ignore`` / ``storescp --ignore`` still parse every data set and, by default,
advertise a 16 KB maximum PDU; timing a C-GET or C-MOVE through them measures them as much as the
server. This receiver (asyncio on uvloop, one process, ``hpacs.ul.Connection``) advertises a
1 MiB maximum PDU, never assembles a data set (it only watches for the last data fragment) and
answers each C-STORE-RQ with success the moment that fragment arrives:

- ``python -m benchmarks.discard_receiver scp --port P [--ae AE]``: storage SCP (any storage SOP
  class, any transfer syntax, C-ECHO too), many associations at once: a C-MOVE destination;
- ``python -m benchmarks.discard_receiver get HOST PORT --aec AE --study UID``: C-GET SCU (Study
  Root, STUDY level) proposing SCP role for ``--sop-class`` in the uncompressed syntaxes; prints
  the final counts as JSON and exits 0 only if the C-GET succeeded with the expected count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Receiver(asyncio.Protocol):
    """One association: answers C-STORE (and C-ECHO) requests, discards every data set.

    As a C-GET SCU it also sends the C-GET-RQ once accepted and finishes on the final
    C-GET-RSP (``done`` gets that response's command)."""

    def __init__(self, conn: Connection, policy: AcceptorPolicy | None = None,
                 get_identifier: bytes | None = None) -> None:
        self.conn = conn
        self.policy = policy
        self.get_identifier = get_identifier
        self.transport: asyncio.Transport | None = None
        self.command = bytearray()
        self.pending: dict | None = None  # the C-STORE-RQ whose data set is arriving
        self.stored = 0
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._flush()

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, AssociationRequested):
                assert self.policy is not None
                answer = negotiate(event.request, self.policy)
                self._send(self.conn.accept(answer) if isinstance(answer, AssociateAccept)
                           else self.conn.reject(answer))
            elif isinstance(event, AssociationAccepted) and self.get_identifier is not None:
                self._send_get()
            elif isinstance(event, AssociationRejected):
                self._finish(RuntimeError(f"rejected: {event.reject}"))
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
            if pdv.is_last and self.pending is not None:
                request, self.pending = self.pending, None
                self.stored += 1
                self._reply(pdv.context_id, cmd.response_to(
                    request, cmd.CommandField.C_STORE_RSP, status.SUCCESS))
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
        elif (field == cmd.CommandField.C_GET_RSP
              and command.get(cmd.STATUS) != status.PENDING):
            self._finish(command)

    def _send_get(self) -> None:
        context_id = next(cid for cid, (abstract, _) in self.conn.accepted_contexts.items()
                          if abstract == STUDY_ROOT_GET)
        request = cmd.encode_command({
            cmd.COMMAND_FIELD: int(cmd.CommandField.C_GET_RQ),
            cmd.AFFECTED_SOP_CLASS_UID: STUDY_ROOT_GET,
            cmd.MESSAGE_ID: 1,
            cmd.PRIORITY: 0,
            cmd.COMMAND_DATA_SET_TYPE: 0x0000,
        })
        assert self.get_identifier is not None
        self._send_buffers(self.conn.send_data_buffers(context_id, True, request)
                           + self.conn.send_data_buffers(context_id, False, self.get_identifier))

    def _reply(self, context_id: int, response: bytes) -> None:
        self._send_buffers(self.conn.send_data_buffers(context_id, True, response))

    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_buffers(self, buffers: list) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(buffers)

    def _flush(self) -> None:
        self._send(self.conn.data_to_send())
        if self.conn.closed and self.transport is not None:
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


async def serve(port: int, ae: str) -> None:
    loop = asyncio.get_running_loop()
    policy = AcceptorPolicy(ae_title=ae, max_pdu_length=MAX_PDU)

    def factory() -> Receiver:
        return Receiver(Connection(Role.ACCEPTOR, max_pdu_length=MAX_PDU), policy)

    server = await loop.create_server(factory, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()


def _identifier(study: str) -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return buf.getvalue()


async def get(host: str, port: int, aec: str, aet: str, study: str, sop_classes: list[str],
              expect: int | None, max_pdu: int = MAX_PDU) -> int:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    conn = Connection(Role.REQUESTOR, max_pdu_length=max_pdu)
    contexts = [PresentationContext(1, STUDY_ROOT_GET, UNCOMPRESSED[:1])]
    contexts += [PresentationContext(3 + 2 * i, uid, UNCOMPRESSED)
                 for i, uid in enumerate(sop_classes)]
    receiver = Receiver(conn, get_identifier=_identifier(study))
    transport, _ = await loop.create_connection(lambda: receiver, host, port)
    transport.write(conn.request_association(AssociateRequest(
        called_ae=aec, calling_ae=aet, presentation_contexts=tuple(contexts),
        max_pdu_length=max_pdu, role_selections=tuple(
            RoleSelection(uid, False, True) for uid in sop_classes))))
    final = await asyncio.wait_for(receiver.done, 600)
    with contextlib.suppress(Exception):
        transport.write(conn.release_request())
        await asyncio.wait_for(receiver.closed, 5)  # the peer's A-RELEASE-RP, then close
    transport.close()
    completed = final.get(cmd.COMPLETED_SUBOPERATIONS, 0)
    print(json.dumps({"status": hex(final.get(cmd.STATUS, -1)), "completed": completed,
                      "failed": final.get(cmd.FAILED_SUBOPERATIONS, 0),
                      "received": receiver.stored,
                      "ms": round((time.perf_counter() - started) * 1000, 2)}))
    ok = final.get(cmd.STATUS) == status.SUCCESS and (expect is None or receiver.stored == expect)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("scp")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ae", default="DISCARD")
    g = sub.add_parser("get")
    g.add_argument("host")
    g.add_argument("port", type=int)
    g.add_argument("--aec", required=True)
    g.add_argument("--aet", default="BENCHGET")
    g.add_argument("--study", required=True)
    g.add_argument("--sop-class", action="append", default=None)
    g.add_argument("--expect", type=int)
    g.add_argument("--max-pdu", type=int, default=MAX_PDU)
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "scp":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.ae))
        return 0
    return asyncio.run(get(args.host, args.port, args.aec, args.aet, args.study,
                           args.sop_class or [CT_IMAGE_STORAGE], args.expect, args.max_pdu))


if __name__ == "__main__":
    sys.exit(main())
