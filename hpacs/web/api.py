"""``/api``: hpacs' own operations over HTTP (not DICOMweb).

``POST /api/prefetch`` with ``{"StudyInstanceUID": uid}`` (its priors) or ``{"PatientID": id}``
(optionally ``"IssuerOfPatientID"``; the patient's most recent studies), optionally ``"limit"``:
answers 202 with the selected studies and which of them were queued for promotion to hot (the
others are hot already). The promotions run in the background after the answer.
"""

from __future__ import annotations

import json

from aiohttp import web

from hpacs.log import get_logger
from hpacs.store.prefetch import Prefetcher, PrefetchError

log = get_logger("hpacs.api")

PREFETCHER_KEY: web.AppKey[Prefetcher] = web.AppKey("prefetcher", Prefetcher)
_MAX_BODY = 64 << 10


def _problem(status: int, message: str, request: web.Request) -> web.Response:
    log.warning("api.error", path=request.path, status=status, error=message,
                peer=request.remote)
    return web.json_response({"error": message}, status=status)


async def prefetch(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return _problem(413, "request body too large", request)
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError as exc:
        return _problem(400, f"body is not JSON: {exc}", request)
    if not isinstance(body, dict):
        return _problem(400, 'expected a JSON object: {"StudyInstanceUID": ...} or '
                             '{"PatientID": ...}', request)
    study, patient = body.get("StudyInstanceUID"), body.get("PatientID")
    issuer, limit = body.get("IssuerOfPatientID"), body.get("limit")
    if (study is None) == (patient is None):
        return _problem(400, "give exactly one of StudyInstanceUID and PatientID", request)
    for name, value in (("StudyInstanceUID", study), ("PatientID", patient),
                        ("IssuerOfPatientID", issuer)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 64):
            return _problem(400, f"{name} must be a non-empty string of at most 64 characters",
                            request)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or not 0 <= limit <= 100):
        return _problem(400, "limit must be an integer 0..100", request)
    try:
        plan = await request.app[PREFETCHER_KEY].request(
            study_uid=study, patient_id=patient, issuer=issuer, limit=limit)
    except PrefetchError as exc:
        return _problem(404, str(exc), request)
    return web.json_response({"priors": plan.priors, "queued": plan.queued, "hot": plan.hot},
                             status=202)


def build_api(prefetcher: Prefetcher) -> web.Application:
    app = web.Application()
    app[PREFETCHER_KEY] = prefetcher
    app.router.add_post("/prefetch", prefetch)
    return app
