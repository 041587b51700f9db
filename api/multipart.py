"""Reading a multipart body strictly: a body that cannot be parsed, or that ends before its closing
boundary (a cut-off upload), is ``400 malformed_multipart``, never a half-read form."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from .errors import ApiProblem

# The closing delimiter may be followed by CRLF and a (rare) epilogue: look this far back for it.
_TAIL = 4096


async def read_form(request: Request, *, max_files: int, max_fields: int, max_part_size: int) -> FormData:
    boundary = _boundary(request.headers.get("content-type", ""))
    tail = bytearray()
    receive = request.receive

    async def remembering_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            tail.extend(message.get("body", b""))
            del tail[:-_TAIL]
        return message

    # A request of its own over the same scope: Starlette parses from ``receive``, which we watch.
    watched = Request(request.scope, remembering_receive)
    try:
        form = await watched.form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
    except (MultiPartException, HTTPException) as exc:
        # Inside an app Starlette turns MultiPartException into a bare HTTPException(400).
        message = getattr(exc, "message", None) or getattr(exc, "detail", "")
        raise malformed(f"The multipart body cannot be parsed: {message}") from exc
    if boundary is None or b"--" + boundary + b"--" not in tail:
        await form.close()
        raise malformed("The multipart body ends before its closing boundary: the upload was cut off.")
    return form


def malformed(detail: str) -> ApiProblem:
    return ApiProblem(400, "malformed_multipart", detail)


def _boundary(content_type: str) -> bytes | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1", errors="replace")
    return None
