"""Links into the viewer: ``/compare/{study}`` and IHE Invoke Image Display (RAD-106).

Both answer a redirect to an OHIF ``/viewer`` URL, so an EHR or a worklist only needs to know
a study or a patient. ``/compare`` opens the study beside its most relevant prior, chosen by
``hpacs.index.priors.select_priors`` (the rule prefetch uses too, so the prior a radiologist sees
is the one that was made hot), with OHIF's two-study hanging protocol ``@ohif/hpCompare``.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from aiohttp import web

from hpacs.index.priors import recent_studies, select_priors
from hpacs.log import get_logger
from hpacs.web.dicomweb import ARCHIVE_KEY, HTTPProblem, check_uid

log = get_logger("hpacs.viewer")

COMPARE_PROTOCOL = "@ohif/hpCompare"
COMPARE_PRIORS_KEY: web.AppKey = web.AppKey("compare_priors", int)


def viewer_url(study_uids: list[str], protocol: str | None = None) -> str:
    params = {"StudyInstanceUIDs": ",".join(study_uids)}
    if protocol:
        params["hangingProtocolId"] = protocol
    return "/viewer?" + urlencode(params, safe=",@/")


def _problem(request: web.Request, status: int, message: str) -> web.Response:
    log.warning("viewer.link_error", path=request.path, query=request.query_string[:200],
                status=status, error=message)
    body = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>hpacs</title></head>"
            f"<body><p>{escape(message)}</p><p><a href=\"/\">Study list</a></p></body></html>")
    return web.Response(text=body, status=status, content_type="text/html")


def _is_uid(value: str) -> bool:
    try:
        check_uid(value, "UID")
    except HTTPProblem:
        return False
    return True


def _values(request: web.Request, name: str) -> list[str]:
    """A parameter given as a comma-separated list and/or repeated (IHE allows both)."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(v.strip() for v in raw.split(",") if v.strip())
    return out


async def compare(request: web.Request) -> web.StreamResponse:
    study = request.match_info["study"]
    db = request.app[ARCHIVE_KEY].db
    if not _is_uid(study):
        return _problem(request, 400, f"malformed StudyInstanceUID: {study[:80]!r}")
    if db.get_study(study) is None:
        return _problem(request, 404, f"no study {study} in this archive")
    priors = select_priors(db, study, request.app[COMPARE_PRIORS_KEY])
    log.info("viewer.compare", study=study, priors=priors)
    if not priors:  # nothing to compare with: the study alone
        raise web.HTTPFound(viewer_url([study]))
    raise web.HTTPFound(viewer_url([study, *priors], COMPARE_PROTOCOL))


def parse_patient_id(value: str) -> tuple[str, str | None]:
    """HL7 CX ``ID^^^Issuer`` or ``ID^^^&OID&ISO`` -> (ID, issuer or None when not given)."""
    parts = value.split("^")
    pid = parts[0].strip()
    if len(parts) < 4 or not parts[3].strip():
        return pid, None
    namespace, _, rest = parts[3].partition("&")
    universal = rest.partition("&")[0]
    return pid, (namespace or universal).strip()


async def invoke_image_display(request: web.Request) -> web.StreamResponse:
    """IHE RAD-106: ``requestType=STUDY`` (``studyUID``/``accessionNumber`` lists) or
    ``requestType=PATIENT`` (``patientID``, optional ``mostRecentResults``)."""
    db = request.app[ARCHIVE_KEY].db
    kind = request.query.get("requestType", "").upper()
    if kind == "STUDY":
        wanted = _values(request, "studyUID")
        for accession in _values(request, "accessionNumber"):
            wanted.extend(db.studies_by_accession(accession))
        if not wanted:
            return _problem(request, 400, "requestType=STUDY needs studyUID or accessionNumber")
        found = [u for u in dict.fromkeys(wanted)
                 if _is_uid(u) and db.get_study(u) is not None]
        if not found:
            return _problem(request, 404, "none of the requested studies is in this archive")
        log.info("viewer.invoke", request_type=kind, studies=found,
                 missing=len(dict.fromkeys(wanted)) - len(found))
        raise web.HTTPFound(viewer_url(found))
    if kind == "PATIENT":
        raw = request.query.get("patientID", "")
        pid, issuer = parse_patient_id(raw)
        if not pid:
            return _problem(request, 400, "requestType=PATIENT needs patientID")
        try:
            count = max(1, int(request.query.get("mostRecentResults", "1")))
        except ValueError:
            return _problem(request, 400, "mostRecentResults must be a number")
        patients = ([(pid, issuer)] if issuer is not None else db.patients_by_id(pid))
        if len(patients) > 1:  # same ID from several issuers: let the user choose
            raise web.HTTPFound("/?" + urlencode({"mrn": pid}))
        studies = recent_studies(db, pid, patients[0][1], count) if patients else []
        if not studies:
            return _problem(request, 404, f"no studies for patient {pid!r}")
        log.info("viewer.invoke", request_type=kind, patient=pid, studies=studies)
        raise web.HTTPFound(viewer_url(studies))
    return _problem(request, 400, "requestType must be STUDY or PATIENT")


def add_routes(app: web.Application, compare_priors: int) -> None:
    app[COMPARE_PRIORS_KEY] = compare_priors
    app.router.add_get("/compare/{study}", compare)
    app.router.add_get("/IHEInvokeImageDisplay", invoke_image_display)
