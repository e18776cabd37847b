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
import ctypes
import mmap
import os
import socket
import ssl
import struct

from hpacs._ext.fileio import advance  # the one short-write advance (pure Python)
from hpacs.log import get_logger

log = get_logger("hpacs.scu")

_MSG_MORE = getattr(socket, "MSG_MORE", 0)
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


def _libc_calls():
    """libc's mmap/mincore/munmap through ctypes (Python exposes no mincore); None elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mmap_, mincore, munmap = libc.mmap, libc.mincore, libc.munmap
    except (OSError, AttributeError):
        return None
    mmap_.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int64]
    mmap_.restype = ctypes.c_void_p
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    mincore.restype = ctypes.c_int
    munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    munmap.restype = ctypes.c_int
    return mmap_, mincore, munmap


_LIBC = _libc_calls()
_MAP_FAILED = ctypes.c_void_p(-1).value
_PAGE = mmap.PAGESIZE
_vec = ctypes.create_string_buffer(1024)


def resident(fd: int, size: int) -> bool:
    """True when the first ``size`` bytes of the file are all in the page cache (reading
    them cannot wait for the disk). False when unknown (no mincore here)."""
    global _vec
    if _LIBC is None or size <= 0:
        return False
    mmap_, mincore, munmap = _LIBC
    addr = mmap_(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        return False
    try:
        pages = (size + _PAGE - 1) // _PAGE
        if len(_vec) < pages:
            _vec = ctypes.create_string_buffer(pages * 2)
        if mincore(addr, size, _vec) != 0:
            return False
        # bit 0 of each byte: that page is resident
        return b"\x00" not in ctypes.string_at(_vec, pages).translate(_LOW_BIT)
    finally:
        munmap(addr, size)


_LOW_BIT = bytes(b & 1 for b in range(256))

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
        sock = transport.get_extra_info("socket") if transport is not None else None
        self.usable = bool(
            sock is not None and hasattr(os, "sendfile") and _LIBC is not None
            and transport.get_extra_info("sslcontext") is None  # type: ignore[union-attr]
            and not isinstance(sock, ssl.SSLSocket)
            and getattr(sock, "type", socket.SOCK_STREAM) == socket.SOCK_STREAM)
        self._transport_fd = sock.fileno() if self.usable else -1

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
