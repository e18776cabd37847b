"""DIMSE command sets (group 0000, always Implicit VR Little Endian, PS3.7 §6.3).

A command set is a few small elements, so a hand-written codec over a tag -> VR table is far
cheaper than a pydicom Dataset round trip on every message.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any


class CommandError(ValueError):
    """A command set that cannot be decoded."""


class CommandField(IntEnum):
    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


#: CommandDataSetType (0000,0800) value meaning "no data set follows".
NO_DATASET = 0x0101
#: A value other than NO_DATASET meaning "a data set follows".
DATASET_PRESENT = 0x0000

# Tag numbers, named as in PS3.7 Annex E.
GROUP_LENGTH = 0x00000000
AFFECTED_SOP_CLASS_UID = 0x00000002
REQUESTED_SOP_CLASS_UID = 0x00000003
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
MOVE_DESTINATION = 0x00000600
PRIORITY = 0x00000700
COMMAND_DATA_SET_TYPE = 0x00000800
STATUS = 0x00000900
OFFENDING_ELEMENT = 0x00000901
ERROR_COMMENT = 0x00000902
ERROR_ID = 0x00000903
AFFECTED_SOP_INSTANCE_UID = 0x00001000
REQUESTED_SOP_INSTANCE_UID = 0x00001001
EVENT_TYPE_ID = 0x00001002
ATTRIBUTE_IDENTIFIER_LIST = 0x00001005
ACTION_TYPE_ID = 0x00001008
REMAINING_SUBOPERATIONS = 0x00001020
COMPLETED_SUBOPERATIONS = 0x00001021
FAILED_SUBOPERATIONS = 0x00001022
WARNING_SUBOPERATIONS = 0x00001023
MOVE_ORIGINATOR_AE_TITLE = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031

_VR: dict[int, str] = {
    GROUP_LENGTH: "UL",
    AFFECTED_SOP_CLASS_UID: "UI",
    REQUESTED_SOP_CLASS_UID: "UI",
    COMMAND_FIELD: "US",
    MESSAGE_ID: "US",
    MESSAGE_ID_BEING_RESPONDED_TO: "US",
    MOVE_DESTINATION: "AE",
    PRIORITY: "US",
    COMMAND_DATA_SET_TYPE: "US",
    STATUS: "US",
    OFFENDING_ELEMENT: "AT",
    ERROR_COMMENT: "LO",
    ERROR_ID: "US",
    AFFECTED_SOP_INSTANCE_UID: "UI",
    REQUESTED_SOP_INSTANCE_UID: "UI",
    EVENT_TYPE_ID: "US",
    ATTRIBUTE_IDENTIFIER_LIST: "AT",
    ACTION_TYPE_ID: "US",
    REMAINING_SUBOPERATIONS: "US",
    COMPLETED_SUBOPERATIONS: "US",
    FAILED_SUBOPERATIONS: "US",
    WARNING_SUBOPERATIONS: "US",
    MOVE_ORIGINATOR_AE_TITLE: "AE",
    MOVE_ORIGINATOR_MESSAGE_ID: "US",
}

_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
# Fast paths of the codec (every C-STORE decodes a request and encodes a response): the US
# elements with their fixed element header, and the UIDs.
_US_HEAD = {tag: _HEADER.pack(0, tag, 2) for tag, vr in _VR.items() if vr == "US"}
_UI_TAGS = frozenset(tag for tag, vr in _VR.items() if vr == "UI")

Command = dict[int, Any]
"""A decoded command set: tag -> value (int, str or tuple of tag ints for AT)."""


def _decode_value(tag: int, raw: bytes) -> Any:
    vr = _VR.get(tag)
    if vr == "US":
        if len(raw) != 2:
            raise CommandError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) US of length {len(raw)}")
        return _US.unpack(raw)[0]
    if vr == "UL":
        if len(raw) != 4:
            raise CommandError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) UL of length {len(raw)}")
        return _UL.unpack(raw)[0]
    if vr == "AT":
        if len(raw) % 4:
            raise CommandError(f"AT value of length {len(raw)}")
        pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
        return tuple((pairs[i] << 16) | pairs[i + 1] for i in range(0, len(pairs), 2))
    if vr in {"UI", "AE", "LO"}:
        return raw.decode("ascii", "replace").rstrip("\0 ").lstrip(" " if vr == "AE" else "")
    return bytes(raw)  # unknown element: kept raw, never interpreted


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Decode an Implicit VR LE command set; unknown elements are kept as raw bytes."""
    buf = bytes(data)
    out: Command = {}
    pos, end = 0, len(buf)
    while pos < end:
        if end - pos < 8:
            raise CommandError("command set ends inside an element header")
        group, elem, length = _HEADER.unpack_from(buf, pos)
        pos += 8
        if group != 0x0000:
            raise CommandError(f"element ({group:04X},{elem:04X}) outside group 0000")
        if length > end - pos:
            raise CommandError(f"element (0000,{elem:04X}) overruns the command set")
        tag = elem
        end_value = pos + length
        if length == 2 and tag in _US_HEAD:
            out[tag] = buf[pos] | buf[pos + 1] << 8
        elif tag in _UI_TAGS:
            out[tag] = buf[pos:end_value].decode("ascii", "replace").rstrip("\0 ")
        else:
            out[tag] = _decode_value(tag, buf[pos:end_value])
        pos = end_value
    if COMMAND_FIELD not in out:
        raise CommandError("command set has no CommandField (0000,0100)")
    return out


