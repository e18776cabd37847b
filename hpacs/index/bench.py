"""Index micro-benchmarks (a script, not a test): ``python -m hpacs.index.bench [--quick]``.

Measures µs per ``record_from_scan`` and records/s through the writer per durability mode,
batch size (max_batch, with as many concurrent submitters) and writemap setting.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import timeit

import pydicom
import pydicom.data
from pydicom.dataelem import RawDataElement

from hpacs.index.db import IndexDB
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, record_from_scan
from hpacs.index.writer import IndexWriter


def _raw_values(path: str) -> dict[int, bytes]:
    ds = pydicom.dcmread(path)
    vals = {}
    for tag in WANTED_TAGS:
        if tag in ds:
            item = ds.get_item(tag)
            if isinstance(item, RawDataElement):
                vals[tag] = bytes(item.value or b"")
            else:
                v = item.value
                vals[tag] = (v if isinstance(v, str) else "\\".join(v)).encode()
    return vals


def bench_scan(n: int = 20000) -> dict[str, float]:
    out = {}
    ct = _raw_values(pydicom.data.get_testdata_file("CT_small.dcm"))
    jp = _raw_values(pydicom.data.get_charset_files("chrH31.dcm")[0])
    jp.update(
        {0x00080018: b"1.2.3.4", 0x00080016: b"1.2.3", 0x0020000D: b"1.2", 0x0020000E: b"1.3"}
    )
    for name, vals in (("CT_small (ASCII)", ct), ("chrH31 (ISO 2022 JIS)", jp)):

        def call(vals=vals) -> InstanceRecord:
            return record_from_scan(
                vals, transfer_syntax="1.2.840.10008.1.2.1", path="x", size=1, stored_at=0.0
            )

        best = min(timeit.repeat(call, number=n, repeat=3)) / n
        out[f"{name}, {len(vals)} values"] = best * 1e6
    return out


def _record(i: int) -> InstanceRecord:
    study, series = f"1.2.{i // 500}", f"1.2.{i // 500}.{i // 100}"
    return InstanceRecord(
        sop_instance_uid=f"1.2.826.0.1.3680043.{i}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_uid=study,
        series_uid=series,
        patient_id=f"PID{i // 1000}",
        issuer_of_patient_id="",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"ab/cd/{i}.dcm",
        size=525_000,
        stored_at=time.time(),
        patient={"PatientID": f"PID{i // 1000}", "PatientName": f"DOE^JOHN{i // 1000}",
                 "PatientBirthDate": "19700101", "PatientSex": "M"},
        study={"StudyInstanceUID": study, "StudyDate": "20240102", "StudyTime": "101010",
               "AccessionNumber": f"A{i // 500}", "StudyDescription": "CT CHEST"},
        series={"SeriesInstanceUID": series, "Modality": "CT", "SeriesNumber": str(i // 100),
                "SeriesDescription": "AXIAL 1mm", "Manufacturer": "ACME"},
        instance={"SOPInstanceUID": f"1.2.826.0.1.3680043.{i}", "InstanceNumber": str(i % 100),
                  "Rows": 512, "Columns": 512, "BitsAllocated": 16,
                  "ImagePositionPatient": f"-100\\-100\\{i % 100}",
                  "ImageOrientationPatient": "1\\0\\0\\0\\1\\0"},
    )  # fmt: skip


async def _writer_run(durability: str, batch: int, n: int, writemap: bool) -> tuple[float, int]:
    tmp = tempfile.mkdtemp(prefix="hpacs-ixbench-")
    db = IndexDB(tmp, map_size=8 << 30, durability=durability, writemap=writemap)
    w = IndexWriter(db, max_batch=batch, sync_interval=1.0)
    await w.start()
    recs = [_record(i) for i in range(n)]
    it = iter(recs)

    async def worker() -> None:  # one "association": submits one record at a time
        for r in it:
            await w.submit(r)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(batch)))
    dt = time.perf_counter() - t0
    commits = w.stats.commits
    await w.stop()
    db.close()
    shutil.rmtree(tmp)
    return n / dt, commits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print("record_from_scan:")
    for k, v in bench_scan(5000 if args.quick else 20000).items():
        print(f"  {k}: {v:.1f} µs/record")
    print("writer (records/s; submitters == max_batch):")
    for durability in ("files", "sync"):
        for writemap in (True, False):
            for batch in (1, 8, 64):
                n = {"files": 20000, "sync": 3000 if batch > 1 else 400}[durability]
                if args.quick:
                    n //= 4
                rate, commits = asyncio.run(_writer_run(durability, batch, n, writemap))
                print(
                    f"  {durability:5} writemap={writemap!s:5} batch={batch:3}: "
                    f"{rate:9.0f} rec/s  ({commits} commits for {n})"
                )


if __name__ == "__main__":
    main()
