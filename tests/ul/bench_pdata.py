"""P-DATA throughput (not a test): ``.venv/bin/python -m tests.ul.bench_pdata``.

Measures decode_pdata alone, the whole Connection.receive_data path fed in socket-sized chunks
(framer reassembly of PDUs straddling chunks included) with the compiled P-DATA path and with its
pure-Python twin side by side, and send_data encoding.
"""

from __future__ import annotations

import time

from hpacs._ext import _pdata, pdata
from hpacs.ul import Connection, Role, connection, decode_pdata, encode_pdata
from hpacs.ul.pdu import AssociateAccept, PresentationContextResult
from tests.ul._ulref import a_associate_rq


def _rate(nbytes: int, fn, min_time: float = 0.5) -> float:
    loops = 0
    t0 = time.perf_counter()
    while True:
        fn()
        loops += 1
        dt = time.perf_counter() - t0
        if dt > min_time:
            return nbytes * loops / dt / 1e6


def main() -> None:
    total = 64 << 20
    for pdu in (16 * 1024, 1 << 20):
        body = b"".join(encode_pdata(1, False, bytes(total), pdu))
        # decode_pdata alone, PDU bodies pre-cut
        bodies = []
        off = 0
        mv = memoryview(body)
        while off < len(body):
            n = int.from_bytes(body[off + 2 : off + 6], "big")
            bodies.append(mv[off + 6 : off + 6 + n])
            off += 6 + n
        r = _rate(total, lambda bodies=bodies: [decode_pdata(b) for b in bodies])
        print(f"decode_pdata       PDU {pdu >> 10:5d} KiB: {r:9.0f} MB/s")
        for chunk in (64 * 1024, 256 * 1024):
            chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]

            def run(chunks=chunks, pdu=pdu) -> None:
                conn = Connection(Role.ACCEPTOR, max_pdu_length=max(pdu, 16384))
                conn.receive_data(a_associate_rq())
                conn.accept(
                    AssociateAccept(
                        called_ae="HPACS",
                        calling_ae="STORESCU",
                        presentation_contexts=(
                            PresentationContextResult(1, 0, "1.2.840.10008.1.2"),
                        ),
                        max_pdu_length=max(pdu, 16384),
                    )
                )
                for c in chunks:
                    conn.receive_data(c)

            label = f"PDU {pdu >> 10:5d} KiB, {chunk >> 10:3d} KiB reads"
            for name, impl in (("C", _pdata.PDataFramer), ("twin", pdata.PDataFramer)):
                connection.PDataFramer = impl  # type: ignore[misc]
                r = _rate(total, run)
                print(f"receive_data {name:4s}  {label}: {r:7.0f} MB/s")
            connection.PDataFramer = _pdata.PDataFramer  # type: ignore[misc]
        payload = bytes(total)
        r = _rate(total, lambda pdu=pdu, payload=payload: encode_pdata(1, False, payload, pdu))
        print(f"encode_pdata bufs  PDU {pdu >> 10:5d} KiB: {r:9.0f} MB/s")
        r = _rate(
            total, lambda pdu=pdu, payload=payload: b"".join(encode_pdata(1, False, payload, pdu))
        )
        print(f"encode_pdata join  PDU {pdu >> 10:5d} KiB: {r:9.0f} MB/s")


if __name__ == "__main__":
    main()
