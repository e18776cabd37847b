"""Shared fixtures: a real `hpacs serve` process on free loopback ports, and test data."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from hypothesis import settings

# CI runs the same examples every time (a red CI must mean a real regression, and a fixed
# failing example is reproducible); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
# dcmtk leaves Nagle on unless told; every DIMSE round trip would wait ~40 ms otherwise.
os.environ.setdefault("TCP_NODELAY", "1")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port BELOW the ephemeral range: a port the kernel handed out with
    bind(0) can be taken again as the local port of any outgoing connection (a test client's)
    before our server binds it."""
    high = min(_ephemeral_low(), 65536) - 1
    for _ in range(200):
        port = random.randint(20000, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def require_tool(name: str) -> str:
    """A peer the tests need; missing is a failure (make test installs it), never a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make test` installs dcmtk (apt-get install dcmtk)")
    return path


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    data_dir: Path
    dicom_port: int
    http_port: int
    ae_title: str
    log_path: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.dicom_port)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(data_dir: Path, *extra: str, ae_title: str = "HPACS",
                 env: dict[str, str] | None = None) -> ServerProcess:
    for _ in range(4):  # a port may still be taken between the check and the server's bind
        try:
            return _start_server(data_dir, extra, ae_title, env)
        except PortTaken:
            continue
    return _start_server(data_dir, extra, ae_title, env)


class PortTaken(AssertionError):
    pass


def _start_server(data_dir: Path, extra: tuple[str, ...], ae_title: str,
                  env: dict[str, str] | None) -> ServerProcess:
    dicom_port, http_port = free_port(), free_port()
    while http_port == dicom_port:
        http_port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-server-{dicom_port}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpacs", "serve", "--data-dir", str(data_dir),
         "--host", "127.0.0.1", "--dicom-port", str(dicom_port), "--http-port", str(http_port),
         "--ae-title", ae_title, *extra],
        stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "hpacs ready" not in line:
        proc.kill()
        proc.wait(10)
        log = log_path.read_text()
        if "address already in use" in log:
            raise PortTaken(log)
        raise AssertionError(f"server did not start: {line!r}\n{log}")
    return ServerProcess(proc, data_dir, dicom_port, http_port, ae_title, log_path)


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path / "data")
    yield srv
    if srv.proc.poll() is None:
        assert srv.stop() == 0, srv.log()


def pydicom_test_dir() -> Path:
    return Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent


def storage_test_files() -> list[Path]:
    """pydicom's own test files that are storage instances with Part 10 meta we can keep."""
    from hpacs.dicom.transfer_syntax import STORABLE
    from hpacs.ul.negotiation import STORAGE_SOP_CLASSES

    out = []
    for path in sorted(p for p in pydicom_test_dir().rglob("*") if p.is_file()):
        try:
            meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        except Exception:
            continue
        ts = meta.get("TransferSyntaxUID")
        sop_class = meta.get("MediaStorageSOPClassUID")
        if ts in STORABLE and sop_class in STORAGE_SOP_CLASSES:
            out.append(path)
    return out


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")
