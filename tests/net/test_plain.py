"""``net.plain``: the zero-copy paths take plain TCP transports only (never TLS, never UDP)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

from hpacs.net.plain import can_sendfile, plain_tcp_socket


async def _tcp_pair(ssl_server: ssl.SSLContext | None = None,
                    ssl_client: ssl.SSLContext | None = None) -> tuple[asyncio.BaseTransport, ...]:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.BaseTransport] = loop.create_future()

    class Accepting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.set_result(transport)

    server = await loop.create_server(Accepting, "127.0.0.1", 0, ssl=ssl_server)
    port = server.sockets[0].getsockname()[1]
    client, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             ssl=ssl_client)
    accepted = await asyncio.wait_for(made, 10)
    server.close()
    return accepted, client


async def test_plain_tcp_transport_gives_its_socket() -> None:
    accepted, client = await _tcp_pair()
    try:
        sock = plain_tcp_socket(accepted)
        assert sock is not None and sock.type == socket.SOCK_STREAM
        assert sock.fileno() == accepted.get_extra_info("socket").fileno()
        assert can_sendfile(accepted)
    finally:
        accepted.close()
        client.close()


async def test_tls_transport_is_not_plain(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    accepted, client = await _tcp_pair(server_ctx, client_ctx)
    try:
        assert accepted.get_extra_info("sslcontext") is not None
        assert plain_tcp_socket(accepted) is None
        assert plain_tcp_socket(client) is None
        assert not can_sendfile(accepted)
    finally:
        accepted.close()
        client.close()


async def test_datagram_transport_and_none_are_not_plain() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       local_addr=("127.0.0.1", 0))
    try:
        assert plain_tcp_socket(transport) is None
        assert not can_sendfile(transport)
    finally:
        transport.close()
    assert plain_tcp_socket(None) is None
    assert not can_sendfile(None)
