"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered from the index.

Matching is the C-FIND engine's (hpacs/index/query.py): the query string becomes keyword -> raw
value and goes through :meth:`Query.build` exactly like a C-FIND identifier, so single value,
universal, wildcard, range and list matching behave identically on both protocols.

Query string (already percent-decoded by aiohttp):

- ``{attributeID}={value}``: a keyword (``PatientID``) or a tag (``00100020``). Repeating a key,
  or separating values with ``,`` for UI and CS attributes (a comma cannot occur in either VR),
  is a list (``\\`` works everywhere, as in C-FIND). Unknown attributes, sequence paths and
  malformed values are 400. Attributes the index does not hold at the searched level are not
  used for matching and named in a ``Warning: 299`` header (C-FIND's 0xFF01).
- ``includefield``: keywords, tags or ``all``, comma-separated and/or repeated.
- ``limit`` (>= 1) and ``offset`` (>= 0); anything else is 400.
- ``fuzzymatching=true``: PN keys match case-insensitively on the start of the whole name or of
  any name component (``jo`` finds ``DOE^JOHN``); see :func:`make_fuzzy_name_matcher`.

The answer is a JSON array (``application/dicom+json``, PS3.18 F.2) streamed page by page: each
engine page is read in its own short LMDB read transaction, encoded and written before the next
one is read. No match is ``204 No Content`` (PS3.18 8.3.4.4.1 as currently published; CP-2473
would make it 200 with an empty payload). At most ``query.max_matches`` results are returned per
request; when more exist a ``Warning: 299`` header says so (a counting pass without encoding
decides this before the headers are sent, only when the request's ``limit`` does not already
keep the answer within the maximum).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from hpacs.index.query import (
    IMAGE,
    LEVEL_ATTRS,
    QUERY_LEVELS,
    SERIES,
    STUDY,
    Query,
    QueryEngine,
    QueryError,
    home_level,
    make_fuzzy_name_matcher,
)
from hpacs.web.dicomweb import (
    _ENCODER,
    ARCHIVE_KEY,
    DICOM_JSON,
    HTTPProblem,
    base_url,
    check_uid,
    log,
)

_TAG_RE: Final = re.compile(r"[0-9A-Fa-f]{8}")
_UID_RE: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
_CONTROL: Final = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
#: Query parameters that are not matching keys and that we accept and ignore.
_IGNORED: Final = frozenset({"accept", "charset", "_"})
_COMMA_LIST_VRS: Final = frozenset({"UI", "CS"})
_NUMBER_VRS: Final = frozenset({"US", "UL", "SS", "SL", "UV", "SV"})
_SINGLE_VALUED: Final = frozenset({"ST", "LT", "UT", "UR"})
_ACCEPTED_TYPES: Final = ("application/dicom+json", "application/json", "application/*", "*/*")

#: Default return attributes: PS3.18 Table 10.6.3-3 (study; StudyDescription added, viewers list
#: it), 10.6.3-4 (series), 10.6.3-5 (instance). RetrieveURL and SpecificCharacterSet are added
#: separately. Sequence attributes of the tables (RequestAttributesSequence) are not held.
DEFAULTS: Final[dict[str, tuple[str, ...]]] = {
    STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
            "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC",
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
            "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances"),
    SERIES: ("Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID",
             "SeriesNumber", "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
             "PerformedProcedureStepStartTime", "StudyInstanceUID"),
    IMAGE: ("SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "TimezoneOffsetFromUTC",
            "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
            "StudyInstanceUID", "SeriesInstanceUID"),
}  # fmt: skip
_RETRIEVE_URL: Final = 0x00081190
_CHARSET: Final = 0x00080005
_AVAILABILITY: Final = 0x00080056
_STATIC: Final = frozenset({"InstanceAvailability", "RetrieveURL", "SpecificCharacterSet",
                            "RetrieveAETitle"})  # fmt: skip


class SearchRequest:
    """A parsed QIDO-RS request: the query, what to return, paging, warnings."""

    def __init__(self, level: str, query: Query, fields: list[tuple[int, str, str]],
                 limit: int | None, offset: int, warnings: list[str]) -> None:
        self.level = level
        self.query = query
        self.fields = fields  # (tag, keyword, VR) in tag order
        self.limit = limit
        self.offset = offset
        self.warnings = warnings


def _attribute(name: str, what: str) -> tuple[int, str, str]:
    """(tag, keyword, VR) of a keyword or an 8-hex-digit tag; 400 when unknown."""
    if "." in name:
        raise HTTPProblem(400, f"{what} {name!r}: sequence paths are not supported")
    if _TAG_RE.fullmatch(name):
        tag = int(name, 16)
        kw = keyword_for_tag(tag)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            if what != "includefield":
                raise HTTPProblem(400, f"unknown attribute {name!r}") from None
            vr = "UN"
        return tag, kw, vr.split(" or ")[0]
    tag = tag_for_keyword(name)
    if tag is None:
        raise HTTPProblem(400, f"unknown attribute {name!r} in {what}")
    return tag, name, dictionary_VR(tag).split(" or ")[0]


