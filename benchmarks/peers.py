"""Start and stop the DICOM peers a benchmark drives: Orthanc, dcmtk storescp, hpacs.

Each peer runs on loopback, on free ports, with its data in a fresh directory, and with
``TCP_NODELAY=1`` in its environment (Debian's dcmtk leaves Nagle on otherwise and every DIMSE
round trip waits ~40 ms: a comparison against that would be dishonest). A peer is ready when a
C-ECHO succeeds. Each context manager stops its peer (SIGTERM, then SIGKILL) on exit, and only
the processes it started: every peer gets its own session, so ``storescp --fork`` children go too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
ORTHANC_BIN = "/usr/sbin/Orthanc"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class PeerError(RuntimeError):
    """A peer could not be started, or is not installed."""


def nodelay_env(**extra: str) -> dict[str, str]:
    """The environment every DICOM process of a benchmark gets: Nagle off."""
    return {**os.environ, "TCP_NODELAY": "1", **extra}


@cache
def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool (the venv may shadow storescu/echoscu with pynetdicom's apps)."""
    candidates = [f"/usr/bin/{tool}", f"/usr/local/bin/{tool}"]
    found = shutil.which(tool)
    if found:
        candidates.append(found)
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return path
    raise PeerError(f"dcmtk {tool} not found (apt-get install dcmtk)")


def dcmtk_version() -> str:
    """E.g. ``dcmtk 3.6.7``."""
    out = subprocess.run([dcmtk("storescu"), "--version"], capture_output=True, text=True)
    first = out.stdout.strip().splitlines()[0] if out.stdout else ""
    words = [w.lstrip("v") for w in first.split() if w[:1] == "v" and w[1:2].isdigit()]
    return f"dcmtk {words[0]}" if words else first or "?"


def free_port(host: str = LOOPBACK) -> int:
    """A port free right now on ``host`` (the peer binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def echo(host: str, port: int, called_ae: str, *, timeout: float = 5.0) -> bool:
    """One C-ECHO with dcmtk echoscu; True if it succeeded."""
    t = str(max(1, int(timeout)))
    cmd = [
        dcmtk("echoscu"),
        "-q",
        "-aet",
        "BENCH",
        "-aec",
        called_ae,
        "-to",
        t,
        "-ta",
        t,
        "-td",
        t,
        host,
        str(port),
    ]
    try:
        r = subprocess.run(cmd, env=nodelay_env(), capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def session_cpu_seconds(sid: int) -> float:
    """CPU time (user+sys, incl. reaped children) of every process in session ``sid``.

    Covers Orthanc's threads, storescp's forked children (alive, zombie or reaped) and hpacs.
    """
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[0] is state (field 3); session is field 6; utime..cstime are fields 14..17.
        if int(fields[3]) != sid:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / _CLK_TCK


def cpu_by_session() -> dict[int, float]:
    """CPU seconds (user+sys, incl. reaped children) of user-space processes, per session.

    Kernel threads are left out: the I/O a peer causes (journal, writeback) runs there and is
    not somebody else's load.
    """
    out: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == 2 or entry.name == "2":  # kthreadd and its children
            continue
        sid = int(fields[3])
        out[sid] = out.get(sid, 0.0) + sum(int(x) for x in fields[11:15]) / _CLK_TCK
    return out


@dataclass
class Peer:
    """A running DICOM peer."""

    name: str
    host: str
    port: int
    ae_title: str
    data_dir: Path
    proc: subprocess.Popen
    log: Path
    http_port: int | None = None
    #: Number of instances the peer holds now, by its own means; None if it stores nothing.
    counter: Callable[[Peer], int | None] = field(default=lambda p: None, repr=False)
    info: dict = field(default_factory=dict)

    def stored_count(self) -> int | None:
        return self.counter(self)

    def cpu_seconds(self) -> float:
        return session_cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _log_tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _wait_ready(peer: Peer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not peer.alive():
            raise PeerError(
                f"{peer.name} exited with {peer.proc.returncode}:\n{_log_tail(peer.log)}"
            )
        if echo(peer.host, peer.port, peer.ae_title, timeout=2.0):
            return
        time.sleep(0.1)
    raise PeerError(f"{peer.name} not ready after {timeout:.0f} s:\n{_log_tail(peer.log)}")


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the peer's session (it is its leader), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # forked children may outlive the leader for a moment
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def _running(
    name: str,
    cmd: list[str],
    *,
    workdir: Path,
    data_dir: Path,
    port: int,
    ae: str,
    http_port: int | None,
    counter: Callable[[Peer], int | None],
    ready_timeout: float,
    env: dict[str, str] | None = None,
    info: dict | None = None,
) -> Iterator[Peer]:
    log = workdir / f"{name}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            env=env or nodelay_env(),
            cwd=workdir,
            start_new_session=True,
        )
    peer = Peer(name, LOOPBACK, port, ae, data_dir, proc, log, http_port, counter, info or {})
    try:
        _wait_ready(peer, ready_timeout)
        yield peer
    finally:
        _stop(proc)


def count_part10_files(root: Path) -> int:
    """Regular files under ``root`` that are DICOM Part 10 (``DICM`` at offset 128)."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), "rb") as f:
                    head = f.read(132)
            except OSError:
                continue
            n += head[128:132] == b"DICM"
    return n


