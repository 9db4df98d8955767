"""How a refusal is worded, by path: Segment's libraries parse ``{"code", "message"}``,
everything else gets RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse

from clm_web.problem import problem_response

SEGMENT_PATHS = frozenset(
    f"/v1/{name}"
    for name in (
        "track",
        "identify",
        "page",
        "screen",
        "group",
        "alias",
        "batch",
        "t",
        "i",
        "p",
        "s",
        "g",
        "a",
        "b",
    )
)


class SegmentError(Exception):
    """Raise on a Segment path: answered ``{"code", "message"}`` with this status."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def segment_response(exc: SegmentError) -> JSONResponse:
    return JSONResponse(
        {"code": exc.code, "message": exc.message}, status_code=exc.status, headers=exc.headers
    )


def refusal(
    path: str,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    if path in SEGMENT_PATHS:
        return segment_response(SegmentError(status, code, detail, headers))
    return problem_response(status, title, detail, headers=headers, instance=path)