def _int_param(raw: str, name: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or not raw.strip().isdigit():
        raise HTTPProblem(400, f"{name} must be an integer >= {minimum}: {raw[:40]!r}")
    return value


def parse_search(level: str, params, path: dict[str, str], *,
                 case_insensitive_names: bool = True) -> SearchRequest:
    """From the query string (a MultiDict) and the path UIDs; raises :class:`HTTPProblem`."""
    raw: dict[str, list[str]] = {}
    attrs: dict[str, tuple[int, str, str]] = {}
    includes: list[tuple[int, str, str]] = []
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    for name, value in params.items():
        lname = name.lower()
        if lname == "includefield":
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                if item.lower() == "all":
                    include_all = True
                else:
                    includes.append(_attribute(item, "includefield"))
        elif lname == "limit":
            limit = _int_param(value, "limit", 1)
        elif lname == "offset":
            offset = _int_param(value, "offset", 0)
        elif lname == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise HTTPProblem(400, f"fuzzymatching must be true or false: {value[:40]!r}")
            fuzzy = value.lower() == "true"
        elif lname in _IGNORED:
            continue
        else:
            tag, kw, vr = _attribute(name, "query")
            if not kw or vr == "SQ":
                raise HTTPProblem(400, f"matching on {name!r} is not supported")
            attrs[kw] = (tag, kw, vr)
            if vr in _COMMA_LIST_VRS:
                value = value.replace(",", "\\")
            raw.setdefault(kw, []).append(value)
    for kw, uid in path.items():
        raw[kw] = [uid]
        attrs[kw] = (tag_for_keyword(kw), kw, "UI")

    values: dict[str, str] = {}
    warnings: list[str] = []
    for kw, vals in raw.items():
        joined = "\\".join(vals)
        tag, _, vr = attrs[kw]
        if vr == "UI":
            for uid in joined.split("\\"):
                uid = uid.strip()
                if uid not in ("", "*") and (len(uid) > 64 or not _UID_RE.fullmatch(uid)):
                    raise HTTPProblem(400, f"malformed UID {uid[:80]!r} in {kw}")
        if home_level(kw, level) is None:
            if joined.strip(" *\\") and kw not in _STATIC:
                warnings.append(f"The following attribute is not supported for matching: "
                                f"{tag:08X}")
            continue
        values[kw] = joined
    try:
        query = Query.build(level, values, case_insensitive_names=case_insensitive_names)
    except QueryError as exc:
        raise HTTPProblem(400, str(exc)) from None
    if fuzzy:
        for kw, joined in values.items():
            if attrs[kw][2] == "PN":
                m = make_fuzzy_name_matcher(kw, joined)
                if m is None:
                    query.keys.pop(kw, None)
                else:
                    query.keys[kw] = m

    fields: dict[int, tuple[int, str, str]] = {}
    wanted = list(DEFAULTS[level])
    if level in (SERIES, IMAGE) and "StudyInstanceUID" not in path:
        wanted += DEFAULTS[STUDY]  # all series / all instances: study attributes too
    if level == IMAGE and "SeriesInstanceUID" not in path:
        wanted += DEFAULTS[SERIES]
    if include_all:
        for lvl in QUERY_LEVELS[: QUERY_LEVELS.index(level) + 1]:
            wanted += sorted(LEVEL_ATTRS[lvl])
    for kw in wanted:
        tag = tag_for_keyword(kw)
        fields[tag] = (tag, kw, dictionary_VR(tag).split(" or ")[0])
    for a in (*attrs.values(), *includes):
        fields[a[0]] = a
    fields[_RETRIEVE_URL] = (_RETRIEVE_URL, "RetrieveURL", "UR")
    fields[_CHARSET] = (_CHARSET, "SpecificCharacterSet", "CS")
    ordered = [fields[t] for t in sorted(fields)]
    return SearchRequest(level, query, ordered, limit, offset, warnings)


# ---------------------------------------------------------------------------------- encoding
def _number(text: str, integer: bool) -> int | float | None:
    text = text.strip()
    try:
        if integer:
            return int(text)
        f = float(text)
    except ValueError:
        return None
    return int(f) if f.is_integer() and "." not in text and "e" not in text.lower() else f


def json_value(vr: str, value: Any) -> list | None:
    """The PS3.18 F.2 ``Value`` array of one stored index value, or None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return value or None
    if isinstance(value, int):
        return [value]
    text = str(value)
    if vr in _SINGLE_VALUED:
        return [text]
    parts = text.split("\\")
    if vr == "PN":
        out: list = []
        for p in parts:
            groups = p.split("=")
            name = {k: g for k, g in zip(("Alphabetic", "Ideographic", "Phonetic"), groups,
                                         strict=False) if g}
            out.append(name or None)
        return out
    if vr in ("IS", "DS"):
        nums = [_number(p, vr == "IS") for p in parts]
        return nums if any(n is not None for n in nums) else None
    if vr in _NUMBER_VRS:
        nums = [_number(p, True) for p in parts]
        return nums if any(n is not None for n in nums) else None
    if vr == "AT" or vr == "SQ":
        return None
    return [p if p else None for p in parts]


def encoder(req: SearchRequest, base: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """match -> DICOM JSON object (tags in order) for ``req``'s fields."""
    level = req.level
    fields = [(f"{tag:08X}", tag, kw, vr) for tag, kw, vr in req.fields]

    def retrieve_url(m: dict[str, Any]) -> str:
        url = f"{base}/studies/{m.get('StudyInstanceUID', '')}"
        if level in (SERIES, IMAGE):
            url += f"/series/{m.get('SeriesInstanceUID', '')}"
        if level == IMAGE:
            url += f"/instances/{m.get('SOPInstanceUID', '')}"
        return url

    def encode(m: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, tag, kw, vr in fields:
            if tag == _RETRIEVE_URL:
                value: Any = [retrieve_url(m)]
            elif tag == _CHARSET:
                value = ["ISO_IR 192"]  # DICOM JSON is UTF-8
            elif tag == _AVAILABILITY:
                value = ["ONLINE"]
            elif vr == "SQ":
                value = None
            else:
                value = json_value(vr, m.get(kw)) if kw else None
            out[key] = {"vr": vr, "Value": value} if value is not None else {"vr": vr}
        return out

    return encode


# ---------------------------------------------------------------------------------- handlers
def _check_accept(request: web.Request) -> None:
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in _ACCEPTED_TYPES:
            return
    raise HTTPProblem(406, f"QIDO-RS answers application/dicom+json, not {accept[:100]!r}")


async def _exceeds(engine: QueryEngine, query: Query, count: int) -> bool:
    """Whether ``query`` has more than ``count`` matches (matching only, page by page)."""
    seen = 0
    pages = engine.pages(query, page_size=1024)
    try:
        for page in pages:
            seen += len(page)
            if seen > count:
                return True
            await asyncio.sleep(0)
    finally:
        pages.close()
    return False


async def search(request: web.Request) -> web.StreamResponse:
    """All six search resources; the level comes from the route name."""
    _check_accept(request)
    archive = request.app[ARCHIVE_KEY]
    level = {"studies": STUDY, "series": SERIES, "instances": IMAGE}[
        request.match_info.route.name.split(":")[1]]
    path = {}
    if "study" in request.match_info:
        path["StudyInstanceUID"] = check_uid(request.match_info["study"], "Study Instance UID")
    if "series" in request.match_info:
        path["SeriesInstanceUID"] = check_uid(request.match_info["series"],
                                              "Series Instance UID")
    cfg = archive.config.query
    req = parse_search(level, request.query, path,
                       case_insensitive_names=cfg.case_insensitive_names)
    maximum = cfg.max_matches
    engine = QueryEngine(archive.db)
    wanted = maximum if req.limit is None else min(req.limit, maximum)
    truncated = False
    if req.limit is None or req.limit > maximum:
        truncated = await _exceeds(engine, req.query, req.offset + maximum)
    warnings = list(req.warnings)
    if truncated:
        warnings.append("There are additional results that can be requested")
    encode = encoder(req, base_url(request))
    headers = [("Warning", f'299 {request.host}: "{w}"') for w in warnings]

    skip, sent = req.offset, 0
    resp: web.StreamResponse | None = None
    pages = engine.pages(req.query)
    try:
        for page in pages:
            if skip >= len(page):
                skip -= len(page)
                await asyncio.sleep(0)
                continue
            batch = page[skip:skip + (wanted - sent)]
            skip = 0
            if not batch:
                break
            chunk = b",".join(_ENCODER.encode(encode(m)) for m in batch)
            if resp is None:
                resp = web.StreamResponse(status=200)
                resp.content_type = DICOM_JSON
                for k, v in headers:
                    resp.headers.add(k, v)
                await resp.prepare(request)
                await resp.write(b"[" + chunk)
            else:
                await resp.write(b"," + chunk)
            sent += len(batch)
            if sent >= wanted:
                break
    finally:
        pages.close()
    log.info("qido.done", qr_level=level, matches=sent, truncated=truncated,
             path=request.path)
    if resp is None:
        empty = web.Response(status=204)
        for k, v in headers:
            empty.headers.add(k, v)
        return empty
    await resp.write(b"]")
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/studies", search, name="qido:studies")
    r.add_get("/studies/{study}/series", search, name="qido:series:study")
    r.add_get("/series", search, name="qido:series")
    r.add_get("/studies/{study}/series/{series}/instances", search, name="qido:instances:series")
    r.add_get("/studies/{study}/instances", search, name="qido:instances:study")
    r.add_get("/instances", search, name="qido:instances")
