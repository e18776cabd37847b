"""The C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3), apart from any I/O.

:func:`parse_retrieve` validates a C-MOVE/C-GET identifier (reusing the C-FIND parser) and
returns the IMAGE-level :class:`~hpacs.index.query.Query` that lists the instances it selects;
:class:`SubOperations` keeps the counts and builds the pending and final responses;
:func:`choose_context` picks the presentation context a stored instance is sent on.
The adapters (net/dimse_server.py for both, net/storage_scu.py for C-MOVE's own association)
do the sending.

Statuses (PS3.4 Tables C.4-2 and C.4-3):

- ``0xFF00`` pending, after every sub-operation, with Number of Remaining/Completed/Failed/
  Warning Sub-operations;
- ``0x0000`` every sub-operation completed (also: nothing matched);
- ``0xB000`` warning: one or more sub-operations failed or ended with a warning; the final
  response carries the Failed SOP Instance UID List (0008,0058);
- ``0xA702`` refused, out of resources, unable to perform sub-operations: every sub-operation
  failed (e.g. the move destination is down, or no accepted context fits any instance);
- ``0xA801`` refused, move destination unknown (C-MOVE);
- ``0xA900`` identifier does not match SOP class (QueryRetrieveLevel missing/invalid, unique
  key of the level missing);
- ``0xC000`` unable to process (undecodable identifier, malformed value);
- ``0xFE00`` sub-operations terminated after a C-CANCEL-RQ (with the remaining count).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from hpacs.dimse import status
from hpacs.dimse.commands import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    COMPLETED_SUBOPERATIONS,
    DATASET_PRESENT,
    ERROR_COMMENT,
    FAILED_SUBOPERATIONS,
    MESSAGE_ID,
    MOVE_ORIGINATOR_AE_TITLE,
    MOVE_ORIGINATOR_MESSAGE_ID,
    OFFENDING_ELEMENT,
    PRIORITY,
    REMAINING_SUBOPERATIONS,
    WARNING_SUBOPERATIONS,
    Command,
    CommandField,
    command_set,
    encode_command,
    response_to,
    ui_element,
)
from hpacs.dimse.find import (
    PATIENT_ROOT_FIND,
    STATUS_UNABLE_TO_PROCESS,
    STUDY_ROOT_FIND,
    FindError,
    parse_find,
)
from hpacs.index.query import IMAGE, Query
from hpacs.pixels.transcode import choose_syntax

PATIENT_ROOT_MOVE: Final = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET: Final = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_MOVE: Final = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET: Final = "1.2.840.10008.5.1.4.1.2.2.3"
#: Retrieve information model -> the FIND model whose levels and keys it shares.
MOVE_SOP_CLASSES: Final[dict[str, str]] = {
    PATIENT_ROOT_MOVE: PATIENT_ROOT_FIND,
    STUDY_ROOT_MOVE: STUDY_ROOT_FIND,
}
GET_SOP_CLASSES: Final[dict[str, str]] = {
    PATIENT_ROOT_GET: PATIENT_ROOT_FIND,
    STUDY_ROOT_GET: STUDY_ROOT_FIND,
}
RETRIEVE_SOP_CLASSES: Final[dict[str, str]] = {**MOVE_SOP_CLASSES, **GET_SOP_CLASSES}

STATUS_WARNING: Final = 0xB000
STATUS_UNABLE_TO_PERFORM: Final = 0xA702
STATUS_MOVE_DESTINATION_UNKNOWN: Final = 0xA801

_FAILED_LIST: Final = 0x00080058
_QR_LEVEL: Final = 0x00080052
#: The unique key each level's identifier must carry (PS3.4 C.4.2.2.1 / C.4.3.2.1).
_LEVEL_UNIQUE: Final = {"PATIENT": ("PatientID", 0x00100020),
                        "STUDY": ("StudyInstanceUID", 0x0020000D),
                        "SERIES": ("SeriesInstanceUID", 0x0020000E),
                        "IMAGE": ("SOPInstanceUID", 0x00080018)}
#: Explicit VR limits a UI value to 65534 bytes; longer Failed SOP Instance UID lists are cut.
_MAX_UI_BYTES: Final = 65534


@dataclass
class RetrieveRequest:
    model: str
    level: str
    #: IMAGE-level query listing every instance the identifier selects.
    query: Query
    explicit_vr: bool
    little_endian: bool


def parse_retrieve(sop_class: str, identifier: bytes, transfer_syntax: str) -> RetrieveRequest:
    """Validate a C-MOVE/C-GET identifier; raises :class:`~hpacs.dimse.find.FindError`.

    The level's unique key must be present with a value (a single UID or a list); keys of
    higher levels restrict as in C-FIND. Matching is exact, so names are case-sensitive here.
    """
    find_model = RETRIEVE_SOP_CLASSES.get(sop_class)
    if find_model is None:
        raise FindError(status.SOP_CLASS_NOT_SUPPORTED, f"{sop_class} is not a retrieve model")
    req = parse_find(find_model, identifier, transfer_syntax, case_insensitive_names=False)
    keyword, tag = _LEVEL_UNIQUE[req.level]
    matcher = req.query.keys.get(keyword)
    if matcher is None or not matcher.exact_values():
        raise FindError(status.DATASET_MISMATCH,
                        f"{keyword} with a value is required at level {req.level}", tag)
    return RetrieveRequest(sop_class, req.level, Query(IMAGE, dict(req.query.keys)),
                           req.explicit_vr, req.little_endian)


def choose_context(accepted: dict[int, tuple[str, str]], sop_class: str, stored_ts: str,
                   allowed: set[int] | None = None, *,
                   allow_lossy: bool = False) -> tuple[int, str] | None:
    """(context ID, transfer syntax) to send a stored instance on, or None (sub-op fails).

    The syntax is :func:`hpacs.pixels.transcode.choose_syntax` over the syntaxes accepted for
    the SOP class, in the order the peer proposed them (context IDs): as stored, else Explicit
    then Implicit VR LE, else a lossless syntax we encode (lossy ones only with
    ``allow_lossy``); anything but the stored syntax is transcoded when sent.
    ``allowed`` restricts the candidate contexts (C-GET: those with the SCP role accepted).
    """
    candidates: dict[str, int] = {}
    for cid, (abstract, ts) in sorted(accepted.items()):
        if abstract == sop_class and (allowed is None or cid in allowed):
            candidates.setdefault(ts, cid)
    ts = choose_syntax(stored_ts, candidates, allow_lossy=allow_lossy)
    return None if ts is None else (candidates[ts], ts)


def store_outcome(code: int) -> str:
    """Classify a C-STORE-RSP status: "completed", "warning" or "failed" (PS3.4 B.2.3)."""
    if code == status.SUCCESS:
        return "completed"
    if code == 0x0001 or (code & 0xF000) == 0xB000:
        return "warning"
    return "failed"


@dataclass
class SubOperations:
    """Counts of one C-MOVE/C-GET and the responses that report them."""

    request: Command
    response_field: int
    total: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    explicit_vr: bool = False
    little_endian: bool = True
    _pending_head: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def remaining(self) -> int:
        return self.total - self.completed - self.failed - self.warning

    def record(self, sop_instance_uid: str, outcome: str) -> None:
        if outcome == "completed":
            self.completed += 1
        elif outcome == "warning":
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_instance_uid)

    def fail_remaining(self, uids: list[str]) -> None:
        for uid in uids:
            self.record(uid, "failed")

    def _counts(self, with_remaining: bool) -> Command:
        counts: Command = {COMPLETED_SUBOPERATIONS: self.completed,
                           FAILED_SUBOPERATIONS: self.failed,
                           WARNING_SUBOPERATIONS: self.warning}
        if with_remaining:
            counts[REMAINING_SUBOPERATIONS] = self.remaining
        return {k: min(v, 0xFFFF) for k, v in counts.items()}

    def pending(self) -> bytes:
        """A pending response with the counts so far: the same bytes as ``response_to`` with
        them (tests/dimse/test_retrieve_unit.py), packed from a per-operation prefix (one per
        sub-operation: the generic encoder was ~4 % of a windowed C-GET's loop CPU)."""
        if self._pending_head is None:
            self._pending_head = _pending_head(self.request, self.response_field)
        return self._pending_head + _COUNTS.pack(0, REMAINING_SUBOPERATIONS, 2,
                                   min(self.remaining, 0xFFFF),
                                   0, COMPLETED_SUBOPERATIONS, 2, min(self.completed, 0xFFFF),
                                   0, FAILED_SUBOPERATIONS, 2, min(self.failed, 0xFFFF),
                                   0, WARNING_SUBOPERATIONS, 2, min(self.warning, 0xFFFF))

    def final_status(self, cancelled: bool = False) -> int:
        if cancelled:
            return status.CANCEL
        if self.total and self.failed == self.total:
            return STATUS_UNABLE_TO_PERFORM
        if self.failed or self.warning:
            return STATUS_WARNING
        return status.SUCCESS

    def final(self, cancelled: bool = False, comment: str = "") -> tuple[bytes, bytes | None]:
        """The final response command and its identifier (Failed SOP Instance UID List)."""
        code = self.final_status(cancelled)
        extra = self._counts(cancelled)
        if comment:
            extra[ERROR_COMMENT] = comment[:64]
        identifier = None
        if self.failed_uids:
            extra[COMMAND_DATA_SET_TYPE] = DATASET_PRESENT
            identifier = failed_identifier(self.failed_uids, self.explicit_vr,
                                           self.little_endian)
        return response_to(self.request, self.response_field, code, extra), identifier


def failed_identifier(uids: list[str], explicit_vr: bool, little_endian: bool) -> bytes:
    kept: list[str] = []
    size = 0
    for uid in uids:
        size += len(uid) + 1
        if size > _MAX_UI_BYTES:
            break
        kept.append(uid)
    ds = Dataset()
    ds[_FAILED_LIST] = DataElement(_FAILED_LIST, "UI", kept if len(kept) > 1 else kept[0],
                                   validation_mode=pydicom_config.IGNORE)
    fp = DicomBytesIO()
    fp.is_little_endian = little_endian
    fp.is_implicit_VR = not explicit_vr
    write_dataset(fp, ds)
    return fp.getvalue()


def refused(request: Command, response_field: int, code: int, comment: str = "",
            offending: int | None = None) -> bytes:
    """A final response refusing the whole operation before any sub-operation."""
    extra: Command = {}
    if comment:
        extra[ERROR_COMMENT] = comment[:64]
    if offending is not None:
        extra[OFFENDING_ELEMENT] = (offending,)
    return response_to(request, response_field, code, extra)


def response_field_for(command_field: int) -> int:
    return (CommandField.C_GET_RSP if command_field == CommandField.C_GET_RQ
            else CommandField.C_MOVE_RSP)


__all__ = [
    "GET_SOP_CLASSES",
    "MOVE_SOP_CLASSES",
    "RETRIEVE_SOP_CLASSES",
    "STATUS_MOVE_DESTINATION_UNKNOWN",
    "STATUS_UNABLE_TO_PERFORM",
    "STATUS_UNABLE_TO_PROCESS",
    "STATUS_WARNING",
    "RetrieveRequest",
    "SubOperations",
    "choose_context",
    "parse_retrieve",
    "refused",
    "store_outcome",
    "store_request",
]


_ELEMENT = struct.Struct("<HHI")
#: The four count elements of a pending response (US each).
_COUNTS = struct.Struct("<" + "HHIH" * 4)
#: The US elements between a C-STORE-RQ's two UIDs: Command Field, Message ID, Priority,
#: Command Data Set Type.
_STORE_US = struct.Struct("<" + "HHIH" * 4)
_ORIGINATOR_ID = struct.Struct("<HHIH")
_UL_VALUE = struct.Struct("<I")


def _pending_head(request: Command, response_field: int) -> bytes:
    """The bytes of a pending response before its counts, CommandGroupLength included: the
    elements before the counts never change within one C-GET/C-MOVE (tags below (0000,1020))."""
    body = response_to(request, response_field, status.PENDING, {})[12:]
    return _ELEMENT.pack(0, 0, 4) + _UL_VALUE.pack(len(body) + _COUNTS.size) + body


def store_request(message_id: int, sop_class: str, sop_instance: str, *,
                  move_originator: tuple[str, int] | None = None) -> bytes:
    """A C-STORE-RQ command set (sub-operation of a C-GET, or of a C-MOVE with its originator),
    packed directly: the same bytes as ``encode_command`` (tests/dimse/test_retrieve_unit.py), one
    per sub-operation."""
    body = [ui_element(AFFECTED_SOP_CLASS_UID, sop_class),
            _STORE_US.pack(0, COMMAND_FIELD, 2, int(CommandField.C_STORE_RQ),
                           0, MESSAGE_ID, 2, message_id & 0xFFFF,
                           0, PRIORITY, 2, 0,
                           0, COMMAND_DATA_SET_TYPE, 2, DATASET_PRESENT),
            ui_element(AFFECTED_SOP_INSTANCE_UID, sop_instance)]
    if move_originator is not None:
        ae = move_originator[0].encode("ascii", "replace")
        if len(ae) % 2:
            ae += b" "
        body += [_ELEMENT.pack(0, MOVE_ORIGINATOR_AE_TITLE, len(ae)), ae,
                 _ORIGINATOR_ID.pack(0, MOVE_ORIGINATOR_MESSAGE_ID, 2, move_originator[1])]
    return command_set(b"".join(body))


def store_request_generic(message_id: int, sop_class: str, sop_instance: str, *,
                          move_originator: tuple[str, int] | None = None) -> bytes:
    """:func:`store_request` through the generic encoder (its oracle in the tests)."""
    command: Command = {
        COMMAND_FIELD: int(CommandField.C_STORE_RQ),
        MESSAGE_ID: message_id & 0xFFFF,
        AFFECTED_SOP_CLASS_UID: sop_class,
        AFFECTED_SOP_INSTANCE_UID: sop_instance,
        PRIORITY: 0,
        COMMAND_DATA_SET_TYPE: DATASET_PRESENT,
    }
    if move_originator is not None:
        command[MOVE_ORIGINATOR_AE_TITLE] = move_originator[0]
        command[MOVE_ORIGINATOR_MESSAGE_ID] = move_originator[1]
    return encode_command(command)
