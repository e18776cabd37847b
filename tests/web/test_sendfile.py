"""Files sent by sendfile(2) between transport writes arrive whole and in order, also when the
socket fills up (a slow reader: waited for in a thread, or for frames the rest written through
the transport), from an offset too, and the read/write fallback gives the same bytes."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
import uvloop
from aiohttp import web

from hpacs.web import sendfile as sf
from tests.conftest import free_port


def _span(path) -> tuple[int, int]:
    """(offset, size) sent of a file: all of it, skipping the first 3 bytes of bigger ones."""
    size = os.path.getsize(path)
    skip = 3 if size > 3 else 0
    return skip, size - skip


def _app(files: list, wait_in_thread: bool) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = sum(len(b"<part>") + _span(p)[1] for p in files) + 5
        await resp.prepare(request)
        for path in files:
            await resp.write(b"<part>")
            offset, size = _span(path)
            with open(path, "rb") as f:
                await sf.send_file(request, resp, f, size, offset,
                                   wait_in_thread=wait_in_thread)
        await resp.write(b"<end>")
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def _serve_and_fetch(files, slow: bool, wait_in_thread: bool = True) -> bytes:
    app = _app(files, wait_in_thread)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            chunks = []
            async for chunk in r.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                if slow:
                    await asyncio.sleep(0.001)  # the server's socket buffer fills: EAGAIN path
            return b"".join(chunks)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("wait_in_thread", [True, False])
@pytest.mark.parametrize("use_sendfile", [True, False])
@pytest.mark.parametrize("slow", [False, True])
def test_parts_arrive_whole_and_in_order(tmp_path, monkeypatch, use_sendfile, slow,
                                         wait_in_thread):
    files = []
    for i, size in enumerate((0, 1, 777_777, 5_000_000)):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(os.urandom(size))
        files.append(p)
    sent = []
    real = os.sendfile

    def counting(*args):
        n = real(*args)
        sent.append(n)
        return n

    monkeypatch.setattr(sf.os, "sendfile", counting)
    if not use_sendfile:
        monkeypatch.setattr(sf, "can_sendfile", lambda request: False)
    body = uvloop.run(_serve_and_fetch(files, slow, wait_in_thread))
    expected = b"".join(b"<part>" + p.read_bytes()[_span(p)[0]:] for p in files) + b"<end>"
    assert body == expected
    if use_sendfile and wait_in_thread:
        assert sum(sent) == sum(_span(p)[1] for p in files)
    elif use_sendfile:  # when the socket filled up, the rest of a part went by the transport
        assert 0 < sum(sent) <= sum(_span(p)[1] for p in files)
    else:
        assert sent == []
