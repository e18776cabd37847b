"""A stored data set from the page cache straight to an association's socket (``sendfile(2)``).

Reading a 526 KB CT slice into a Python buffer and writing it to the socket costs the loop two
copies, an allocation (zeroed, page-faulted) and a free per instance; py-spy put ~60 % of the
C-GET loop there. Here the file's pages go to the socket by ``sendfile``, each P-DATA-TF header
(``ul.Connection.send_data_headers``: the codec frames, this adapter does the syscalls) written
just before its fragment with ``MSG_MORE`` so header and data leave in the same segments.

Only for a file whose every page is in the page cache (``mincore``: ``sendfile`` would otherwise
wait for the disk on the loop) and a plain TCP transport with nothing of its own left to write
(bytes must stay in order). A full socket (a partial ``sendfile``) is waited for with
``add_writer`` on a duplicate of the socket's descriptor (uvloop refuses one on the transport's
own), never blocking the loop; anything written through the transport meanwhile must be held
back by the caller (:attr:`SocketSink.busy`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from hpacs._ext import load
from hpacs._ext.fileio import advance  # the one short-write advance (pure Python)
from hpacs.log import get_logger
from hpacs.net.plain import HAS_SENDFILE, plain_tcp_socket

log = get_logger("hpacs.scu")

_MSG_MORE = getattr(socket, "MSG_MORE", 0)
#: ``resident(fd, size)``: compiled (one call, no GIL) unless HPACS_PURE=1 (the ctypes twin).
_fileio = load("fileio", "file I/O")[0]
resident = _fileio.resident
#: How often a wait for the socket looks whether the transport was closed meanwhile.
_POLL_S = 0.5


def sendfile_wanted(policy: str, window: int) -> bool:
    """Whether data sets go by ``sendfile`` under ``policy`` ("auto", "always", "never",
    ``dicom.sendfile``) with ``window`` C-STOREs allowed outstanding (0 = unlimited). "auto"
    only under a window: there it saves the server ~30 % of its CPU per study; one C-STORE at
    a time it brought nothing, and to dcmtk receivers writing files it was 4-16 % slower
    (benchmarks/RESULTS.md, session 7)."""
    if policy == "auto":
        return window != 1
    return policy == "always"


#: (0002,0000) File Meta Information Group Length, UL, 4 bytes, after the preamble and "DICM".
_GROUP_LENGTH = b"DICM\x02\x00\x00\x00UL\x04\x00"
_UL = struct.Struct("<I")


def dataset_offset_fast(head: bytes) -> int | None:
    """Where the data set starts in a Part 10 file whose meta begins with its group length
    (every file hpacs writes); None otherwise (the caller parses the meta fully)."""
    if head[128:140] != _GROUP_LENGTH or len(head) < 144:
        return None
    return 144 + _UL.unpack_from(head, 140)[0]


class SocketSink:
    """An association's socket, for sending file regions by ``sendfile``.

    :meth:`usable` says whether it applies at all (plain TCP); :meth:`ready` whether it can
    be used now (the transport has nothing buffered). While :attr:`busy`, the owner must hold
    back every write through the transport (they would land inside a PDU)."""

    def __init__(self, transport: asyncio.BaseTransport | None) -> None:
        self.transport = transport
        self.busy = False
        #: Times a send found the socket full and waited for the peer (partial writes).
        self.waits = 0
        self._close_after = False  # close() came while busy: close when the send ends
        self._sock: socket.socket | None = None
        self._fd = -1
        sock = plain_tcp_socket(transport)
        self.usable = sock is not None and HAS_SENDFILE and bool(_fileio.MINCORE)
        self._transport_fd = sock.fileno() if sock is not None and self.usable else -1

    def ready(self) -> bool:
        t = self.transport
        return (self.usable and t is not None and not t.is_closing()
                and t.get_write_buffer_size() == 0)  # type: ignore[attr-defined]

    def _socket(self) -> socket.socket:
        if self._sock is None:
            # our own descriptor for the same socket: add_writer works on it, and the
            # transport closing its own does not pull the number from under a send
            self._sock = socket.socket(fileno=os.dup(self._transport_fd))
            self._fd = self._sock.fileno()
        return self._sock

    def close(self) -> None:
        """Close our descriptor; during a send, once it has stopped (its number must not be
        reused under a pending sendfile or add_writer)."""
        if self.busy:
            self._close_after = True
            return
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def send(self, before: list, headers: list[tuple[bytes, int]], in_fd: int,
                   offset: int) -> None:
        """Write ``before`` (framed PDUs) and then, per (header, size), the header and
        ``size`` bytes of ``in_fd`` from ``offset`` on. Raises ConnectionError when the
        transport closes meanwhile, OSError when the file is shorter than announced."""
        sock = self._socket()
        self.busy = True
        try:
            pending = [*before]
            for header, size in headers:
                self._check_open()
                pending.append(header)
                await self._sendmsg(sock, pending)
                pending = []
                while size > 0:
                    try:
                        sent = os.sendfile(self._fd, in_fd, offset, size)
                    except BlockingIOError:
                        await self._writable()
                        continue
                    if sent == 0:
                        raise OSError("file shorter than when opened")
                    offset += sent
                    size -= sent
        finally:
            self.busy = False
            if self._close_after:
                self.close()

    async def _sendmsg(self, sock: socket.socket, buffers: list) -> None:
        views = [memoryview(b) for b in buffers if len(b)]
        while views:
            try:
                sent = sock.sendmsg(views, (), _MSG_MORE)
            except BlockingIOError:
                await self._writable()
                continue
            advance(views, sent)

    async def _writable(self) -> None:
        """Wait until the socket takes more, without blocking the loop; ConnectionError when
        the transport is closed meanwhile (aborted, idle timeout, peer gone)."""
        loop = asyncio.get_running_loop()
        self.waits += 1
        while True:
            self._check_open()
            fut = loop.create_future()
            loop.add_writer(self._fd, _set_once, fut)
            try:
                await asyncio.wait_for(fut, _POLL_S)
                return
            except TimeoutError:
                continue
            finally:
                loop.remove_writer(self._fd)

    def _check_open(self) -> None:
        if self._close_after or self.transport is None or self.transport.is_closing():
            raise ConnectionError("association closed while sending")


def _set_once(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
