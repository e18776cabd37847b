"""Helpers for driving real peers against a running hpacs (pynetdicom as the SCU)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, suppress
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import build_context, build_role
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from hpacs.dicom.part10 import read_file_meta
from hpacs.index.db import IndexDB

_config.LOG_HANDLER_LEVEL = "none"


@contextmanager
def chunked_sending():
    """pynetdicom sends a file's data set bytes exactly as stored (no decode/re-encode)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def associate(server, contexts, ae_title="PYNETDICOM", called=None, max_pdu=16382):
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.maximum_pdu_size = max_pdu
    for ctx in contexts:
        ae.add_requested_context(ctx.abstract_syntax, ctx.transfer_syntax)
    return ae.associate("127.0.0.1", server.dicom_port, ae_title=called or server.ae_title)


def send_files(server, paths: list[Path]) -> dict[Path, int]:
    """Send each file as-is on as few associations as 128 contexts allow; path -> status."""
    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in paths:
        meta = read_file_meta(path)
        groups[(meta.sop_class_uid, meta.transfer_syntax_uid)].append(path)
    keys = sorted(groups)
    statuses: dict[Path, int] = {}
    with chunked_sending():
        for start in range(0, len(keys), 120):
            chunk = keys[start:start + 120]
            assoc = associate(server, [build_context(sc, ts) for sc, ts in chunk])
            assert assoc.is_established
            for key in chunk:
                for path in groups[key]:
                    status = assoc.send_c_store(path)
                    statuses[path] = status.Status if "Status" in status else -1
            assoc.release()
    return statuses


def pynetdicom_get(port: int, called: str, studies, sop_classes,
                   max_pdu: int | None = None) -> tuple[dict[str, bytes], list[list[int]]]:
    """C-GET each study by pynetdicom on one association (Study Root; SCP role for
    ``sop_classes`` in Explicit VR LE): the data sets received by SOP Instance UID, as sent,
    and each C-GET's statuses in order."""
    received: dict[str, bytes] = {}

    def on_store(event):
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title="PYGET")
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called,
                         ext_neg=[build_role(c, scp_role=True) for c in sop_classes],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = []
    try:
        for study in studies:
            ident = pydicom.Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = study
            statuses.append([s.Status for s, _ in assoc.send_c_get(
                ident, StudyRootQueryRetrieveInformationModelGet)])
    finally:
        assoc.release()
    return received, statuses


def dataset_bytes(path: Path) -> bytes:
    """The data set part of a Part 10 file (everything after the file meta)."""
    meta = read_file_meta(path)
    return Path(path).read_bytes()[meta.dataset_offset:]


def open_index(data_dir: Path) -> IndexDB:
    return IndexDB(data_dir / "index", readonly=True)


def stored_dataset_bytes(data_dir: Path, sop_uid: str) -> bytes:
    """The data set bytes of an archived instance (after its Part 10 meta), found by its UID."""
    db = open_index(data_dir)
    try:
        entry = db.get_instance(sop_uid)
        assert entry is not None, sop_uid
        return dataset_bytes(data_dir / entry.path)
    finally:
        db.close()


def remotes_config(path: Path, remotes: dict[str, int], head: str = "") -> Path:
    """Write a TOML config at ``path``: ``head`` (other sections) then one ``[[remote]]`` per
    AE title -> port on 127.0.0.1 (the C-MOVE destinations); returns ``path``."""
    path.write_text(head + "".join(
        f'[[remote]]\nae_title = "{ae}"\nhost = "127.0.0.1"\nport = {port}\n\n'
        for ae, port in remotes.items()))
    return path


def sop_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)


