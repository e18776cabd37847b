"""The servers under test, started through ``benchmarks.peers`` with what the suite needs.

hpacs: ``hpacs serve`` (defaults) plus a TOML config naming the C-MOVE destinations.
Orthanc: Debian's Orthanc with the DICOMweb plugin, the bench's AEs in ``DicomModalities``
(C-FIND/C-GET/C-MOVE callers and destinations) and ``TCP_NODELAY=1`` (peers.py does that).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from benchmarks import peers as peers_mod
from benchmarks.dicomweb import ORTHANC_DICOMWEB

SERVERS = ("hpacs", "orthanc")
#: Calling AE of the suite's DIMSE clients (findscu, getscu, movescu, pynetdicom).
CLIENT_AE = "BENCH"


@contextlib.contextmanager
def start(name: str, workdir: Path, *,
          remotes: dict[str, int] | None = None) -> Iterator[peers_mod.Peer]:
    """Run server ``name`` in ``workdir``; ``remotes``: move destination AE -> port on loopback."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    remotes = remotes or {}
    if name == "hpacs":
        conf = workdir / "hpacs-bench.toml"
        conf.write_text("".join(
            f'[[remote]]\nae_title = "{ae}"\nhost = "{peers_mod.LOOPBACK}"\nport = {port}\n\n'
            for ae, port in remotes.items()))
        with peers_mod.hpacs(workdir, extra_args=["--config", str(conf)]) as peer:
            yield peer
    elif name == "orthanc":
        modalities = {ae.lower(): [ae, peers_mod.LOOPBACK, port] for ae, port in remotes.items()}
        modalities.setdefault("bench", [CLIENT_AE, peers_mod.LOOPBACK, 104])
        extra = {"Plugins": [ORTHANC_DICOMWEB],
                 "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                 "DicomModalities": modalities}
        with peers_mod.orthanc(workdir, extra_config=extra) as peer:
            yield peer
    else:
        raise peers_mod.PeerError(f"unknown server {name!r}; known: {', '.join(SERVERS)}")


def instance_count(peer: peers_mod.Peer) -> int:
    """Instances the server holds by its own account: hpacs's index (opened read-only, as
    ``hpacs send`` does while the server runs), Orthanc's ``/statistics``."""
    if peer.name == "hpacs":
        from hpacs.index.db import IndexDB
        from hpacs.store.archive import INDEX_DIR

        db = IndexDB(peer.data_dir / INDEX_DIR, readonly=True)
        try:
            return db.count("instance")
        finally:
            db.close()
    return int(peers_mod.orthanc_rest(peer, "/statistics")["CountInstances"])


def dicomweb_base(peer: peers_mod.Peer) -> str:
    return f"http://{peers_mod.LOOPBACK}:{peer.http_port}/dicom-web"


def wait_metadata(peer: peers_mod.Peer, instances: int, timeout: float = 300.0) -> float:
    """Seconds until hpacs has precomputed the series metadata of ``instances`` (part of its
    ingest, not of a request); Orthanc has nothing to wait for."""
    if peer.name != "hpacs":
        return 0.0
    t0 = time.monotonic()
    url = f"http://{peers_mod.LOOPBACK}:{peer.http_port}/metrics"
    while True:
        with urllib.request.urlopen(url, timeout=10) as r:
            m = re.search(r"^hpacs_metadata_warmed (\S+)$", r.read().decode(), re.M)
        if m and float(m.group(1)) >= instances:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise peers_mod.PeerError(f"hpacs metadata not warmed in {timeout:.0f} s")
        time.sleep(0.2)
