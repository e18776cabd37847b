"""Sending stored instances: the data set streamed from disk, and an asyncio storage SCU.

:func:`open_instance` / :func:`send_instance` put one stored instance on an association as a
C-STORE-RQ: the data set bytes after the Part 10 meta, read from the file in chunks and written
as P-DATA fragments (never a whole study in memory); an instance whose stored syntax the peer did
not accept is transcoded (in a worker thread) by ``hpacs.pixels.transcode`` into the syntax
``hpacs.dimse.retrieve.choose_context`` picked. The C-GET SCP uses them on the peer's own
association, :class:`StorageSCU` (our association as requestor, on ``ul.Connection``) for C-MOVE.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hpacs.dicom.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    Part10Error,
    read_file_meta,
)
from hpacs.dicom.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from hpacs.dimse import commands as cmd
from hpacs.dimse.assembler import CommandReceived, DimseError, MessageAssembler
from hpacs.dimse.retrieve import store_request
from hpacs.log import get_logger
from hpacs.net.filesend import SocketSink, dataset_offset_fast, resident, sendfile_wanted
from hpacs.pixels.transcode import TranscodeError
from hpacs.pixels.workers import run_transcode, transcoded_dataset
from hpacs.store.tiers import open_source
from hpacs.ul import (
    Aborted,
    AssociateRequest,
    AssociationAccepted,
    AssociationRejected,
    Connection,
    ConnectionClosed,
    DataReceived,
    LocalProtocolError,
    PresentationContext,
    ProtocolError,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)

log = get_logger("hpacs.scu")

#: File bytes read per chunk (each chunk becomes one or more P-DATA-TF PDUs).
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    #: The hot file (a ``str`` from the index: built per instance of a retrieve, a ``Path``
    #: cost ~5 % of a windowed C-GET's loop CPU in joins and conversions).
    path: Path | str
    #: For an instance not in a hot file: gives its bytes as a binary file (the archive's
    #: tier reader, called in a worker thread when the instance is opened).
    source: Callable[[], BinaryIO] | None = None


def stored_instance(entry, data_dir: Path | str, tiers=None) -> StoredInstance:
    """What to send for an index entry (``tiers``, the archive's tier reader, reads an
    instance that is not in a hot file)."""
    source = None
    if entry.cold is not None and tiers is not None:
        source = functools.partial(_tier_file, tiers, entry)
    return StoredInstance(entry.sop_class_uid, entry.sop_instance_uid,
                          entry.transfer_syntax_uid, os.path.join(data_dir, entry.path), source)


def _tier_file(tiers, entry) -> BinaryIO:
    return open_source(tiers.source(entry))


class SendError(Exception):
    """The instance cannot be sent (file unreadable, cannot be transcoded...): the
    sub-operation fails."""


class OpenedInstance:
    """A stored instance ready to send: a file positioned at its data set, bytes, or (``fd``)
    a region of a file whose pages are all cached, for ``sendfile``."""

    def __init__(self, fh, remaining: int, data: bytes | memoryview | None, *,
                 fd: int | None = None, offset: int = 0) -> None:
        self.fh = fh
        self.remaining = remaining
        self.data = data
        self.fd = fd
        self.offset = offset

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


#: Data sets up to this size are read whole when opened (one thread hop, and the read can run
#: ahead of the previous sub-operation); larger ones stream in CHUNK reads.
READ_WHOLE_MAX = 16 << 20


def _open_sync(item: StoredInstance) -> OpenedInstance:
    src = item.path if item.source is None else item.source()
    # closed by OpenedInstance.close
    fh = open(src, "rb") if isinstance(src, Path | str) else src  # noqa: SIM115
    try:
        meta = read_file_meta(fh)
        size = fh.seek(0, os.SEEK_END)
        fh.seek(meta.dataset_offset)
        remaining = size - meta.dataset_offset
        if remaining <= READ_WHOLE_MAX:
            data = fh.read(remaining)
            fh.close()
            if len(data) != remaining:
                raise OSError("file shorter than its size")
            return OpenedInstance(None, 0, data)
    except BaseException:
        fh.close()
        raise
    return OpenedInstance(fh, remaining, None)


#: Head bytes handed to the file-meta parser when the file was read whole (group 0002 is small).
_META_HEAD = 64 * 1024
_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def _open_hot(item: StoredInstance) -> int | None:
    """A descriptor of the instance's hot file; None for a cold one or an open error (the
    worker thread path then reports it)."""
    if item.source is not None:
        return None
    try:
        return os.open(item.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _open_cached(item: StoredInstance) -> OpenedInstance | None:
    """Read a hot file whole on the calling thread (the loop) when every byte of it is in the
    page cache: ``preadv`` with ``RWF_NOWAIT`` never waits for the disk, it fails or comes
    back short instead, and then the caller goes through a worker thread. Measured with py-spy
    on C-GET: the hop to the executor (``submit`` alone ~14 % of the loop's GIL time) and back
    cost more than copying a 526 KB file from the page cache."""
    if _NOWAIT is None or (fd := _open_hot(item)) is None:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > READ_WHOLE_MAX or size == 0:
            return None
        buf = bytearray(size)
        try:
            if os.preadv(fd, [buf], 0, _NOWAIT) != size:
                return None
        except OSError:  # EAGAIN: not all cached (or RWF_NOWAIT unsupported here)
            return None
    finally:
        os.close(fd)
    try:
        meta = read_file_meta(memoryview(buf)[:_META_HEAD])
    except Part10Error:
        return None
    if meta.dataset_offset > size:
        return None
    return OpenedInstance(None, 0, memoryview(buf)[meta.dataset_offset:])


#: Head bytes read to find the data set when the meta does not start with its group length.
_HEAD = 256


def _open_region(item: StoredInstance) -> OpenedInstance | None:
    """The data set of a hot file as a file region for ``sendfile``, when every page of the
    file is in the page cache (``filesend.resident``): open, fstat, a 256-byte read for the
    meta, mincore. None otherwise (the caller reads it as before)."""
    if (fd := _open_hot(item)) is None:
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, _HEAD, 0)
        offset = dataset_offset_fast(head)
        if offset is None:
            head = os.pread(fd, _META_HEAD, 0)
            offset = read_file_meta(memoryview(head)).dataset_offset
        if not 0 < offset < size or not resident(fd, size):
            os.close(fd)
            return None
    except (OSError, Part10Error):
        os.close(fd)
        return None
    return OpenedInstance(None, size - offset, None, fd=fd, offset=offset)


def _read_source(item: StoredInstance) -> bytes:
    assert item.source is not None
    with item.source() as f:
        return f.read()


async def open_instance(item: StoredInstance, target_ts: str, *, allow_lossy: bool = False,
                        workers: int = 2, region: bool = False) -> OpenedInstance:
    """Open the stored file (a worker thread), or transcode it into ``target_ts`` (worker
    processes, see ``hpacs.pixels.workers``); raises :class:`SendError`. ``region``: the
    caller can ``sendfile`` (:class:`~hpacs.net.filesend.SocketSink`), so a cached hot file
    sent as stored is not read at all."""
    loop = asyncio.get_running_loop()
    if target_ts == item.transfer_syntax_uid:
        opened = _open_region(item) if region else None
        if opened is None:
            opened = _open_cached(item)
        if opened is not None:
            return opened
        try:
            return await loop.run_in_executor(None, _open_sync, item)
        except Exception as exc:
            raise SendError(f"{item.sop_instance_uid}: {exc}") from exc
    started = time.perf_counter()
    try:
        source: Path | bytes = Path(item.path)
        if item.source is not None:  # not a hot file: the codec workers get its bytes
            source = await loop.run_in_executor(None, _read_source, item)
        data = await run_transcode(transcoded_dataset, source, target_ts,
                                   allow_lossy=allow_lossy, workers=workers)
    except TranscodeError as exc:
        log.warning("transcode.failed", sop=item.sop_instance_uid,
                    stored=item.transfer_syntax_uid, target=target_ts, error=str(exc))
        raise SendError(f"{item.sop_instance_uid}: {exc}") from exc
    except Exception as exc:
        raise SendError(f"{item.sop_instance_uid}: {exc}") from exc
    log.debug("transcode", sop=item.sop_instance_uid, stored=item.transfer_syntax_uid,
              sent=target_ts, bytes=len(data), ms=round((time.perf_counter() - started) * 1000, 2))
    return OpenedInstance(None, 0, data)


def start_open(item: StoredInstance, target_ts: str, *, allow_lossy: bool = False,
               workers: int = 2, region: bool = False) -> asyncio.Future:
    """:func:`open_instance` as a future: already finished when the instance is a cached hot
    file sent as stored (opened here, on the loop: no task, no loop turn per instance), else
    the task opening it."""
    if target_ts == item.transfer_syntax_uid:
        opened = _open_region(item) if region else None
        if opened is not None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(opened)
            return done
    return asyncio.ensure_future(open_instance(item, target_ts, allow_lossy=allow_lossy,
                                               workers=workers, region=region))


async def send_instance(
    conn: Connection,
    write: Callable[[list], None],
    wait_writable: Callable[[], Awaitable[None]],
    context_id: int,
    command: bytes,
    opened: OpenedInstance,
    before: list | None = None,
    sink: SocketSink | None = None,
) -> bool:
    """Write a C-STORE-RQ command and its data set, chunk by chunk, honouring back-pressure;
    ``before`` (PDUs already framed, e.g. the C-GET's last pending response) goes in the same
    write as the command. A file region (``opened.fd``) goes by ``sendfile`` through ``sink``
    when its transport has nothing buffered, else it is read (cached: no disk wait) and written.
    Returns whether the data set went by ``sendfile``.

    Raises LocalProtocolError if the association went away, OSError on a read error midway
    (the caller must then abort: a half-sent message cannot be recovered)."""
    head = conn.send_data_buffers(context_id, True, command)
    if before:
        head = before + head
    if opened.fd is not None:
        if sink is not None and sink.ready():
            headers = conn.send_data_headers(context_id, False, opened.remaining)
            try:
                await sink.send(head, headers, opened.fd, opened.offset)
            except ConnectionError:
                raise LocalProtocolError("association closed while sending") from None
            return True
        opened.data = os.pread(opened.fd, opened.remaining, opened.offset)
        if len(opened.data) != opened.remaining:
            raise OSError("file shorter than when opened")
    if opened.data is not None:
        # one writelines for command and data set: one send for the whole message when the
        # socket buffer has room, not a small send for the command first
        write(head + conn.send_data_buffers(context_id, False, opened.data))
        return False
    write(head)
    loop = asyncio.get_running_loop()
    remaining = opened.remaining
    fh = opened.fh
    if remaining <= 0:
        write(conn.send_data_buffers(context_id, False, b""))
        return False
    while remaining > 0:
        chunk = await loop.run_in_executor(None, fh.read, min(CHUNK, remaining))
        if not chunk:
            raise OSError("file shorter than when opened")
        remaining -= len(chunk)
        write(conn.send_data_buffers(context_id, False, chunk, last=remaining <= 0))
        await wait_writable()
    return False


def response_status(response: asyncio.Future) -> int:
    """The status of a finished :meth:`StorageSCU.invoke` (``untimed``) response future;
    raises :class:`AssociationFailed` as the timed one would."""
    return int(response.result().get(cmd.STATUS, 0xC000))


class AssociationFailed(Exception):
    """Could not establish the association (refused, rejected, timed out, aborted)."""


class StorageSCU:
    """One outgoing association, storage SCU: propose, C-STORE, release.

    With ``async_window`` > 1 it proposes an asynchronous operations window (PS3.7 D.3.3.3)
    of (that many invoked, 1 performed); :attr:`window` is what the acceptor granted (1 from
    every peer that answers no window: dcmtk, Orthanc, pynetdicom). The caller keeps at most
    that many :meth:`invoke` responses outstanding; :meth:`store` is one at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        called_ae: str,
        calling_ae: str,
        contexts: Iterable[tuple[str, tuple[str, ...]]],
        max_pdu_length: int = 1 << 20,
        timeout: float = 30.0,
        async_window: int = 1,
        sendfile: str = "auto",
    ) -> None:
        self.host = host
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.contexts = [
            PresentationContext(2 * i + 1, abstract, tuple(syntaxes))
            for i, (abstract, syntaxes) in enumerate(list(contexts)[:128])
        ]
        self.timeout = timeout
        self.async_window = max(1, async_window)
        self.sendfile_policy = sendfile  # ``dicom.sendfile``
        self.conn = Connection(Role.REQUESTOR, max_pdu_length=max_pdu_length)
        self.assembler = MessageAssembler()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task | None = None
        self._established: asyncio.Future | None = None
        self._released: asyncio.Future | None = None
        self._waiters: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._dead: str | None = None
        self._sink: SocketSink | None = None
        self._held: list = []  # written while a sendfile was under way
        self._granted: int | None = None  # the window, once the association is accepted
        #: Data sets sent by ``sendfile`` on this association.
        self.sent_by_sendfile = 0

    @property
    def accepted_contexts(self) -> dict[int, tuple[str, str]]:
        return self.conn.accepted_contexts

    @property
    def alive(self) -> bool:
        """Neither failed nor aborted (a lost association is not reused)."""
        return self._dead is None

    @property
    def failure(self) -> str | None:
        """Why the association is gone (None while alive)."""
        return self._dead

    @property
    def sendfile(self) -> bool:
        """Data sets sent as stored can go by ``sendfile``: a plain TCP connection, and
        ``dicom.sendfile`` allows it with the window the destination granted."""
        return (self._sink is not None and self._sink.usable
                and sendfile_wanted(self.sendfile_policy, self.window))

    @property
    def window(self) -> int:
        """C-STOREs we may have outstanding on this association (what the acceptor granted;
        read once established: the negotiation's derivation was ~2 % of a C-MOVE's loop CPU
        when asked per sub-operation)."""
        if self._granted is not None:
            return self._granted
        return self.conn.we_may_invoke or self.async_window

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise AssociationFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._sink = SocketSink(self._writer.transport)
        self._established = loop.create_future()
        request = AssociateRequest(
            called_ae=self.called_ae,
            calling_ae=self.calling_ae,
            presentation_contexts=tuple(self.contexts),
            max_pdu_length=self.conn.max_pdu_length,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            # we invoke C-STOREs and perform none of the peer's operations
            async_ops_window=(self.async_window, 1) if self.async_window > 1 else None,
        )
        self._writer.write(self.conn.request_association(request))
        self._read_task = asyncio.ensure_future(self._read_loop())
        try:
            await asyncio.wait_for(asyncio.shield(self._established), self.timeout)
        except TimeoutError:
            self.abort()
            raise AssociationFailed("no A-ASSOCIATE response in time") from None
        self._granted = self.conn.we_may_invoke or self.async_window

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while not self.conn.closed:
                data = await self._reader.read(1 << 18)
                self._handle(self.conn.receive_data(data))
                if not data:
                    break
        except (OSError, LocalProtocolError) as exc:
            self._fail(f"connection lost: {exc}")
        finally:
            self._fail("connection closed")
            if self._writer is not None:
                self._writer.close()

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, AssociationAccepted):
                if self._established is not None and not self._established.done():
                    self._established.set_result(None)
            elif isinstance(event, AssociationRejected):
                r = event.reject
                self._fail(f"association rejected (result {r.result}, source {r.source}, "
                           f"reason {r.reason})")
            elif isinstance(event, DataReceived):
                for pdv in event.pdvs:
                    try:
                        message = self.assembler.receive(pdv.context_id, pdv.is_command,
                                                         pdv.is_last, pdv.data)
                    except DimseError as exc:
                        self.abort()
                        self._fail(f"DIMSE error: {exc}")
                        return
                    if isinstance(message, CommandReceived):
                        command = message.command
                        if command.get(cmd.COMMAND_FIELD) == cmd.CommandField.C_STORE_RSP:
                            waiter = self._waiters.pop(
                                command.get(cmd.MESSAGE_ID_BEING_RESPONDED_TO, -1), None)
                            if waiter is not None and not waiter.done():
                                waiter.set_result(command)
            elif isinstance(event, ReleaseConfirmed):
                if self._released is not None and not self._released.done():
                    self._released.set_result(None)
            elif isinstance(event, ReleaseRequested):
                with contextlib.suppress(LocalProtocolError):
                    self._write([self.conn.release_reply()])
            elif isinstance(event, Aborted | ProtocolError | ConnectionClosed):
                self._fail(f"association ended: {type(event).__name__}")
        self._write([self.conn.data_to_send()])
        if self.conn.closed and self._writer is not None:
            self._writer.close()

    def _fail(self, reason: str) -> None:
        if self._dead is None:
            self._dead = reason
        exc = AssociationFailed(self._dead)
        for fut in (self._established, self._released, *self._waiters.values()):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a caller may never await it
        self._waiters.clear()

    def _write(self, buffers: list) -> None:
        if self._writer is not None and not self._writer.is_closing():
            data = [b for b in buffers if b]
            if data and self._sink is not None and self._sink.busy:
                self._held += data  # would land inside the PDU being sent
            elif data:
                self._writer.writelines(data)

    async def _drain(self) -> None:
        if self._writer is not None:
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                self._fail(f"connection lost: {exc}")

    async def store(self, item: StoredInstance, context_id: int, opened: OpenedInstance, *,
                    move_originator: tuple[str, int] | None = None) -> int:
        """Send one instance and return the status of its C-STORE-RSP.

        Raises :class:`AssociationFailed` when the association is gone."""
        return await (await self.invoke(item, context_id, opened,
                                        move_originator=move_originator))

    async def invoke(self, item: StoredInstance, context_id: int, opened: OpenedInstance, *,
                     move_originator: tuple[str, int] | None = None,
                     untimed: bool = False) -> Awaitable[int]:
        """Send one instance (the whole message: one caller at a time) and return the
        awaitable of its C-STORE-RSP status, matched by Message ID whatever the order the
        responses come in; that awaitable raises :class:`AssociationFailed` when the
        association goes or no response comes within ``timeout`` (the association is then
        aborted). Raises :class:`AssociationFailed` now when the association is gone.

        ``untimed``: the awaitable is the bare future of the response command (no task and
        no timer per instance); the caller then owns the timeout (:meth:`abort` when none of
        its outstanding responses came within :attr:`timeout`) and reads the status with
        :func:`response_status`."""
        if self._dead is not None:
            raise AssociationFailed(self._dead)
        message_id = next(self._ids) & 0xFFFF or next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[message_id] = waiter
        command = store_request(message_id, item.sop_class_uid, item.sop_instance_uid,
                                move_originator=move_originator)
        try:
            if await send_instance(self.conn, self._write, self._drain, context_id, command,
                                   opened, sink=self._sink):
                self.sent_by_sendfile += 1
        except LocalProtocolError:
            raise AssociationFailed(self._dead or "association not established") from None
        except OSError:
            self.abort()
            raise
        finally:
            held, self._held = self._held, []
            self._write(held)
        return waiter if untimed else self._response(waiter)

    async def _response(self, waiter: asyncio.Future) -> int:
        try:
            response = await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            self.abort()
            raise AssociationFailed("no C-STORE response in time") from None
        return int(response.get(cmd.STATUS, 0xC000))

    async def release(self) -> None:
        if self._dead is not None or not self.conn.established:
            self.abort()
            return
        self._released = asyncio.get_running_loop().create_future()
        try:
            self._write([self.conn.release_request()])
            await asyncio.wait_for(self._released, self.timeout)
        except (LocalProtocolError, AssociationFailed, TimeoutError):
            self.abort()
        finally:
            await self._close()

    def abort(self, reason: str = "aborted") -> None:
        with contextlib.suppress(LocalProtocolError):
            self._write([self.conn.abort()])
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self._fail(reason)

    async def _close(self) -> None:
        if self._sink is not None:
            self._sink.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 5)
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(BaseException):
                await self._read_task


def storage_contexts(items: Iterable[StoredInstance]) -> list[tuple[str, tuple[str, ...]]]:
    """Presentation contexts to propose for ``items`` (uncapped; at most 128 fit in one
    association): each SOP class in each stored syntax (one syntax per context, so the stored
    one can always be chosen), then each SOP class in the little-endian uncompressed syntaxes
    not proposed already (the fallback every instance can be transcoded to)."""
    stored: dict[str, list[str]] = {}
    for it in items:
        syntaxes = stored.setdefault(it.sop_class_uid, [])
        if it.transfer_syntax_uid not in syntaxes:
            syntaxes.append(it.transfer_syntax_uid)
    contexts: list[tuple[str, tuple[str, ...]]] = []
    fallbacks: list[tuple[str, tuple[str, ...]]] = []
    for sop_class, syntaxes in stored.items():
        contexts += [(sop_class, (ts,)) for ts in syntaxes]
        rest = tuple(ts for ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE) if ts not in syntaxes)
        if rest:
            fallbacks.append((sop_class, rest))
    return contexts + fallbacks
