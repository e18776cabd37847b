"""The C-FIND SCP's own work per query, in-process: parse the identifier, run the query engine,
encode every match's identifier, as ``hpacs.net.find_service`` does minus the network.

Run by path by ``benchmarks.query_ab`` (``python benchmarks/find_cpu.py SPEC.json``) with
``PYTHONPATH`` pointing at the hpacs tree under test, so one script times both sides of an A/B:
it uses the row path (``QueryEngine.row_pages`` + ``MatchEncoder.encode_rows``) when the tree
has it, else the merged-dict path (``pages`` + ``MatchEncoder.encode``). SPEC: ``{"index":
DIR, "repeat": N, "queries": [{"shape": ..., "identifier": HEX}, ...]}``; prints a JSON list,
per query: matches, and the median over ``repeat`` runs of wall and thread-CPU milliseconds.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import hpacs
from hpacs.dimse.find import MatchEncoder, parse_find
from hpacs.index.db import IndexDB
from hpacs.index.query import QueryEngine

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def run_one(engine: QueryEngine, identifier: bytes) -> int:
    req = parse_find(STUDY_ROOT_FIND, identifier, EXPLICIT_LE)
    encoder = MatchEncoder(req, retrieve_ae="HPACS")
    n = 0
    if hasattr(engine, "row_pages") and hasattr(encoder, "encode_rows"):
        encode = encoder.encode_rows
        for page in engine.row_pages(req.query):
            for rows in page:
                encode(rows)
                n += 1
    else:
        encode = encoder.encode
        for page in engine.pages(req.query):
            for match in page:
                encode(match)
                n += 1
    return n


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    db = IndexDB(spec["index"], readonly=True)
    engine = QueryEngine(db)
    out = []
    try:
        for q in spec["queries"]:
            identifier = bytes.fromhex(q["identifier"])
            run_one(engine, identifier)  # warm: the same pages, cached as the server has them
            walls, cpus = [], []
            for _ in range(spec["repeat"]):
                w, c = time.perf_counter(), time.thread_time()
                n = run_one(engine, identifier)
                cpus.append(time.thread_time() - c)
                walls.append(time.perf_counter() - w)
            out.append({"shape": q["shape"], "matches": n,
                        "wall_ms": statistics.median(walls) * 1000,
                        "cpu_ms": statistics.median(cpus) * 1000})
    finally:
        db.close()
    json.dump({"hpacs": hpacs.__file__, "results": out}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
