"""HTTP concerns shared by every route: CORS for browser clients and compressed JSON.

CORS is a small middleware rather than aiohttp-cors: that library registers per route and per
(sub)application, while here one allow-list covers DICOMweb, WADO-URI and the API alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web

#: Response headers a browser script may read (the defaults exclude most of these).
EXPOSED = "Content-Type, Content-Length, Content-Encoding, ETag, Warning, Location"
#: Compress JSON bodies at least this large when the client accepts it (smaller: not worth it).
COMPRESS_MIN = 1024
_JSON_TYPES = ("application/dicom+json", "application/json")


def cors(origins: Iterable[str]):
    """Middleware answering preflights and tagging responses for the allowed origins."""
    allowed = frozenset(origins)
    any_origin = "*" in allowed

    def allow(origin: str | None) -> str | None:
        if origin is None or not allowed:
            return None
        return "*" if any_origin else (origin if origin in allowed else None)

    @web.middleware
    async def middleware(request: web.Request, handler):
        origin = allow(request.headers.get(hdrs.ORIGIN))
        if (origin is not None and request.method == "OPTIONS"
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            headers = {
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, HEAD, POST, DELETE, OPTIONS",
                hdrs.ACCESS_CONTROL_MAX_AGE: "600",
                hdrs.VARY: "Origin",
            }
            wanted = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
            if wanted:
                headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = wanted
            return web.Response(status=204, headers=headers)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
            if origin is None:
                raise
        if origin is not None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED
            if origin != "*":
                response.headers.add(hdrs.VARY, "Origin")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return middleware


@web.middleware
async def compress_json(request: web.Request, handler):
    """gzip/deflate JSON answers when the client says it accepts them (aiohttp negotiates
    from Accept-Encoding and compresses large bodies off the loop)."""
    response = await handler(request)
    # the raw header, not ``response.content_type``: aiohttp parses that with the email
    # package, which cost more than the rest of a frame request (py-spy)
    if (isinstance(response, web.Response) and hdrs.ACCEPT_ENCODING in request.headers
            and response.headers.get(hdrs.CONTENT_TYPE, "").startswith(_JSON_TYPES)
            and response.body is not None and len(response.body) >= COMPRESS_MIN):
        response.enable_compression()
        if hdrs.VARY not in response.headers:
            response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
        elif hdrs.ACCEPT_ENCODING not in response.headers[hdrs.VARY]:
            response.headers[hdrs.VARY] += ", " + hdrs.ACCEPT_ENCODING
    return response
