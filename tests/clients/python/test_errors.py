"""problem+json becomes typed exceptions: the mapping (unit), then each status from a real server."""

from __future__ import annotations

import io

import httpx
import pytest
from arclip_client import (
    APIError,
    Arclip,
    ArclipError,
    AuthenticationError,
    BadRequest,
    Conflict,
    Gone,
    InsufficientCredits,
    InternalServerError,
    InvalidParameter,
    NoScreen,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ScreenNotFound,
    UnsupportedMediaType,
)
from arclip_client._base import error_from_response
from arclip_client._errors import error_class
from PIL import Image

from tests.conftest import jpeg

from .conftest import LiveServer


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "unreadable_image", BadRequest),
        (401, "missing_api_key", AuthenticationError),
        (402, "insufficient_credits", InsufficientCredits),
        (403, "invalid_api_key", PermissionDenied),
        (404, "not_found", NotFound),
        (409, "pairing_full", Conflict),
        (409, "no_screen", NoScreen),
        (410, "code_used", Gone),
        (413, "payload_too_large", PayloadTooLarge),
        (415, "unsupported_media_type", UnsupportedMediaType),
        (422, "invalid_parameter", InvalidParameter),
        (422, "screen_not_found", ScreenNotFound),
        (429, "rate_limited", RateLimited),
        (500, "internal_error", InternalServerError),
        (502, None, InternalServerError),
        (503, "overloaded", Overloaded),
        (418, "teapot", APIError),
        (400, "screen_not_found", BadRequest),  # a code never overrides a contradicting status
    ],
)
def test_error_class(status: int, code: str | None, cls: type[APIError]) -> None:
    assert error_class(status, code) is cls


def test_hierarchy() -> None:
    assert issubclass(ScreenNotFound, InvalidParameter) and issubclass(InvalidParameter, APIError)
    assert issubclass(Overloaded, InternalServerError)
    assert issubclass(APIError, ArclipError)


def test_problem_json_fields_are_parsed() -> None:
    response = httpx.Response(
        429,
        headers={"Content-Type": "application/problem+json", "Retry-After": "7", "X-Request-Id": "req_abc"},
        json={"type": "https://arclip.dev/problems/rate_limited", "title": "Too Many Requests", "status": 429,
              "detail": "Slow down.", "code": "rate_limited", "reason": "rate"},
    )
    error = error_from_response(response)
    assert isinstance(error, RateLimited)
    assert (error.status, error.code, error.detail) == (429, "rate_limited", "Slow down.")
    assert error.title == "Too Many Requests"
    assert error.type == "https://arclip.dev/problems/rate_limited"
    assert error.request_id == "req_abc" and error.retry_after == 7.0
    assert error.body["reason"] == "rate" and error.response is response and error.status_code == 429
    assert str(error) == "429 rate_limited: Slow down. (request_id=req_abc)"
    assert "RateLimited(status=429" in repr(error)


def test_extension_members() -> None:
    def make(status: int, **body: object) -> APIError:
        return error_from_response(httpx.Response(status, json={"status": status, "detail": "x", **body}))

    screen = make(422, code="screen_not_found", hint="Move closer to the screen.", confidence=0.12)
    assert isinstance(screen, ScreenNotFound)
    assert screen.hint == "Move closer to the screen." and screen.confidence == 0.12
    assert make(409, code="no_screen", hint="Open the canvas first.").hint == "Open the canvas first."  # type: ignore[attr-defined]
    unknown = make(422, code="unknown_parameter", parameter="colour", did_you_mean="bg_color")
    assert isinstance(unknown, InvalidParameter)
    assert (unknown.parameter, unknown.did_you_mean) == ("colour", "bg_color")  # type: ignore[attr-defined]
    assert make(431, code="headers_too_large").__class__.__name__ == "HeadersTooLarge"
    credits = make(402, code="insufficient_credits", required=1, remaining=0.25)
    assert credits.credits_required == 1 and credits.credits_remaining == 0.25  # type: ignore[attr-defined]


def test_an_error_that_is_not_problem_json() -> None:
    html = httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})
    error = error_from_response(html)
    assert isinstance(error, InternalServerError)
    assert error.code is None and error.title == "Bad Gateway" and error.detail == "<html>Bad Gateway</html>"
    empty = error_from_response(httpx.Response(404))
    assert isinstance(empty, NotFound) and empty.detail is None and str(empty) == "404 Not Found"


# ---------------------------------------------------------------------------------------------------
# From a real server
# ---------------------------------------------------------------------------------------------------


def _check(error: APIError, status: int, code: str | None = None) -> None:
    assert error.status == status
    if code is not None:
        assert error.code == code
    assert error.title and error.detail and error.type
    assert error.request_id and error.request_id.startswith("req_")
    assert error.body["status"] == status


def test_each_error_from_a_real_server(server: LiveServer, api_key: str) -> None:
    photo = jpeg(160, 120)
    with Arclip(api_key, base_url=server.base_url, max_retries=0) as client:
        with pytest.raises(BadRequest) as bad:
            client.clip(b"\xff\xd8\xff not really a jpeg")
        _check(bad.value, 400)

        with pytest.raises(InvalidParameter) as invalid:
            client.clip(photo, format="gif")  # type: ignore[arg-type]
        _check(invalid.value, 422)
        assert "format" in (invalid.value.detail or "")
        with pytest.raises(InvalidParameter):
            client.clip(photo, crop_margin="lots")

        gif = io.BytesIO()
        Image.new("RGB", (32, 32), (10, 20, 30)).save(gif, "GIF")
        with pytest.raises(UnsupportedMediaType) as unsupported:
            client.clip(gif.getvalue())
        _check(unsupported.value, 415)

        with pytest.raises(PayloadTooLarge) as too_large:  # the test server takes at most 2 MB
            client.clip(b"\xff\xd8\xff" + b"\0" * 2_100_000)
        _check(too_large.value, 413, "payload_too_large")

    with Arclip(None, base_url=server.base_url) as anonymous:
        with pytest.raises(AuthenticationError) as missing:
            anonymous.clip(photo)
        _check(missing.value, 401)

    with Arclip("arc_live_not-a-real-key", base_url=server.base_url) as forged:
        with pytest.raises(PermissionDenied) as denied:
            forged.clip(photo)
        _check(denied.value, 403)

    revoked = server.create_key("to-revoke")
    server.revoke_key(revoked)
    with Arclip(revoked, base_url=server.base_url) as client:
        with pytest.raises(PermissionDenied) as gone:
            client.clip(photo)
        _check(gone.value, 403)


def test_insufficient_credits_from_a_real_server(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(plans={"free": {"monthly_credits": 0}})
    key = server.create_key("broke", credits=0)
    with Arclip(key, base_url=server.base_url) as client:
        try:
            client.clip(jpeg(64, 48))
        except InsufficientCredits as error:
            _check(error, 402, "insufficient_credits")
            assert error.credits_required == 1.0 and error.credits_remaining == 0.0
        else:
            pytest.skip("this server does not enforce credits yet (billing, issue 4)")
