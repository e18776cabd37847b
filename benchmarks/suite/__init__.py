"""`hpacs bench`: the sizing suite (issue 7): ingest, query, retrieve and mixed scenarios.

Why here and not in ``hpacs/``: the suite drives servers from the outside, like a hospital's
modalities and viewers would, and it reuses the existing benchmark pieces (``benchmarks.peers``
to start hpacs/Orthanc/storescp, ``benchmarks.corpus``, ``benchmarks.fill``/``query``,
``benchmarks.dicomweb``). The server package must not import benchmark tooling (imports point
down), and ``benchmarks`` is not installed, so ``hpacs bench`` (``hpacs.cli``) puts the source
checkout on ``sys.path`` and delegates to :mod:`benchmarks.suite.cli`; it works from the repo
after ``make install`` (``python -m benchmarks.suite`` too) and says so when run elsewhere.

Load generation runs in worker processes separate from the server (our asyncio storage SCU,
aiohttp viewers, dcmtk getscu/movescu), and their CPU time is reported beside the server's.
"""
