"""C-GET and C-MOVE of one 100-slice CT study, hpacs beside Orthanc (issue 3's retrieve benchmark).

``python -m benchmarks.retrieve --instances 100 --rounds 5``

Both servers hold the same study (benchmarks/dicomweb.py's one-series CT corpus, ~52 MB, sent
with dcmtk ``storescu``). dcmtk tools retrieve it, with ``TCP_NODELAY=1`` like every peer here:

- C-GET: ``getscu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=...``, receiving with
  ``--ignore`` (received and acknowledged, not stored: the client's disk is not measured) and
  writing files (``-od DIR``);
- C-MOVE: ``movescu -S -aem DEST`` to a dcmtk ``storescp`` destination that discards
  (``--ignore``) or writes files. (movescu moving to itself with ``--port`` takes ~1.4 s for
  either server: a client artefact, so separate destinations are used.)

Rounds alternate the servers; each cell is the median wall time over rounds (min-max) of the
whole command, association set-up included, and the instance count received is checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import peers as peers_mod
from benchmarks.dicomweb import DEFAULT_WORKDIR, load, series_corpus
from benchmarks.ingest import machine_info
from benchmarks.stats import fmt_ratio, ratio, summarize

GET_AE = "BENCHGET"
DISCARD_AE = "DISCARD"
FILES_AE = "FILES"


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=peers_mod.nodelay_env(), capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exit {out.returncode}: {out.stderr[-2000:]}")
    return wall


def retrieve_once(peer: peers_mod.Peer, study: str, mode: str, ignore: bool,
                  files_dest: peers_mod.Peer) -> tuple[float, int | None]:
    """(wall seconds, files written or None when discarded) of one C-GET or C-MOVE."""
    keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    with tempfile.TemporaryDirectory(prefix="bench-retrieve-") as out:
        if mode == "get":
            storage = ["--ignore"] if ignore else ["-od", out]
            cmd = [peers_mod.dcmtk("getscu"), "-aet", GET_AE, "-aec", peer.ae_title,
                   *keys, *storage, peer.host, str(peer.port)]
            wall = _timed(cmd)
            return wall, None if ignore else _count_files(Path(out))
    if not ignore:
        shutil.rmtree(files_dest.data_dir)
        files_dest.data_dir.mkdir()
    cmd = [peers_mod.dcmtk("movescu"), "-aet", GET_AE, "-aec", peer.ae_title,
           "-aem", DISCARD_AE if ignore else FILES_AE, *keys, peer.host, str(peer.port)]
    wall = _timed(cmd)
    return wall, None if ignore else _count_files(files_dest.data_dir)


def run(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    paths, uids, _sops, manifest = series_corpus(workdir, args.instances)
    for name in ("retrieve-hpacs", "retrieve-orthanc", "retrieve-discard", "retrieve-files"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    report: dict = {"machine": machine_info(), "instances": len(paths),
                    "bytes": manifest["total_bytes"], "rounds": [], "command": args.command}
    with peers_mod.storescp(workdir / "retrieve-discard", ignore=True, fork=False,
                            ae=DISCARD_AE) as discard, \
            peers_mod.storescp(workdir / "retrieve-files", fork=False, ae=FILES_AE) as files:
        (workdir / "retrieve-hpacs").mkdir(parents=True)
        config = workdir / "retrieve-hpacs" / "hpacs.toml"
        config.write_text("".join(
            f'[[remote]]\nae_title = "{d.ae_title}"\nhost = "{d.host}"\nport = {d.port}\n'
            for d in (discard, files)))
        modalities = {d.ae_title.lower(): [d.ae_title, d.host, d.port]
                      for d in (discard, files)}
        # Orthanc answers C-GET only to a known modality (the port is not used by C-GET)
        modalities["getscu"] = [GET_AE, "127.0.0.1", discard.port]
        orthanc_extra = {"DicomModalities": modalities}
        with peers_mod.hpacs(workdir / "retrieve-hpacs",
                             extra_args=["--config", str(config)]) as hp, \
                peers_mod.orthanc(workdir / "retrieve-orthanc",
                                  extra_config=orthanc_extra) as orth:
            servers = {"hpacs": hp, "orthanc": orth}
            report["versions"] = {"orthanc": orth.info.get("version"),
                                  "dcmtk": peers_mod.dcmtk_version()}
            for name, peer in servers.items():
                print(f"loading {len(paths)} instances into {name}: "
                      f"{load(peer, paths):.1f} s", flush=True)
            cells = [(mode, ignore) for mode in ("get", "move") for ignore in (True, False)]
            for rnd in range(args.rounds):
                order = list(servers.items()) if rnd % 2 == 0 else list(servers.items())[::-1]
                for name, peer in order:
                    for mode, ignore in cells:
                        wall, n = retrieve_once(peer, uids["study"], mode, ignore, files)
                        if n is not None and n != len(paths):
                            raise RuntimeError(f"{name} {mode}: {n} files, not {len(paths)}")
                        row = {"server": name, "round": rnd + 1, "mode": mode,
                               "receiver": "ignore" if ignore else "files", "ms": wall * 1000}
                        report["rounds"].append(row)
                        print(json.dumps(row), flush=True)
    return report


def markdown(report: dict) -> str:
    lines = ["| operation | receiver | hpacs ms | Orthanc ms | hpacs advantage |",
             "|---|---|---|---|---|"]
    for mode, label in (("get", "C-GET"), ("move", "C-MOVE")):
        for receiver in ("ignore", "files"):
            cell = {}
            for server in ("hpacs", "orthanc"):
                values = [r["ms"] for r in report["rounds"]
                          if (r["server"], r["mode"], r["receiver"]) == (server, mode, receiver)]
                cell[server] = summarize(values)
            h, o = cell["hpacs"], cell["orthanc"]
            lines.append(f"| {label} study | {receiver} | {h.median:.0f} ({h.min:.0f}-{h.max:.0f})"
                         f" | {o.median:.0f} ({o.min:.0f}-{o.max:.0f}) | "
                         f"{fmt_ratio(ratio(o.median, h.median))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.retrieve " + " ".join(argv or sys.argv[1:])
    report = run(args)
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
