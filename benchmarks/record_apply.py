"""The index stage of ingest in-process: scanned values -> record -> duplicate check -> commit,
µs per instance, compiled kernels against the pure-Python reference in the same run.

    python -m benchmarks.record_apply [--records 1200] [--rounds 7] [--batch 1,4]

The values are those the header scanner takes from a slice of the ingest benchmark's CT corpus
(``benchmarks.corpus.ct_only``: ISO_IR 100, latin-1 names, 41 wanted elements), made into
``--records`` instances of series of 120 (one study each: the corpus's shape), each with its
own SOP Instance UID and InstanceNumber. Per instance, as ``hpacs.store.ingest`` does it:
``record_from_scan`` (*build*), the location and clock set on the record, the duplicate check
``IndexDB.get_instance`` (*lookup*), then ``IndexDB.apply`` in write transactions of
``--batch`` records (*commit*: 1 = one association's ``commit_now``, 4 = a group commit of
four associations; the transaction's begin and commit included). Sides, interleaved round by
round into fresh temporary LMDB environments (``durability = "files"``, as served):

- **compiled**: what hpacs runs (``hpacs._ext._recordkit``: the record builder, the apply
  fast path and the batch flush);
- **reference**: the pure-Python twins (``hpacs._ext.recordkit.RecordBuilder``,
  ``IndexDB.apply_general``, the twin's flush): the code of main before the kernels;
- **twin**: the twins of the kernels (the Python fast path), to show what compiling it adds.

Reports median and min-max over rounds, written to ``benchmarks/reports/record-apply-*``.
A micro-benchmark: caches are warm and nothing else competes, so the absolute µs are lower
than the same work inside the loaded server; read the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from benchmarks import corpus as corpus_mod
from benchmarks.ingest import DEFAULT_OUT, _int_list, machine_info, write_report
from benchmarks.stats import fmt_summary, summarize
from hpacs._ext import recordkit
from hpacs.dicom.scan import HeaderScanner
from hpacs.index import db as dbm
from hpacs.index import schema
from hpacs.index.db import IndexDB
from hpacs.index.schema import WANTED_TAGS, InstanceRecord, RecordError

SIDES = ("compiled", "reference", "twin")
STAGES = ("build", "lookup", "commit", "total")
SERIES = 120


def scanned_slice() -> dict[int, bytes]:
    """The wanted values of the corpus's first CT slice, as the header scanner returns them."""
    _, _, data = next(corpus_mod.iter_files(corpus_mod.ct_only(1)))
    meta_len = struct.unpack_from("<I", data, 132 + 8)[0]  # (0002,0000) group length
    sc = HeaderScanner(WANTED_TAGS, True, True)
    sc.feed(data[132 + 12 + meta_len :])
    return sc.finish()


def workload(base: dict[int, bytes], n: int) -> list[dict[int, bytes]]:
    out = []
    for i in range(n):
        v = dict(base)
        s = i // SERIES
        v[0x00080018] = f"1.2.826.0.1.3680043.8.498.9.{i}".encode()
        v[0x0020000D] = f"1.2.826.0.1.3680043.8.498.7.{s}".encode()
        v[0x0020000E] = f"1.2.826.0.1.3680043.8.498.8.{s}".encode()
        v[0x00200013] = f"{i % SERIES + 1} ".encode()
        out.append(v)
    return out


def _side(name: str, db: IndexDB) -> Callable[..., InstanceRecord]:
    """Set ``db`` up as ``name`` runs it; the record builder of that side."""
    if name == "compiled":
        assert schema.COMPILED and dbm.APPLY_COMPILED, "the kernels are not built"
        return schema.BUILDER.build
    twin = recordkit.Applier(db.dbs, dbm._DEC, dbm.InstanceEntry, dbm.order_key,
                             dbm.patient_key, dbm._ENC.encode)
    db._applier = twin
    if name == "reference":
        db.apply = db.apply_general  # type: ignore[method-assign]
    return recordkit.RecordBuilder(schema._DECODERS, InstanceRecord, RecordError).build


