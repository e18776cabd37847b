"""The fastest window-less storage SCU: the floor a receiver sets under any archive's C-MOVE.

``python -m benchmarks.store_floor HOST PORT --aec AE FILE...``

Without an asynchronous operations window (PS3.7 D.3.3.3; dcmtk and Orthanc never negotiate
one) a storage SCU has one C-STORE outstanding: it sends an instance, waits for its
C-STORE-RSP, sends the next. A C-MOVE's or C-GET's sub-operations are exactly that, so through
a given receiver no archive can move a study faster than the quickest such sender.

This is that sender, as lean as it can be made: every instance is encoded before the clock
starts (C-STORE-RQ and data set as P-DATA-TF PDUs at the receiver's maximum PDU length, in
memory, on hpacs's sans-IO upper layer), then each goes out in one ``sendall`` and the response
is read from the socket with nothing parsed but its status. No file is read and no data set
decoded on the clock: what is left is the receiver's own work per instance and the loopback
round trip. ``ms`` runs from connect to the release's reply (an association and the transfer,
as a fast C-MOVE SCU's clock does, minus the archive's own association and reads); prints JSON
and exits 0 only when every C-STORE succeeded.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hpacs.dicom.part10 import read_file_meta
from hpacs.dimse import commands as cmd
from hpacs.dimse import status
from hpacs.ul import (
    AssociateRequest,
    AssociationRejected,
    Connection,
    DataReceived,
    PresentationContext,
    ReleaseConfirmed,
    Role,
)

#: The largest PDU we accept (the responses are small; the receiver's maximum sets the sends).
MAX_PDU = 1 << 20


class FloorError(RuntimeError):
    """The receiver refused the association or a C-STORE, or went away."""


def _instances(paths: Sequence[Path]) -> list[tuple[str, str, str, bytes]]:
    """(SOP class, SOP instance, transfer syntax, data set bytes) of each Part 10 file."""
    out = []
    for path in paths:
        data = Path(path).read_bytes()
        meta = read_file_meta(data)
        if not (meta.sop_class_uid and meta.sop_instance_uid and meta.transfer_syntax_uid):
            raise FloorError(f"{path}: no SOP class, instance or transfer syntax in its meta")
        out.append((meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid,
                    data[meta.dataset_offset:]))
    return out


class _Peer:
    """A blocking socket driven through :class:`Connection`: events of what arrives."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock, self.conn = sock, conn
        self.buffer = bytearray(MAX_PDU + 6)

    def send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def events(self) -> list:
        """What the next read brings (blocks until some bytes arrive)."""
        n = self.sock.recv_into(self.buffer)
        if n == 0:
            raise FloorError("the receiver closed the connection")
        events = self.conn.receive_data(memoryview(self.buffer)[:n])
        self.send(self.conn.data_to_send())
        return events


def send(host: str, port: int, aec: str, paths: Sequence[Path], aet: str = "FLOORSCU",
         timeout: float = 60.0) -> dict:
    """Store ``paths`` at ``aec``@``host``:``port`` one C-STORE at a time; the clock and counts."""
    instances = _instances(paths)
    pairs = list(dict.fromkeys((sc, ts) for sc, _, ts, _ in instances))
    if len(pairs) > 128:
        raise FloorError("more than 128 (SOP class, transfer syntax) pairs")
    contexts = tuple(PresentationContext(1 + 2 * i, sc, (ts,)) for i, (sc, ts) in enumerate(pairs))
    conn = Connection(Role.REQUESTOR, max_pdu_length=MAX_PDU)
    started = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = _Peer(sock, conn)
        peer.send(conn.request_association(AssociateRequest(
            called_ae=aec, calling_ae=aet, max_pdu_length=MAX_PDU, presentation_contexts=contexts)))
        while not conn.established:
            for event in peer.events():
                if isinstance(event, AssociationRejected):
                    raise FloorError(f"association rejected: {event.reject}")
        context_of = {conn.accepted_contexts[cid]: cid for cid in conn.accepted_contexts}
        encoded = []
        for n, (sop_class, sop_instance, syntax, dataset) in enumerate(instances, 1):
            cid = context_of.get((sop_class, syntax))
            if cid is None:
                raise FloorError(f"{sop_class} in {syntax} was not accepted")
            request = cmd.encode_command({
                cmd.COMMAND_FIELD: int(cmd.CommandField.C_STORE_RQ),
                cmd.AFFECTED_SOP_CLASS_UID: sop_class, cmd.MESSAGE_ID: n, cmd.PRIORITY: 0,
                cmd.COMMAND_DATA_SET_TYPE: 0x0000, cmd.AFFECTED_SOP_INSTANCE_UID: sop_instance})
            encoded.append(conn.send_data(cid, True, request) + conn.send_data(cid, False, dataset))
        transfer_start = time.perf_counter()
        statuses = []
        for pdus in encoded:
            peer.send(pdus)
            statuses.append(_response_status(peer))
        transfer_ms = (time.perf_counter() - transfer_start) * 1000
        peer.send(conn.release_request())
        while not conn.closed:
            if any(isinstance(e, ReleaseConfirmed) for e in peer.events()):
                break
    finally:
        sock.close()
    failed = sum(1 for s in statuses if s != status.SUCCESS)
    return {"sent": len(statuses), "failed": failed,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            "transfer_ms": round(transfer_ms, 2),
            "bytes": sum(len(d) for *_, d in instances)}


def _response_status(peer: _Peer) -> int:
    """Status of the next C-STORE-RSP (its command is all the receiver sends back)."""
    command = bytearray()
    while True:
        for event in peer.events():
            if not isinstance(event, DataReceived):
                raise FloorError(f"unexpected {type(event).__name__} while awaiting a C-STORE-RSP")
            for pdv in event.pdvs:
                command += pdv.data
                if pdv.is_command and pdv.is_last:
                    return int(cmd.decode_command(bytes(command)).get(cmd.STATUS, -1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--aec", required=True, help="the receiver's AE title")
    p.add_argument("--aet", default="FLOORSCU", help="our AE title")
    args = p.parse_args(argv)
    try:
        result = send(args.host, args.port, args.aec, args.files, args.aet)
    except (OSError, FloorError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
