"""Is a transport plain TCP? The one test behind every zero-copy path (sendfile out, splice in).

Those paths hand the kernel the socket's descriptor directly, which is only right when the bytes
on the wire are the bytes we move: not under TLS, and only for a stream socket the transport
really owns.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

#: This platform has ``os.sendfile``.
HAS_SENDFILE = hasattr(os, "sendfile")


def plain_tcp_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The transport's socket when it is a plain (non-TLS) stream socket, else None."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    if getattr(sock, "type", socket.SOCK_STREAM) != socket.SOCK_STREAM:
        return None
    return sock


def can_sendfile(transport: asyncio.BaseTransport | None) -> bool:
    """``os.sendfile`` may write to this transport's socket."""
    return HAS_SENDFILE and plain_tcp_socket(transport) is not None
