"""What the C-ECHO and C-STORE SCPs answer (PS3.4 Annex A and B), apart from any I/O."""

from __future__ import annotations

from hpacs.dimse import status
from hpacs.dimse.commands import (
    AFFECTED_SOP_CLASS_UID,
    COMMAND_FIELD,
    ERROR_COMMENT,
    OFFENDING_ELEMENT,
    REQUESTED_SOP_CLASS_UID,
    Command,
    CommandField,
    response_to,
)
from hpacs.store.ingest import Outcome, StoreResult

_STORE_STATUS: dict[Outcome, int] = {
    Outcome.STORED: status.SUCCESS,
    Outcome.REPLACED: status.SUCCESS,
    Outcome.DUPLICATE_KEPT: status.SUCCESS,
    Outcome.DUPLICATE_REJECTED: status.CANNOT_UNDERSTAND,
    Outcome.INVALID: status.CANNOT_UNDERSTAND,
    Outcome.MISMATCH: status.DATASET_MISMATCH,
    Outcome.OUT_OF_RESOURCES: status.OUT_OF_RESOURCES,
}


def echo_response(request: Command) -> bytes:
    return response_to(request, CommandField.C_ECHO_RSP, status.SUCCESS)


def store_response(request: Command, result: StoreResult) -> bytes:
    """C-STORE-RSP for an outcome; failures carry an Error Comment (LO: 64 chars at most)."""
    code = _STORE_STATUS[result.outcome]
    extra: Command = {}
    if code != status.SUCCESS and result.comment:
        extra[ERROR_COMMENT] = result.comment[:64]
        if result.offending_tag is not None:
            extra[OFFENDING_ELEMENT] = (result.offending_tag,)
    return response_to(request, CommandField.C_STORE_RSP, code, extra)


def store_refused(request: Command, code: int, comment: str) -> bytes:
    """C-STORE-RSP refusing a request before any data is kept (e.g. wrong SOP class)."""
    return response_to(request, CommandField.C_STORE_RSP, code, {ERROR_COMMENT: comment[:64]})


def unsupported_response(request: Command) -> bytes:
    """Any DIMSE request we do not provide gets 'unrecognized operation' (PS3.7 C.5.3)."""
    response_field = (int(request.get(COMMAND_FIELD, 0)) | 0x8000) & 0xFFFF
    extra: Command = {}
    if AFFECTED_SOP_CLASS_UID not in request and REQUESTED_SOP_CLASS_UID in request:
        extra[AFFECTED_SOP_CLASS_UID] = request[REQUESTED_SOP_CLASS_UID]
    return response_to(request, response_field, status.UNRECOGNIZED_OPERATION, extra)