def _encode_value(tag: int, value: Any) -> bytes:
    vr = _VR[tag]
    if vr == "US":
        return _US.pack(value)
    if vr == "UL":
        return _UL.pack(value)
    if vr == "AT":
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in value)
    raw = str(value).encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def encode_command(command: Command) -> bytes:
    """Encode a command set, elements in tag order, with a correct CommandGroupLength."""
    parts = []
    for tag in sorted(command):
        if tag == GROUP_LENGTH:
            continue
        value = command[tag]
        if value is None:
            continue
        head = _US_HEAD.get(tag)
        if head is not None:
            parts.append(head + _US.pack(value))
            continue
        raw = _encode_value(tag, value)
        parts.append(_HEADER.pack(0, tag, len(raw)) + raw)
    body = b"".join(parts)
    return command_set(body)


#: The four US elements every response without a data set has, in tag order (between the
#: Affected SOP Class UID and the Affected SOP Instance UID).
_RSP_US = struct.Struct("<" + "HHIH" * 4)


def ui_element(tag: int, value: Any) -> bytes:
    """One UI element of a command set (Implicit VR LE, NUL-padded to even length), for the
    commands packed directly on hot paths."""
    raw = str(value).encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\0"
    return _HEADER.pack(0, tag, len(raw)) + raw


def command_set(body: bytes) -> bytes:
    """A command set from its elements after CommandGroupLength (tag order): the length
    element put in front."""
    return _HEADER.pack(0, 0, 4) + _UL.pack(len(body)) + body


def _plain_response(request: Command, command_field: int, status: int) -> bytes:
    """``response_to`` without extra elements, packed directly (every C-STORE-RSP): the same
    bytes as ``encode_command`` of the same command (tests/dimse/test_commands.py)."""
    sop_class = request.get(AFFECTED_SOP_CLASS_UID)
    sop_instance = request.get(AFFECTED_SOP_INSTANCE_UID)
    body = b"".join((
        ui_element(AFFECTED_SOP_CLASS_UID, sop_class) if sop_class else b"",
        _RSP_US.pack(0, COMMAND_FIELD, 2, int(command_field),
                     0, MESSAGE_ID_BEING_RESPONDED_TO, 2, request.get(MESSAGE_ID, 0),
                     0, COMMAND_DATA_SET_TYPE, 2, NO_DATASET,
                     0, STATUS, 2, status),
        ui_element(AFFECTED_SOP_INSTANCE_UID, sop_instance) if sop_instance else b"",
    ))
    return command_set(body)


def response_to(
    request: Command, command_field: int, status: int, extra: Command | None = None
) -> bytes:
    """Encode the response to ``request`` (no data set) with ``status`` and extra elements."""
    if not extra:
        return _plain_response(request, command_field, status)
    command: Command = {
        COMMAND_FIELD: int(command_field),
        MESSAGE_ID_BEING_RESPONDED_TO: request.get(MESSAGE_ID, 0),
        COMMAND_DATA_SET_TYPE: NO_DATASET,
        STATUS: status,
    }
    sop_class = request.get(AFFECTED_SOP_CLASS_UID)
    if sop_class:
        command[AFFECTED_SOP_CLASS_UID] = sop_class
    sop_instance = request.get(AFFECTED_SOP_INSTANCE_UID)
    if sop_instance:
        command[AFFECTED_SOP_INSTANCE_UID] = sop_instance
    if extra:
        command.update(extra)
    return encode_command(command)
