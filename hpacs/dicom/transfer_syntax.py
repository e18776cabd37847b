"""The transfer syntaxes hpacs can keep, and how each one encodes a data set.

We store data sets exactly as received, so we accept any syntax whose element framing we can
walk (to index it and check it is whole): the uncompressed ones, deflate, and every
encapsulated one. JPIP-referenced syntaxes carry no pixel data of their own and are not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID, AllTransferSyntaxes

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

_JPIP_REFERENCED = {
    "1.2.840.10008.1.2.4.94",
    "1.2.840.10008.1.2.4.95",
    "1.2.840.10008.1.2.4.204",
    "1.2.840.10008.1.2.4.205",
}


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a data set in one transfer syntax is framed."""

    uid: str
    explicit_vr: bool
    little_endian: bool
    deflated: bool
    encapsulated: bool


def _encoding(uid: str) -> Encoding:
    u = UID(uid)
    return Encoding(
        uid=uid,
        explicit_vr=not u.is_implicit_VR,
        little_endian=u.is_little_endian,
        deflated=u.is_deflated,
        encapsulated=u.is_encapsulated,
    )


#: Every transfer syntax hpacs accepts for storage, in pydicom's order.
STORABLE: dict[str, Encoding] = {
    str(uid): _encoding(str(uid)) for uid in AllTransferSyntaxes if str(uid) not in _JPIP_REFERENCED
}


def encoding_of(uid: str) -> Encoding:
    """The framing of ``uid``; raises KeyError for a syntax we cannot keep."""
    return STORABLE[uid]