# --------------------------------------------------------------------------------------------
# dcmtk storescp


@contextlib.contextmanager
def storescp(
    workdir: Path,
    *,
    ignore: bool = False,
    fork: bool = True,
    bit_preserving: bool = False,
    ae: str = "STORESCP",
    ready_timeout: float = 20.0,
    max_pdu: int | None = None,
) -> Iterator[Peer]:
    """dcmtk storescp writing one file per instance (no fsync, no index), or ``--ignore``;
    ``max_pdu`` (4096..131072) instead of dcmtk's default 16 KB."""
    workdir = Path(workdir)
    data = workdir / "storescp-out"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [dcmtk("storescp"), "-aet", ae, "-od", str(data)]
    if max_pdu:
        cmd += ["--max-pdu", str(max_pdu)]
    if fork:
        cmd.append("--fork")
    if ignore:
        cmd.append("--ignore")
    if bit_preserving:
        cmd.append("+B")
    cmd.append(str(port))
    name = "storescp-ignore" if ignore else "storescp"

    def counter(p: Peer) -> int | None:
        return None if ignore else count_part10_files(p.data_dir)

    info = {"command": " ".join(cmd[1:]), "version": dcmtk_version()}
    with _running(
        name,
        cmd,
        workdir=workdir,
        data_dir=data,
        port=port,
        ae=ae,
        http_port=None,
        counter=counter,
        ready_timeout=ready_timeout,
        info=info,
    ) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# Orthanc


def orthanc_config(
    workdir: Path, *, dicom_port: int, http_port: int, ae: str, extra: dict | None = None
) -> dict:
    """Orthanc's settings for a fair ingest comparison (see ARCHITECTURE.md)."""
    storage = str(Path(workdir) / "orthanc-storage")
    cfg = {
        "Name": "bench-orthanc",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "StorageCompression": False,
        "SyncStorageArea": True,  # as shipped: an acknowledged instance is on disk
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
        "DicomServerEnabled": True,
        "DicomAet": ae,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {},
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "Plugins": [],
        "SaveJobs": False,
        "StableAge": 3600,  # no stable-series work in the middle of a run
    }
    cfg.update(extra or {})
    return cfg


