"""C-GET and C-MOVE of one 100-slice CT study, hpacs beside Orthanc (issue 3's retrieve benchmark).

``python -m benchmarks.retrieve --instances 100 --rounds 5 --out report.json``

Both servers hold the same study (benchmarks/dicomweb.py's one-series CT corpus, ~52 MB, sent
with dcmtk ``storescu``). It is retrieved, with ``TCP_NODELAY=1`` like every peer here, by each
receiver (the report names the receiver of every number):

- C-GET: dcmtk ``getscu -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID=...`` receiving
  with ``--ignore`` (acknowledged, not stored) at dcmtk's default 16 KB max PDU (``ignore``), the
  same with ``--max-pdu 131072`` (``ignore-128k``, dcmtk's largest), writing files (``files``);
  and ``benchmarks/discard_receiver.py get`` (``discard``: hpacs's own upper layer, 1 MiB PDUs,
  data sets never assembled, each C-STORE answered at once);
  (its cells use the receiver's own clock from connect to release, not the process's wall
  time, which adds ~1 s of Python start-up);
- C-MOVE: ``movescu -S -aem DEST`` to a dcmtk ``storescp`` destination (one association at a
  time) that discards (``ignore``, ``ignore-128k``) or writes files (``files``), and to
  ``benchmarks/discard_receiver.py scp`` (``discard``, any number of associations at once).
  (movescu moving to itself with ``--port`` takes ~1.4 s for either server: a client artefact,
  so separate destinations are used.)
- C-MOVE by the fast SCU (``fmove`` cells, "C-MOVE study (fast SCU)"): the same moves to the
  discard receivers and the second hpacs, requested by ``benchmarks/discard_receiver.py move``
  and timed by its own clock, connect to release, like the C-GET ``discard`` cells: movescu's
  own start-up (30-50 ms here, as long as echoscu's) is then not in the time.

The C-MOVE cells also time ``dcmtk-storescu``: dcmtk's ``storescu`` sending the study's files
straight to the same destination, no archive in between. It is the floor the destination and a
dcmtk sender set together, the yardstick for both servers' C-MOVE (and, closely, C-GET) times.
They also time ``floor-sender`` (``benchmarks/store_floor.py``): the study encoded in memory
beforehand and sent one C-STORE at a time, by its own clock from connect to release, the least
any archive's window-less C-MOVE through that destination can take.

``--move-associations 1,4`` also runs, for the C-MOVE cells, one more hpacs per value other than
1 with ``dicom.move_associations`` set to it (its own data directory, same study).

The asynchronous operations window (PS3.7 D.3.3.3): ``discard-w8`` is the discard receiver
proposing, as C-GET SCU, to perform up to 8 C-STOREs at once, and granting, as C-MOVE
destination, up to 8 outstanding; ``hpacs`` (C-MOVE only) is a second hpacs as destination,
durable (fsync, index commit before each response; ``duplicate_policy = "replace"`` so every
round stores and indexes every instance again), granting hpacs's default window of 16. The
``hpacs`` server runs with ``dicom.async_window`` = the first ``--async-windows`` value, and one
more hpacs per other value (``hpacs-w1`` = window off: what every peer got before). dcmtk and
Orthanc negotiate no window: against them every sender has one C-STORE outstanding, and Orthanc
as sender or C-GET SCP answers the receiver's proposal with none (1).

``--reference REF`` (A/B): one more hpacs, ``hpacs-ref``, runs the source tree of git ref REF
(``peers.reference_tree``, this venv, extensions built alike) with the ``hpacs`` server's config,
in the same rounds; the advantage column then also gives hpacs against it.

Rounds alternate the servers' order; each cell is the median wall time over rounds (min-max)
of the whole command, association set-up included, and the instance count received is checked
(files written, or the discard receiver's own count).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks import peers as peers_mod
from benchmarks.dicomweb import DEFAULT_WORKDIR, load, series_corpus
from benchmarks.ingest import machine_info
from benchmarks.stats import fmt_ratio, ratio, summarize

GET_AE = "BENCHGET"
#: receiver name -> destination AE of the C-MOVE cells
MOVE_DESTINATIONS = {"ignore": "DISCARD", "ignore-128k": "DISCARD128K", "files": "FILES",
                     "discard": "FASTDISCARD", "discard-w8": "FASTDISCARDW8",
                     "hpacs": "HPACSDEST"}
RECEIVERS = ("ignore", "ignore-128k", "files", "discard", "discard-w8", "hpacs")
#: Receivers that are C-MOVE destinations only (a second hpacs is no C-GET SCU).
MOVE_ONLY = ("hpacs",)
#: C-MOVE destinations the fast C-MOVE SCU (``fmove`` cells) moves to.
FAST_MOVE_RECEIVERS = ("discard", "discard-w8", "hpacs")
#: mode -> operation label of the report
MODES = (("get", "C-GET study"), ("move", "C-MOVE study"), ("fmove", "C-MOVE study (fast SCU)"))
#: Window the ``discard-w8`` receiver proposes (C-GET) and grants (C-MOVE destination).
RECEIVER_WINDOW = 8
STORESCU = "dcmtk-storescu"  # the C-MOVE cells' reference: the files sent with no archive
FLOOR = "floor-sender"  # benchmarks/store_floor.py: the quickest window-less sender there is
#: The pseudo-servers of the C-MOVE cells: they send the files to the destination themselves.
SENDERS = (STORESCU, FLOOR)
DCMTK_MAX_PDU = 131072


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=peers_mod.nodelay_env(PYTHONPATH=str(peers_mod.REPO)),
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exit {out.returncode}: {out.stdout[-500:]}"
                           f"{out.stderr[-2000:]}")
    return wall, out.stdout


def retrieve_once(peer: peers_mod.Peer, study: str, mode: str, receiver: str,
                  files_dest: peers_mod.Peer, expect: int) -> tuple[float, int | None]:
    """(wall seconds, instances received or None when not counted) of one C-GET or C-MOVE."""
    keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    if mode == "fmove":
        wall, stdout = _timed([
            sys.executable, "-m", "benchmarks.discard_receiver", "move", peer.host,
            str(peer.port), "--aec", peer.ae_title, "--aet", GET_AE, "--study", study,
            "--dest", MOVE_DESTINATIONS[receiver], "--expect", str(expect)])
        result = json.loads(stdout.strip().splitlines()[-1])  # its own clock, as for C-GET
        return result["ms"] / 1000, (None if receiver.startswith("discard")
                                     else result["completed"])
    with tempfile.TemporaryDirectory(prefix="bench-retrieve-") as out:
        if mode == "get":
            if receiver.startswith("discard"):
                window = RECEIVER_WINDOW if receiver == "discard-w8" else 1
                wall, stdout = _timed([
                    sys.executable, "-m", "benchmarks.discard_receiver", "get", peer.host,
                    str(peer.port), "--aec", peer.ae_title, "--aet", GET_AE, "--study", study,
                    "--expect", str(expect), "--window", str(window)])
                # its own clock, connect to release: the wall time would add ~1 s of Python
                # start-up and imports (dcmtk's start-up is ~10 ms and stays in its cells)
                result = json.loads(stdout.strip().splitlines()[-1])
                return result["ms"] / 1000, result["received"]
            storage = {"ignore": ["--ignore"], "files": ["-od", out],
                       "ignore-128k": ["--ignore", "--max-pdu", str(DCMTK_MAX_PDU)]}[receiver]
            cmd = [peers_mod.dcmtk("getscu"), "-aet", GET_AE, "-aec", peer.ae_title,
                   *keys, *storage, peer.host, str(peer.port)]
            wall, _ = _timed(cmd)
            return wall, _count_files(Path(out)) if receiver == "files" else None
    if receiver == "files":
        shutil.rmtree(files_dest.data_dir)
        files_dest.data_dir.mkdir()
    cmd = [peers_mod.dcmtk("movescu"), "-aet", GET_AE, "-aec", peer.ae_title,
           "-aem", MOVE_DESTINATIONS[receiver], *keys, peer.host, str(peer.port)]
    wall, _ = _timed(cmd)
    return wall, _count_files(files_dest.data_dir) if receiver == "files" else None


def store_direct(paths: list[Path], dest: peers_mod.Peer, receiver: str,
                 files_dest: peers_mod.Peer) -> tuple[float, int | None]:
    """(wall seconds, instances received or None) of dcmtk ``storescu`` sending ``paths`` to
    the C-MOVE cell's destination itself: what the receiver takes with no archive in between."""
    if receiver == "files":
        shutil.rmtree(files_dest.data_dir)
        files_dest.data_dir.mkdir()
    wall, _ = _timed([peers_mod.dcmtk("storescu"), "-aet", GET_AE, "-aec", dest.ae_title,
                      dest.host, str(dest.port), *map(str, paths)])
    return wall, _count_files(files_dest.data_dir) if receiver == "files" else None


