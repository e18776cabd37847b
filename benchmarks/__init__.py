"""hpacs benchmarks: a deterministic corpus generator and benchmarks against reference peers.

Benchmarks are programs (``python -m benchmarks.ingest``), not timed unit tests; the small
tests in ``tests/benchmarks`` only check that their pieces are right.
"""