def orthanc_version() -> str:
    try:
        out = subprocess.run([ORTHANC_BIN, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    first = out.stdout.strip().splitlines()[0] if out.stdout else "?"
    return "Orthanc " + first.split()[-1] if first != "?" else first


def orthanc_rest(peer: Peer, path: str, timeout: float = 10.0) -> object:
    url = f"http://{LOOPBACK}:{peer.http_port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def orthanc(
    workdir: Path,
    *,
    ae: str = "ORTHANC",
    ready_timeout: float = 60.0,
    extra_config: dict | None = None,
) -> Iterator[Peer]:
    """Debian's Orthanc with its own JSON config, storage and index in ``workdir``."""
    if not os.access(ORTHANC_BIN, os.X_OK):
        raise PeerError(f"{ORTHANC_BIN} not found (apt-get install orthanc)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    cfg = orthanc_config(
        workdir, dicom_port=dicom_port, http_port=http_port, ae=ae, extra=extra_config
    )
    Path(cfg["StorageDirectory"]).mkdir(parents=True, exist_ok=True)
    conf_path = workdir / "orthanc.json"
    conf_path.write_text(json.dumps(cfg, indent=2))

    def counter(p: Peer) -> int | None:
        return int(orthanc_rest(p, "/statistics")["CountInstances"])

    info = {"version": orthanc_version(), "config": cfg}
    with _running(
        "orthanc",
        [ORTHANC_BIN, str(conf_path)],
        workdir=workdir,
        data_dir=Path(cfg["StorageDirectory"]),
        port=dicom_port,
        ae=ae,
        http_port=http_port,
        counter=counter,
        ready_timeout=ready_timeout,
        info=info,
    ) as peer:
        yield peer


# --------------------------------------------------------------------------------------------
# hpacs


def hpacs_command() -> list[str]:
    """How to run hpacs: the venv's console script, else ``python -m hpacs`` from the venv."""
    exe = REPO / ".venv" / "bin" / "hpacs"
    if exe.exists():
        return [str(exe)]
    py = REPO / ".venv" / "bin" / "python"
    if py.exists() and (REPO / "hpacs" / "__main__.py").exists():
        return [str(py), "-m", "hpacs"]
    found = shutil.which("hpacs")
    if not found:
        raise PeerError("hpacs executable not found (make install)")
    return [found]


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


@contextlib.contextmanager
def hpacs(
    workdir: Path,
    *,
    ae: str = "HPACS",
    ready_timeout: float = 60.0,
    extra_args: list[str] | None = None,
    tree: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Peer]:
    """``hpacs serve`` with a fresh data directory; ready when C-ECHO and /healthz answer.
    ``tree``: run the hpacs package of another source tree (an A/B reference) with this
    repository's venv; ``env``: extra environment variables of the server."""
    workdir = Path(workdir)
    data = workdir / "hpacs-data"
    data.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    cmd = [
        *(hpacs_command() if tree is None else [str(REPO / ".venv" / "bin" / "python"), "-m",
                                                "hpacs"]),
        "serve",
        "--data-dir",
        str(data),
        "--host",
        LOOPBACK,
        "--dicom-port",
        str(dicom_port),
        "--http-port",
        str(http_port),
        "--ae-title",
        ae,
        *(extra_args or []),
    ]

    def counter(p: Peer) -> int | None:
        return count_part10_files(p.data_dir)

    info = {"command": " ".join(cmd[1:])}
    # PYTHONPATH: ``python -m hpacs`` must find the work tree even if it is not installed.
    pythonpath = os.pathsep.join(filter(None, [str(tree or REPO), os.environ.get("PYTHONPATH")]))
    with _running(
        "hpacs",
        cmd,
        env=nodelay_env(PYTHONPATH=pythonpath, **(env or {})),
        workdir=workdir,
        data_dir=data,
        port=dicom_port,
        ae=ae,
        http_port=http_port,
        counter=counter,
        ready_timeout=ready_timeout,
        info=info,
    ) as peer:
        deadline = time.monotonic() + 10
        while not _http_ok(http_port, "/healthz") and time.monotonic() < deadline:
            time.sleep(0.1)
        peer.info["healthz"] = _http_ok(http_port, "/healthz")
        yield peer


#: Builds one extension of a reference tree in place (its directives are setup.py's; no
#: per-extension compiler flags).
_BUILD_ONE = """import sys
from Cython.Build import cythonize
from setuptools import Extension, setup
stem = sys.argv[1]
setup(script_args=["-q", "build_ext", "--inplace"], ext_modules=cythonize(
    [Extension(f"hpacs._ext.{stem}", [f"hpacs/_ext/{stem}.pyx"])], quiet=True,
    compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False}))
"""


def _same_sources(mine: Path, theirs: Path) -> bool:
    """The same .pyx, and the same .pxd for every one it cimports (a shared inline helper)."""
    if mine.read_bytes() != theirs.read_bytes():
        return False
    text = mine.read_text()
    for pxd in mine.parent.glob("*.pxd"):
        if pxd.stem in text:
            other = theirs.parent / pxd.name
            if not other.exists() or other.read_bytes() != pxd.read_bytes():
                return False
    return True


def reference_tree(ref: str, dest: Path, *, build: bool = False) -> dict:
    """``git archive`` of ``ref`` in ``dest`` (an A/B reference run with this repository's
    venv), with this tree's built extensions whose sources are the same. With ``build``, the
    extensions whose .pyx differs are compiled in ``dest`` (else the reference would run their
    pure-Python twins). Returns what was copied and built."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], check=True,
                            capture_output=True, text=True).stdout.strip()
    copied, skipped, built = [], [], []
    for so in sorted((REPO / "hpacs" / "_ext").glob("*.so")):
        stem = so.name.split(".")[0]
        mine = REPO / "hpacs" / "_ext" / f"{stem}.pyx"
        theirs = dest / "hpacs" / "_ext" / f"{stem}.pyx"
        if theirs.exists() and _same_sources(mine, theirs):
            shutil.copy2(so, dest / "hpacs" / "_ext" / so.name)
            copied.append(stem)
        elif theirs.exists() and build:
            subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", _BUILD_ONE, stem],
                           cwd=dest, check=True, capture_output=True)
            built.append(stem)
        elif theirs.exists():
            skipped.append(stem)
    return {"ref": ref, "commit": commit, "extensions_copied": copied,
            "extensions_built": built, "extensions_not_copied": skipped}


PEERS = {
    "hpacs": lambda workdir: hpacs(workdir),
    "orthanc": lambda workdir: orthanc(workdir),
    "storescp": lambda workdir: storescp(workdir),
    "storescp-ignore": lambda workdir: storescp(workdir, ignore=True),
}


def start(name: str, workdir: Path) -> contextlib.AbstractContextManager[Peer]:
    """The context manager that runs peer ``name`` (one of PEERS) in ``workdir``."""
    try:
        return PEERS[name](Path(workdir))
    except KeyError:
        raise PeerError(f"unknown peer {name!r}; known: {', '.join(PEERS)}") from None


@contextlib.contextmanager
def discard_receiver(workdir: Path, *, ae: str = "FASTDISCARD",
                     ready_timeout: float = 20.0, window: int = 1) -> Iterator[Peer]:
    """benchmarks/discard_receiver.py as a storage SCP: 1 MiB PDUs, discards every data set;
    ``peer.stored_count()`` is the number of data sets it has received. ``window`` > 1 grants
    a sender proposing an asynchronous operations window up to that many outstanding
    C-STOREs."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    count_file = workdir / "received"
    cmd = [sys.executable, "-m", "benchmarks.discard_receiver", "scp", "--port", str(port),
           "--ae", ae, "--count-file", str(count_file), "--window", str(window)]
    env = nodelay_env(PYTHONPATH=str(REPO))

    def counter(p: Peer) -> int | None:
        try:
            return int(count_file.read_text())
        except (OSError, ValueError):
            return None

    with _running("discard-receiver", cmd, workdir=workdir, data_dir=workdir, port=port, ae=ae,
                  http_port=None, counter=counter, ready_timeout=ready_timeout, env=env,
                  info={"command": "python -m benchmarks.discard_receiver scp"}) as peer:
        yield peer