def store_floor(paths: list[Path], dest: peers_mod.Peer, receiver: str,
                files_dest: peers_mod.Peer) -> tuple[float, int | None]:
    """(seconds, instances received or None) of ``benchmarks.store_floor`` sending ``paths``
    to the C-MOVE cell's destination, by its own clock (connect to release: every instance
    encoded beforehand, one C-STORE outstanding): the least any archive's C-MOVE through that
    destination can take."""
    if receiver == "files":
        shutil.rmtree(files_dest.data_dir)
        files_dest.data_dir.mkdir()
    _, stdout = _timed([sys.executable, "-m", "benchmarks.store_floor", dest.host,
                        str(dest.port), "--aec", dest.ae_title, "--aet", GET_AE,
                        *map(str, paths)])
    result = json.loads(stdout.strip().splitlines()[-1])
    return (result["ms"] / 1000,
            _count_files(files_dest.data_dir) if receiver == "files" else None)


def run(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    paths, uids, _sops, manifest = series_corpus(workdir, args.instances)
    move_assocs = [int(v) for v in str(args.move_associations).split(",") if v.strip()]
    extra_hpacs = [n for n in move_assocs if n != 1]
    windows = [int(v) for v in str(args.async_windows).split(",") if v.strip()]
    extra_windows = windows[1:]
    names = ["retrieve-hpacs", "retrieve-orthanc", "retrieve-discard", "retrieve-discard128k",
             "retrieve-files", "retrieve-fast", "retrieve-fast-w8", "retrieve-hpacsdest",
             *(f"retrieve-hpacs-m{n}" for n in extra_hpacs),
             *(f"retrieve-hpacs-w{n}" for n in extra_windows), "retrieve-hpacs-ref",
             "retrieve-reference-tree"]
    for name in names:
        shutil.rmtree(workdir / name, ignore_errors=True)
    report: dict = {"machine": machine_info(), "instances": len(paths),
                    "bytes": manifest["total_bytes"], "rounds": [], "command": args.command,
                    "receivers": {
                        "ignore": "dcmtk getscu/storescp --ignore, 16 KB max PDU (default)",
                        "ignore-128k": "dcmtk getscu/storescp --ignore --max-pdu 131072",
                        "files": "dcmtk getscu -od / storescp -od, one file per instance",
                        "discard": "benchmarks/discard_receiver.py (hpacs.ul, 1 MiB max PDU)",
                        "discard-w8": "the same proposing/granting an asynchronous operations "
                                      f"window of {RECEIVER_WINDOW} (PS3.7 D.3.3.3)",
                        "hpacs": "a second hpacs as C-MOVE destination (durable, replace "
                                 "policy, grants a window of 16)"}}
    with ExitStack() as stack:
        dests = {
            "ignore": stack.enter_context(peers_mod.storescp(
                workdir / "retrieve-discard", ignore=True, fork=False, ae="DISCARD")),
            "ignore-128k": stack.enter_context(peers_mod.storescp(
                workdir / "retrieve-discard128k", ignore=True, fork=False, ae="DISCARD128K",
                max_pdu=DCMTK_MAX_PDU)),
            "files": stack.enter_context(peers_mod.storescp(
                workdir / "retrieve-files", fork=False, ae="FILES")),
            "discard": stack.enter_context(peers_mod.discard_receiver(
                workdir / "retrieve-fast", ae="FASTDISCARD")),
            "discard-w8": stack.enter_context(peers_mod.discard_receiver(
                workdir / "retrieve-fast-w8", ae="FASTDISCARDW8", window=RECEIVER_WINDOW)),
        }
        (workdir / "retrieve-hpacsdest").mkdir(parents=True)
        dest_config = workdir / "retrieve-hpacsdest" / "hpacs.toml"
        dest_config.write_text('[store]\nduplicate_policy = "replace"\n')
        dests["hpacs"] = stack.enter_context(peers_mod.hpacs(
            workdir / "retrieve-hpacsdest", ae="HPACSDEST",
            extra_args=["--config", str(dest_config)]))
        files = dests["files"]
        remotes = "".join(f'[[remote]]\nae_title = "{d.ae_title}"\nhost = "{d.host}"\n'
                          f"port = {d.port}\n" for d in dests.values())
        servers: dict[str, peers_mod.Peer] = {}
        variants = [("hpacs", 1, windows[0], None),
                    *((f"hpacs-m{n}", n, windows[0], None) for n in extra_hpacs),
                    *((f"hpacs-w{w}", 1, w, None) for w in extra_windows)]
        if args.reference:
            tree = workdir / "retrieve-reference-tree"
            report["reference"] = peers_mod.reference_tree(args.reference, tree, build=True)
            variants.append(("hpacs-ref", 1, windows[0], tree))
        for name, n, window, tree in variants:
            (workdir / f"retrieve-{name}").mkdir(parents=True)
            config = workdir / f"retrieve-{name}" / "hpacs.toml"
            config.write_text(f"[dicom]\nmove_associations = {n}\nasync_window = {window}\n\n"
                              f"{remotes}")
            servers[name] = stack.enter_context(peers_mod.hpacs(
                workdir / f"retrieve-{name}", extra_args=["--config", str(config)], tree=tree))
        modalities = {d.ae_title.lower(): [d.ae_title, d.host, d.port] for d in dests.values()}
        # Orthanc answers C-GET only to a known modality (the port is not used by C-GET)
        modalities["getscu"] = [GET_AE, "127.0.0.1", dests["ignore"].port]
        orth = stack.enter_context(peers_mod.orthanc(
            workdir / "retrieve-orthanc", extra_config={"DicomModalities": modalities}))
        servers["orthanc"] = orth
        report["versions"] = {"orthanc": orth.info.get("version"),
                              "dcmtk": peers_mod.dcmtk_version()}
        report["move_associations"] = move_assocs
        report["async_windows"] = windows
        for name, peer in servers.items():
            print(f"loading {len(paths)} instances into {name}: "
                  f"{load(peer, paths):.1f} s", flush=True)
        cells = [(mode, receiver) for mode, _ in MODES for receiver in RECEIVERS
                 if (mode != "get" or receiver not in MOVE_ONLY)
                 and (mode != "fmove" or receiver in FAST_MOVE_RECEIVERS)]
        for rnd in range(args.rounds):
            items = [*servers.items(), *((sender, None) for sender in SENDERS)]
            order = items if rnd % 2 == 0 else items[::-1]
            # cell-major: every server runs a cell before the next cell starts (interleaved)
            for mode, receiver in cells:
                for name, peer in order:
                    if mode == "get" and name.startswith("hpacs-m"):
                        continue  # move_associations only changes C-MOVE
                    if mode != "move" and peer is None:
                        continue  # the senders only send: their cells are the movescu ones
                    before = dests[receiver].stored_count() if mode != "get" else None
                    cpu0 = cpu_seconds(peer.proc.pid) if peer is not None else None
                    if name == FLOOR:
                        wall, n = store_floor(paths, dests[receiver], receiver, files)
                    elif peer is None:
                        wall, n = store_direct(paths, dests[receiver], receiver, files)
                    else:
                        wall, n = retrieve_once(peer, uids["study"], mode, receiver, files,
                                                len(paths))
                    if receiver.startswith("discard") and before is not None:
                        n = dests[receiver].stored_count() - before
                    elif receiver == "hpacs" and mode != "get":
                        n = dests[receiver].stored_count()  # one file per instance, replaced
                    if n is not None and n != len(paths):
                        raise RuntimeError(f"{name} {mode} {receiver}: {n} instances, "
                                           f"not {len(paths)}")
                    row = {"server": name, "round": rnd + 1, "mode": mode,
                           "receiver": receiver, "ms": wall * 1000}
                    if peer is not None and cpu0 is not None:
                        # the server process's own CPU for the operation (steadier than wall
                        # time on a shared machine; 10 ms clock ticks)
                        row["server_cpu_ms"] = (cpu_seconds(peer.proc.pid) - cpu0) * 1000
                    report["rounds"].append(row)
                    print(json.dumps(row), flush=True)
    return report


def markdown(report: dict) -> str:
    servers = sorted({r["server"] for r in report["rounds"]},
                     key=lambda s: (s in SENDERS, s == "orthanc", s != "hpacs", s))
    head = " | ".join(f"{s} ms" for s in servers)
    lines = [f"| operation | receiver | {head} | hpacs advantage |",
             "|---|---|" + "---|" * len(servers) + "---|"]
    for mode, label in MODES:
        for receiver in RECEIVERS:
            cell = {}
            for server in servers:
                values = [r["ms"] for r in report["rounds"]
                          if (r["server"], r["mode"], r["receiver"]) == (server, mode, receiver)]
                cell[server] = summarize(values) if values else None
            if not any(cell.values()):
                continue  # a C-MOVE-only receiver on the C-GET side
            texts = [f"{c.median:.0f} ({c.min:.0f}-{c.max:.0f})" if c else "-"
                     for c in cell.values()]
            o = cell.get("orthanc")
            adv = []
            for server in servers:
                c = cell[server]
                if server not in ("orthanc", *SENDERS) and c and o:
                    adv.append(f"{server} {fmt_ratio(ratio(o.median, c.median))}")
            ref, new = cell.get("hpacs-ref"), cell.get("hpacs")
            if ref and new:
                adv.append(f"hpacs vs hpacs-ref {fmt_ratio(ratio(ref.median, new.median))}")
            lines.append(f"| {label} | {receiver} | {' | '.join(texts)} | "
                         f"{', '.join(adv)} |")
    lines += ["", "Server process CPU ms per operation, median (min-max) over rounds (user + "
              "system, all threads; clock ticks of 10 ms):", "",
              f"| operation | receiver | {head} |", "|---|---|" + "---|" * len(servers)]
    for mode, label in MODES:
        for receiver in RECEIVERS:
            texts = []
            for server in servers:
                values = [r["server_cpu_ms"] for r in report["rounds"]
                          if (r["server"], r["mode"], r["receiver"]) == (server, mode, receiver)
                          and "server_cpu_ms" in r]
                c = summarize(values) if values else None
                texts.append(f"{c.median:.0f} ({c.min:.0f}-{c.max:.0f})" if c else "-")
            if any(t != "-" for t in texts):
                lines.append(f"| {label} | {receiver} | {' | '.join(texts)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    p.add_argument("--move-associations", default="1,4",
                   help="dicom.move_associations values to run C-MOVE with (one hpacs each)")
    p.add_argument("--async-windows", default="16,1",
                   help="dicom.async_window of the hpacs server, then one more hpacs per "
                        "other value (hpacs-wN)")
    p.add_argument("--reference", default=None,
                   help="git ref: also run hpacs at that commit (hpacs-ref, same config as "
                        "hpacs, this venv) interleaved with the others (A/B)")
    p.add_argument("--out", help="write the JSON report (and a .md beside it) here")
    args = p.parse_args(argv)
    args.command = "python -m benchmarks.retrieve " + " ".join(argv or sys.argv[1:])
    report = run(args)
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        Path(args.out).with_suffix(".md").write_text(
            f"`{report['command']}`\n\n{markdown(report)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
