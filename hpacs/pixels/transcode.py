"""Transcoding a stored instance to another transfer syntax (PS3.5), for every retrieve path.

C-GET/C-MOVE sub-operations, WADO-RS, WADO-URI and ``hpacs send`` all pick the syntax with
:func:`choose_syntax` and produce the bytes with :func:`transcode` (frames: :func:`encode_frames`),
so a peer gets the same answer whichever way it asks. The codecs are pydicom 3's pixel framework:
its decoders (with hpacs's RLE decoder), and the encoders RLE Lossless (hpacs's Cython RLE,
plugged in as ``"hpacs"``), JPEG-LS (pyjpegls) and JPEG 2000 (pylibjpeg-openjpeg); deflate is
zlib. No codec is written here.

Policy:

* Lossless data never becomes lossy unless the caller allows it (``allow_lossy``: the config
  ``pixels.allow_lossy_transcode`` AND a requester that named the lossy syntax).
* Lossy stored data may be decoded (to a native or a lossless syntax). Lossy Image Compression
  (0028,2110) is then "01", with the method and ratio of the stored encoding when the instance
  did not record them (PS3.3 C.7.6.1.1.5); a lossy encoding adds its own method and ratio.
* Colour that a lossy codec stored in a YCbCr transform (JPEG baseline YBR_FULL_422...) is
  decoded to RGB, as pydicom's ``pixel_array`` does; lossless YCbCr stays YCbCr (422 data comes
  out expanded, so YBR_FULL_422 becomes YBR_FULL). Decoded colour is sample-interleaved
  (Planar Configuration 0).
* Instances without Pixel Data (SR, PR, KO...) only change encoding; an encapsulated syntax
  encodes them as explicit VR little endian (PS3.5 A.4).
* The SOP Instance UID is kept: the transfer syntax is not part of an instance's identity, and
  a C-STORE sub-operation must carry the instance that was asked for.

Encapsulated output has one fragment per frame and a Basic Offset Table (an Extended Offset
Table when the fragments pass 4 GiB). Every failure raises :class:`TranscodeError`, whose message
names the syntaxes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import get_decoder, get_encoder
from pydicom.pixels.encoders import RLELosslessEncoder
from pydicom.pixels.utils import _get_jpg_parameters, pack_bits
from pydicom.uid import UID

from hpacs.dicom.part10 import build_file_meta, read_file_meta
from hpacs.dicom.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    STORABLE,
)
from hpacs.pixels._kernels import PixelDataError
from hpacs.pixels.decode import PLUGIN, Source, decoding_plugin, load

__all__ = [
    "ENCODABLE",
    "LOSSLESS",
    "NATIVE_TARGETS",
    "TranscodeError",
    "Transcoded",
    "can_produce",
    "choose_syntax",
    "encode_frames",
    "is_lossy_syntax",
    "transcode",
]

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"

#: Syntaxes whose encoding never loses information (everything else may be lossy).
LOSSLESS: frozenset[str] = frozenset({
    IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, RLE_LOSSLESS,
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # JPEG lossless (processes 14)
    JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, "1.2.840.10008.1.2.4.92",  # J2K part 2 lossless
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",  # HTJ2K lossless (RPCL)
    "1.2.840.10008.1.2.4.110",  # JPEG XL lossless
})
#: Native syntaxes we write (big endian is retired and pydicom cannot swap values into it).
NATIVE_TARGETS: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE)
#: The DCT processes: always lossy, whatever the instance says.
_ALWAYS_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
#: (0028,2114) Lossy Image Compression Method of the stored encoding (PS3.3 C.7.6.1.1.5.1).
_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1", JPEG_2000: "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1", "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.111": "ISO_18181_1", "1.2.840.10008.1.2.4.112": "ISO_18181_1",
}
#: Encoder options for the lossy targets (used only when lossy output is allowed).
_LOSSY_OPTIONS = {JPEG_LS_NEAR_LOSSLESS: {"jls_error": 2}, JPEG_2000: {"j2k_cr": [10]}}
_PIXEL_DATA = 0x7FE00010
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

if PLUGIN not in RLELosslessEncoder.available_plugins:
    RLELosslessEncoder.add_plugin(PLUGIN, ("hpacs.pixels.rle", "encode_frame_plugin"))


def _available(uid: str) -> bool:
    try:
        return get_encoder(uid).is_available
    except (NotImplementedError, KeyError, ValueError):
        return False


#: Encapsulated syntaxes we can encode, lossless first (the order the choice tries them in).
ENCODABLE: tuple[str, ...] = tuple(
    uid for uid in (RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS, JPEG_LS_NEAR_LOSSLESS,
                    JPEG_2000) if _available(uid))


class TranscodeError(Exception):
    """The instance cannot be produced in the syntax asked for (policy, codec or bad data)."""


def _name(uid: str) -> str:
    name = UID(uid).name
    return f"{uid} ({name})" if name and name != uid else uid


def is_lossy_syntax(uid: str) -> bool:
    return uid not in LOSSLESS


def can_produce(target: str, *, allow_lossy: bool = False) -> bool:
    """Whether :func:`transcode` can write ``target`` (lossy targets only when allowed)."""
    if target in NATIVE_TARGETS:
        return True
    return target in ENCODABLE and (allow_lossy or not is_lossy_syntax(target))


def choose_syntax(stored: str, accepted: Iterable[str], *, allow_lossy: bool = False,
                  has_pixels: bool = True) -> str | None:
    """The syntax to send an instance stored as ``stored`` to a peer accepting ``accepted``
    (in the peer's order of preference), or None when there is none.

    As stored if accepted; else Explicit VR LE; else Implicit VR LE; else deflate or a lossless
    compressed syntax we encode (the peer's order); else, only with ``allow_lossy``, a lossy one
    we encode. An instance without pixel data (``has_pixels=False``) can go in any storable
    syntax: only its encoding changes.
    """
    ordered = list(dict.fromkeys(accepted))
    if stored in ordered:
        return stored
    for ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
        if ts in ordered:
            return ts
    if not has_pixels:
        return next((ts for ts in ordered if ts in STORABLE and ts != EXPLICIT_VR_BE), None)
    for ts in ordered:
        if can_produce(ts):
            return ts
    if allow_lossy:
        return next((ts for ts in ordered if can_produce(ts, allow_lossy=True)), None)
    return None


@dataclass(frozen=True, slots=True)
class Transcoded:
    """One instance's data set encoded in ``transfer_syntax_uid`` (what a C-STORE carries)."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset: bytes

    def part10(self, source_ae_title: str | None = None) -> bytes:
        """The instance as a Part 10 file (hpacs's own file meta)."""
        meta = build_file_meta(self.sop_class_uid, self.sop_instance_uid,
                               self.transfer_syntax_uid, source_ae_title=source_ae_title)
        return meta + self.dataset


# -- the transcoder -----------------------------------------------------------------------


def transcode(source: Source, target: str, *, allow_lossy: bool = False) -> Transcoded:
    """``source`` (Part 10 bytes, a path or a Dataset read with its file meta) in ``target``.

    Raises :class:`TranscodeError`. A Dataset passed in is changed in place.
    """
    try:
        ds = load(source)
    except PixelDataError as exc:
        raise TranscodeError(str(exc)) from exc
    stored = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if stored not in STORABLE:
        raise TranscodeError(f"unknown stored transfer syntax {stored or '(none)'}")
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    sop_instance = str(ds.get("SOPInstanceUID", "")
                       or ds.file_meta.get("MediaStorageSOPInstanceUID", ""))
    if not sop_class or not sop_instance:
        raise TranscodeError("the instance has no SOP Class/Instance UID")
    if target == stored and not isinstance(source, Dataset):
        return Transcoded(target, sop_class, sop_instance, _raw_dataset(source))
    has_pixels = _PIXEL_DATA in ds
    if target not in STORABLE or target == EXPLICIT_VR_BE or (
            has_pixels and not can_produce(target, allow_lossy=True)):
        raise TranscodeError(f"cannot write {_name(target)}: no encoder "
                             f"(stored as {_name(stored)})")
    if has_pixels and is_lossy_syntax(target) and not allow_lossy and target != stored:
        raise TranscodeError(f"{_name(target)} is lossy and lossy transcoding is not allowed "
                             f"(stored as {_name(stored)})")
    encapsulated = STORABLE[target].encapsulated
    try:
        if has_pixels and (encapsulated or STORABLE[stored].encapsulated
                           or stored == EXPLICIT_VR_BE):
            _recode_pixels(ds, stored, target)
        elif not encapsulated:
            _drop_extended_offsets(ds)  # only encapsulated Pixel Data has them
        if stored == EXPLICIT_VR_BE:
            _swap_other_binary(ds)
        data = _write(ds, target)
    except TranscodeError:
        raise
    except (PixelDataError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            NotImplementedError, RuntimeError, OverflowError, zlib.error) as exc:
        raise TranscodeError(f"cannot transcode {_name(stored)} to {_name(target)}: "
                             f"{type(exc).__name__}: {exc}") from exc
    return Transcoded(target, sop_class, sop_instance, data)


def _drop_extended_offsets(ds: Dataset) -> None:
    for tag in _EXTENDED_OFFSETS:
        if tag in ds:
            del ds[tag]


def _raw_dataset(source: Source) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        raw = bytes(source)
        return raw[read_file_meta(raw).dataset_offset:]
    with open(source, "rb") as f:
        meta = read_file_meta(f)
        f.seek(meta.dataset_offset)
        return f.read()


def _source_is_lossy(ds: Dataset, stored: str) -> bool:
    flag = str(ds.get("LossyImageCompression", "") or "").strip()
    if flag == "01" or stored in _ALWAYS_LOSSY:
        return True
    if not is_lossy_syntax(stored) or flag == "00":
        return False
    if stored == JPEG_LS_NEAR_LOSSLESS:  # NEAR = 0 is lossless coding in the lossy syntax
        try:
            first = next(generate_frames(ds.PixelData, number_of_frames=1))
            return int(_get_jpg_parameters(first).get("lossy_error", 1)) > 0
        except (StopIteration, ValueError, KeyError, IndexError, TypeError):
            return True
    return True


#: Faster decoders where pydicom's default order picks a slower one (CT 512x512: JPEG-LS with
#: CharLS 14 ms vs libjpeg 55 ms; JPEG 2000 with pylibjpeg-openjpeg 77 ms vs Pillow 103 ms);
#: when the preferred one fails, pydicom's own choice is tried.
_PREFERRED_DECODER = {JPEG_LS_LOSSLESS: "pyjpegls", JPEG_LS_NEAR_LOSSLESS: "pyjpegls",
                      JPEG_2000_LOSSLESS: "pylibjpeg", JPEG_2000: "pylibjpeg"}
_DECODE_ERRORS = (ValueError, KeyError, AttributeError, IndexError, TypeError, RuntimeError,
                  NotImplementedError, EOFError)


def _decoders(ds: Dataset, stored: str) -> list[str]:
    """Decoding plugins to try, in order."""
    preferred = _PREFERRED_DECODER.get(stored)
    if preferred and preferred in get_decoder(UID(stored)).available_plugins:
        return [preferred, ""]
    return [decoding_plugin(ds)]


def _decode_frames(ds: Dataset, stored: str, as_rgb: bool) -> tuple[list[np.ndarray], dict]:
    decoder = get_decoder(UID(stored))
    error: Exception | None = None
    for plugin in _decoders(ds, stored):
        frames: list[np.ndarray] = []
        metas: list[dict] = []
        try:
            for arr, frame_meta in decoder.iter_array(ds, as_rgb=as_rgb, decoding_plugin=plugin):
                frames.append(arr)
                metas.append(frame_meta)
            break
        except _DECODE_ERRORS as exc:
            error = exc
    else:
        raise TranscodeError(f"cannot decode pixel data stored as {_name(stored)}: "
                             f"{error}") from error
    if not frames:
        raise TranscodeError(f"no frames in pixel data stored as {_name(stored)}")
    meta = dict(metas[-1])
    if str(meta.get("photometric_interpretation")) == "YBR_FULL_422":
        meta["photometric_interpretation"] = "YBR_FULL"  # the decoder expanded the chroma
    return frames, meta


def _native_bytes(frames: list[np.ndarray], meta: dict) -> bytes:
    bits = int(meta["bits_allocated"])
    if bits == 1:
        return pack_bits(np.stack(frames) if len(frames) > 1 else frames[0])
    kind = "i" if frames[0].dtype.kind == "i" else ("f" if frames[0].dtype.kind == "f" else "u")
    dtype = np.dtype(f"<{kind}{bits // 8}")
    return b"".join(np.ascontiguousarray(f, dtype=dtype).tobytes() for f in frames)


def _recode_pixels(ds: Dataset, stored: str, target: str) -> None:
    """Decode Pixel Data and store it back native LE or encoded in ``target``."""
    lossy_source = _source_is_lossy(ds, stored)
    compressed_size = len(ds.PixelData) if STORABLE[stored].encapsulated else 0
    frames, meta = _decode_frames(ds, stored, as_rgb=lossy_source)
    _drop_extended_offsets(ds)
    native = _native_bytes(frames, meta)
    raw_size = len(native)
    pi = str(meta["photometric_interpretation"])
    ds.PhotometricInterpretation = pi
    spp = int(meta["samples_per_pixel"])
    for keyword in ("BitsAllocated", "BitsStored", "PixelRepresentation"):
        setattr(ds, keyword, int(meta[_SNAKE[keyword]]))
    if spp > 1:
        ds.PlanarConfiguration = 0
    if lossy_source:  # the stored encoding's loss first, then any new one (history order)
        ratio = raw_size / compressed_size if compressed_size else None
        _mark_lossy(ds, _METHODS.get(stored), ratio, source=True)
    if STORABLE[target].encapsulated:
        options = {
            "rows": int(meta["rows"]), "columns": int(meta["columns"]),
            "samples_per_pixel": spp, "bits_allocated": int(meta["bits_allocated"]),
            "bits_stored": int(meta["bits_stored"]),
            "pixel_representation": int(meta["pixel_representation"]),
            "photometric_interpretation": pi, "planar_configuration": 0,
            "number_of_frames": 1, **_LOSSY_OPTIONS.get(target, {}),
        }
        encoded = _encode(frames, target, options)
        total = sum(len(f) for f in encoded) + 8 * len(encoded)
        if total > 0xFFFFFFF0:
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = (
                encapsulate_extended(encoded))
        else:
            ds.PixelData = encapsulate(encoded, has_bot=True)
        elem = ds["PixelData"]
        elem.VR = "OB"
        elem.is_undefined_length = True
        if is_lossy_syntax(target):
            size = sum(len(f) for f in encoded)
            _mark_lossy(ds, _METHODS.get(target), raw_size / max(size, 1))
    else:
        if len(native) % 2:
            native += b"\0"
        ds.PixelData = native
        elem = ds["PixelData"]
        elem.VR = "OB" if int(meta["bits_allocated"]) <= 8 else "OW"
        elem.is_undefined_length = False
    ds._pixel_array = None
    ds._pixel_id = {}


_SNAKE = {"BitsAllocated": "bits_allocated", "BitsStored": "bits_stored",
          "PixelRepresentation": "pixel_representation"}


def _encode(frames: list[np.ndarray], target: str, options: dict) -> list[bytes]:
    encoder = get_encoder(UID(target))
    plugin = PLUGIN if target == RLE_LOSSLESS else ""
    out = []
    for arr in frames:
        try:
            out.append(bytes(encoder.encode(np.ascontiguousarray(arr), encoding_plugin=plugin,
                                            **options)))
        except (ValueError, RuntimeError, TypeError, KeyError, AttributeError) as exc:
            raise TranscodeError(f"cannot encode pixel data as {_name(target)}: {exc}") from exc
    return out


def _mark_lossy(ds: Dataset, method: str | None, ratio: float | None, *,
                source: bool = False) -> None:
    """Lossy Image Compression "01"; a new lossy step adds its method and ratio; a decoded
    lossy source gets them only when the instance recorded none (PS3.3 C.7.6.1.1.5)."""
    ds.LossyImageCompression = "01"
    if method is None or ratio is None:
        return
    methods = list(_multi(ds.get("LossyImageCompressionMethod")))
    ratios = list(_multi(ds.get("LossyImageCompressionRatio")))
    if source and (methods or ratios):  # the instance recorded its history already
        return
    if len(methods) != len(ratios):  # out of step: start the history again from what we know
        methods, ratios = [], []
    methods.append(method)
    ratios.append(f"{ratio:.4g}"[:16])
    ds.LossyImageCompressionMethod = methods if len(methods) > 1 else methods[0]
    ds.LossyImageCompressionRatio = ratios if len(ratios) > 1 else ratios[0]


def _multi(value) -> Sequence:
    if value in (None, ""):
        return ()
    if isinstance(value, str | bytes | int | float) or not hasattr(value, "__iter__"):
        return (value,)
    return tuple(value)


def _swap_other_binary(ds: Dataset) -> None:
    """Byte-swap OW/OF/OL/OD/OV values read from a big endian data set (pydicom keeps them as
    raw bytes; Pixel Data was re-encoded already)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                _swap_other_binary(item)
            continue
        width = _SWAP_WIDTH.get(elem.VR)
        if width is None or elem.tag == _PIXEL_DATA or not isinstance(elem.value, bytes):
            continue
        if len(elem.value) % width == 0:
            elem.value = np.frombuffer(elem.value, f">u{width}").astype(f"<u{width}").tobytes()


def _resolve_raw(ds: Dataset) -> None:
    """Turn every raw element into a DataElement (its VR looked up when it was read without
    one): pydicom writes a raw element as read, which cannot change its VR encoding."""
    for elem in ds:  # iterating converts
        if elem.VR == "SQ":
            for item in elem.value or ():
                _resolve_raw(item)


def _write(ds: Dataset, target: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = target == IMPLICIT_VR_LE
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(target)
    _resolve_raw(ds)
    write_dataset(fp, ds)
    data = fp.getvalue()
    if target == DEFLATED_EXPLICIT_VR_LE:
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = z.compress(data) + z.flush()
    if len(data) % 2:  # PS3.5 A.5: a deflated stream is padded to an even length
        data += b"\0"
    return data


# -- frames (WADO-RS /frames) -------------------------------------------------------------


def encode_frames(source: Source, numbers: Sequence[int], target: str, *,
                  allow_lossy: bool = False) -> list[bytes]:
    """Frames ``numbers`` (1-based) of an instance as bitstreams of the encapsulated ``target``
    (what WADO-RS sends for ``image/jls``, ``image/jp2``, ``image/dicom-rle``...)."""
    if not can_produce(target, allow_lossy=allow_lossy) or not STORABLE[target].encapsulated:
        raise TranscodeError(f"cannot encode frames as {_name(target)}")
    try:
        ds = load(source)
    except PixelDataError as exc:
        raise TranscodeError(str(exc)) from exc
    stored = str(ds.file_meta.get("TransferSyntaxUID", EXPLICIT_VR_LE))
    if stored not in STORABLE:
        raise TranscodeError(f"unknown stored transfer syntax {stored}")
    lossy_source = _source_is_lossy(ds, stored)
    decoder = get_decoder(UID(stored))
    out = []
    for k in numbers:
        error: Exception | None = None
        for plugin in _decoders(ds, stored):
            try:
                arr, meta = decoder.as_array(ds, index=k - 1, as_rgb=lossy_source,
                                             decoding_plugin=plugin)
                break
            except _DECODE_ERRORS as exc:
                error = exc
        else:
            raise TranscodeError(f"cannot decode frame {k} stored as {_name(stored)}: "
                                 f"{error}") from error
        pi = str(meta["photometric_interpretation"])
        options = {
            "rows": int(meta["rows"]), "columns": int(meta["columns"]),
            "samples_per_pixel": int(meta["samples_per_pixel"]),
            "bits_allocated": int(meta["bits_allocated"]),
            "bits_stored": int(meta["bits_stored"]),
            "pixel_representation": int(meta["pixel_representation"]),
            "photometric_interpretation": "YBR_FULL" if pi == "YBR_FULL_422" else pi,
            "planar_configuration": 0, "number_of_frames": 1,
            **_LOSSY_OPTIONS.get(target, {}),
        }
        out += _encode([arr], target, options)
    return out