class RecordingProxy:
    """A loopback TCP proxy that records what clients send, to check what an SCU really sent.
    ``slow_delay`` > 0: its server side reads 16 KB at a time through a small receive buffer
    with that pause after each read (a slow peer: the server's socket fills)."""

    def __init__(self, target_port: int, slow_delay: float = 0.0) -> None:
        import socket
        import threading

        self.slow_delay = slow_delay
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.streams: list[bytearray] = []
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        import socket
        import threading

        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.socket()
            if self.slow_delay:
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            upstream.connect(("127.0.0.1", self.target_port))
            record = bytearray()
            self.streams.append(record)
            for src, dst, rec, delay in ((client, upstream, record, 0.0),
                                         (upstream, client, None, self.slow_delay)):
                t = threading.Thread(target=self._pump, args=(src, dst, rec, delay),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src, dst, record, delay: float) -> None:
        import socket

        try:
            while data := src.recv(16384 if delay else 1 << 20):
                if record is not None:
                    record += data
                dst.sendall(data)
                if delay:
                    time.sleep(delay)
        except OSError:
            pass
        finally:
            for s in (dst, src):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for t in self._threads:
            t.join(10)


def sent_datasets(stream: bytes) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every C-STORE-RQ in a recorded client stream,
    parsed with pynetdicom's own PDU decoder (the reference, not ours)."""
    from io import BytesIO

    from pynetdicom.dsutils import decode
    from pynetdicom.pdu import P_DATA_TF

    out: dict[str, bytes] = {}
    command = bytearray()
    dataset = bytearray()
    uid = None
    pos = 0
    while pos + 6 <= len(stream):
        pdu_type = stream[pos]
        length = int.from_bytes(stream[pos + 2:pos + 6], "big")
        raw = stream[pos:pos + 6 + length]
        pos += 6 + length
        if pdu_type != 0x04:
            continue
        pdu = P_DATA_TF()
        pdu.decode(bytes(raw))
        for item in pdu.presentation_data_value_items:
            header, value = item.presentation_data_value[0], item.presentation_data_value[1:]
            if header & 1:  # command
                command += value
                if header & 2:
                    ds = decode(BytesIO(bytes(command)), True, True)
                    command.clear()
                    uid = str(ds.AffectedSOPInstanceUID) if ds.CommandField == 1 else None
            else:
                dataset += value
                if header & 2:
                    if uid is not None:
                        out[uid] = bytes(dataset)
                    dataset.clear()
    return out


#: A small query corpus: (patient, study, series, number, modality, name, date), with a
#: non-ASCII and a lower-case name; C-FIND and QIDO tests query the same one.
QUERY_CORPUS = [
    (1, 1, 1, 1, "CT", "DOE^JOHN", "20260215"),
    (1, 1, 1, 2, "CT", "DOE^JOHN", "20260215"),
    (1, 1, 1, 3, "CT", "DOE^JOHN", "20260215"),
    (1, 1, 2, 1, "MR", "DOE^JOHN", "20260215"),
    (1, 1, 2, 2, "MR", "DOE^JOHN", "20260215"),
    (1, 2, 1, 1, "CT", "DOE^JOHN", "20260315"),
    (2, 1, 1, 1, "CT", "Müller^Jürgen", "20260110"),
    (2, 1, 1, 2, "CT", "Müller^Jürgen", "20260110"),
    (3, 7, 1, 1, "US", "smith^anne", "20261231"),
]


def load_query_corpus(server, directory: Path, *, study_descriptions: bool = False) -> None:
    """Store QUERY_CORPUS plus pydicom's storage test files in ``server`` (all corpus files
    must be accepted)."""
    from tests.conftest import storage_test_files
    from tests.factories import make_ct, write

    paths = []
    for p, s, se, n, modality, name, date in QUERY_CORPUS:
        ds = make_ct(p, s, se, n, size=8, name=name)
        ds.Modality = modality
        ds.StudyDate = date
        if study_descriptions:
            ds.StudyDescription = f"STUDY {p}.{s}"
        if not name.isascii():
            ds.SpecificCharacterSet = "ISO_IR 192"
        paths.append(write(ds, directory))
    statuses = send_files(server, paths + storage_test_files())
    assert all(v == 0 for k, v in statuses.items() if k in paths)
