"""SocketSink: file regions by sendfile between P-DATA headers, on asyncio's and uvloop's
transports, to a peer that reads at once or slowly (partial sendfile writes)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import uvloop

from hpacs.dicom.part10 import read_file_meta
from hpacs.net.filesend import SocketSink, dataset_offset_fast, resident
from hpacs.ul import encode_pdata, pdata_headers
from tests.factories import make_ct, write


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    return uvloop.run if request.param == "uvloop" else asyncio.run


class _Keep(asyncio.Protocol):
    def __init__(self, made: asyncio.Future) -> None:
        self.made = made

    def connection_made(self, transport) -> None:
        self.made.set_result(transport)


def _reader(sock: socket.socket, out: bytearray, delay: float) -> None:
    """The peer: reads until EOF, pausing ``delay`` s after every 16 KB read."""
    while data := sock.recv(16384):
        out += data
        if delay:
            time.sleep(delay)


async def _send_all(path: Path, regions: list[tuple[int, int]], max_pdu: int, delay: float,
                    sndbuf: int | None = None) -> tuple[bytes, bytes, int]:
    """Send each (offset, length) region of ``path`` as a data set after a small command
    PDU, through a SocketSink on a served connection; (received, expected, waits)."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future = loop.create_future()
    server = await loop.create_server(lambda: _Keep(made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = socket.socket()
    if delay:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    peer.connect(("127.0.0.1", port))
    transport = await made
    if sndbuf:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                      sndbuf)
    received = bytearray()
    thread = threading.Thread(target=_reader, args=(peer, received, delay))
    thread.start()
    sink = SocketSink(transport)
    assert sink.usable and sink.ready()
    waits = 0
    original = sink._writable

    async def counted() -> None:
        nonlocal waits
        waits += 1
        await original()

    sink._writable = counted  # type: ignore[method-assign]
    data = path.read_bytes()
    expected = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, (offset, length) in enumerate(regions):
            command = encode_pdata(1, True, f"command {i}".encode(), max_pdu)
            expected += b"".join(command)
            expected += b"".join(encode_pdata(1, False, data[offset:offset + length], max_pdu))
            await sink.send(command, pdata_headers(1, False, length, max_pdu), fd, offset)
            assert not sink.busy
    finally:
        os.close(fd)
        sink.close()
        transport.close()
        server.close()
    await asyncio.sleep(0)
    await asyncio.to_thread(thread.join, 30)
    peer.close()
    return bytes(received), bytes(expected), waits


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("filesend") / "blob.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    return path


@pytest.mark.parametrize("max_pdu", [16384, 131072, 1 << 20])
def test_regions_arrive_as_encode_pdata_frames_them(run, blob, max_pdu):
    # odd lengths and offsets, one byte, exact multiples of the fragment, larger than a PDU
    chunk = max_pdu - 6
    regions = [(0, 1), (1, 12345), (131, chunk), (7, 2 * chunk + 1), (4099, 1_000_001),
               (0, 3 * 1024 * 1024 + 7)]
    received, expected, _ = run(_send_all(blob, regions, max_pdu, delay=0))
    assert received == expected


def test_slow_peer_partial_sendfile_writes_wait_without_blocking(run, blob):
    ticks = 0

    async def main():
        nonlocal ticks

        async def ticker():  # the loop keeps running while the peer is slow
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        try:
            return await _send_all(blob, [(3, 1_500_001), (0, 700_000)], 16384, delay=0.002,
                                   sndbuf=16384)
        finally:
            t.cancel()

    received, expected, waits = run(main())
    assert received == expected
    assert waits > 0  # the socket filled: sendfile wrote part, the rest waited for it
    assert ticks > 5


@pytest.mark.parametrize("closer", ["transport", "sink"])
def test_closed_while_waiting_raises_connection_error(run, blob, closer):
    """The transport closed (abort, idle timeout), or the sink closed by the association's
    cleanup, while a send waits for the peer: the send stops, and only then is our
    descriptor closed (its number must not be reused under add_writer)."""

    async def main():
        loop = asyncio.get_running_loop()
        made: asyncio.Future = loop.create_future()
        server = await loop.create_server(lambda: _Keep(made), "127.0.0.1", 0)
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        peer.connect(("127.0.0.1", server.sockets[0].getsockname()[1]))
        transport = await made  # the peer never reads
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                      16384)
        sink = SocketSink(transport)
        loop.call_later(0.3, transport.close if closer == "transport" else sink.close)
        fd = os.open(blob, os.O_RDONLY)
        try:
            size = blob.stat().st_size
            with pytest.raises(ConnectionError):
                await sink.send([], pdata_headers(1, False, size, 16384), fd, 0)
            assert not sink.busy
            if closer == "sink":
                assert sink._sock is None
                transport.close()
        finally:
            os.close(fd)
            sink.close()
            server.close()
            peer.close()

    run(main())


def test_file_shorter_than_announced_is_an_oserror(run, blob):
    async def main():
        loop = asyncio.get_running_loop()
        made: asyncio.Future = loop.create_future()
        server = await loop.create_server(lambda: _Keep(made), "127.0.0.1", 0)
        peer = socket.create_connection(("127.0.0.1", server.sockets[0].getsockname()[1]))
        transport = await made
        sink = SocketSink(transport)
        fd = os.open(blob, os.O_RDONLY)
        try:
            size = blob.stat().st_size
            with pytest.raises(OSError, match="shorter"):
                await sink.send([], pdata_headers(1, False, 100, 16384), fd, size - 10)
        finally:
            os.close(fd)
            sink.close()
            transport.close()
            server.close()
            peer.close()

    run(main())


def test_resident_follows_the_page_cache(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert resident(fd, 1 << 20)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        assert not resident(fd, 1 << 20)
        os.pread(fd, 1 << 20, 0)
        assert resident(fd, 1 << 20)
        assert not resident(fd, 0)
    finally:
        os.close(fd)


def test_dataset_offset_fast_agrees_with_the_meta_parser(tmp_path):
    path = write(make_ct(size=8), tmp_path)
    head = path.read_bytes()[:256]
    assert dataset_offset_fast(head) == read_file_meta(path).dataset_offset
    assert dataset_offset_fast(b"\0" * 256) is None
    assert dataset_offset_fast(head[:140]) is None