def run_side(name: str, values: list[dict[int, bytes]], batch: int) -> dict[str, float]:
    """µs per instance of each stage, one pass over ``values`` into a fresh index."""
    tmp = tempfile.mkdtemp(prefix="hpacs-recbench-")
    db = IndexDB(tmp, map_size=1 << 30, durability="files")
    build = _side(name, db)
    replace = msgspec.structs.replace
    t_build = t_lookup = t_commit = 0.0
    clock = time.perf_counter
    gc.disable()
    try:
        for j in range(0, len(values), batch):
            recs = []
            t0 = clock()
            for v in values[j : j + batch]:
                recs.append(build(v, "1.2.840.10008.1.2.1", "", 525_000, time.time(), True))
            t1 = clock()
            for k, rec in enumerate(recs):
                db.get_instance(rec.sop_instance_uid)
                recs[k] = replace(rec, stored_at=time.time(), path=f"ab/cd/{j + k}.dcm")
            t2 = clock()
            with db.write() as w:
                for rec in recs:
                    db.apply(w, rec)
            t3 = clock()
            t_build += t1 - t0
            t_lookup += t2 - t1
            t_commit += t3 - t2
    finally:
        gc.enable()
        n_inst = db.count("instance")
        db.close()
        shutil.rmtree(tmp)
    if n_inst != len(values):
        raise RuntimeError(f"{name}: {n_inst} instances indexed, expected {len(values)}")
    n = len(values) / 1e6
    out = {"build": t_build / n, "lookup": t_lookup / n, "commit": t_commit / n}
    out["total"] = sum(out.values())
    return out


def run(args: argparse.Namespace) -> dict:
    values = workload(scanned_slice(), args.records)
    rows: dict[tuple[int, str], list[dict[str, float]]] = {}
    for batch in args.batch:
        for side in SIDES:  # warm-up pass, not counted
            run_side(side, values[: SERIES * 2], batch)
    for r in range(args.rounds):
        for batch in args.batch:
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for side in order:
                rows.setdefault((batch, side), []).append(run_side(side, values, batch))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    results = []
    for (batch, side), runs in rows.items():
        stages = {s: summarize([run[s] for run in runs]).to_json() for s in STAGES}
        results.append({"batch": batch, "side": side, "stages": stages, "runs": runs})
    return {
        "command": " ".join(["python -m benchmarks.record_apply", *sys.argv[1:]]),
        "records": args.records,
        "rounds": args.rounds,
        "machine": machine_info(),
        "loadavg": os.getloadavg(),
        "results": results,
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Index stage in-process: {report['records']} instances, {report['rounds']} rounds",
        "",
        f"Command: `{report['command']}`; load average at the end {report['loadavg'][0]:.2f}.",
        "µs per instance, median (min-max) over rounds.",
        "",
        "| batch | side | build | lookup | commit | total | total vs reference |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    ref = {r["batch"]: r["stages"]["total"]["median"] for r in report["results"]
           if r["side"] == "reference"}
    for r in sorted(report["results"], key=lambda r: (r["batch"], SIDES.index(r["side"]))):
        cells = [fmt_summary(summarize([run[s] for run in r["runs"]]), 1) for s in STAGES]
        ratio = r["stages"]["total"]["median"] / ref[r["batch"]]
        lines.append(f"| {r['batch']} | {r['side']} | {' | '.join(cells)} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.record_apply", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1200, help="instances per pass (1200)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    ap.add_argument("--batch", type=_int_list, default=[1, 4],
                    help="records per write transaction, comma-separated (1,4)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    report = run(args)
    report["markdown"] = markdown(report)
    print(report["markdown"])
    for p in write_report(args.out, "record-apply", report):
        print(p, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
