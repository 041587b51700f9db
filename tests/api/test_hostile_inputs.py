"""Hostile input against a live server: a table of cases, each with the status and problem ``code``
it must get.

Truncated files of every format, decompression bombs, bodies of the wrong type, empty images,
malformed multipart bodies, huge ids in paths and huge headers and option values. After every
case: the answer is problem+json and small (a huge input is never echoed whole), nothing was
charged (the key's balance is unchanged), nothing was stored, and the server still answers
``/healthz``. (Bad websocket frames are tested with the hub, in test_sync_ws.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LiveServer, assert_problem, disk_model, encode_image, jpeg, make_settings, photo, png_bomb
from tests.segmentation.test_decode import TRUNCATION_SOURCES, _png, _rgb_ihdr, png_ending_early

ANSWER_LIMIT = 1024  # bytes: no problem body repeats a huge input
HUGE = 5000  # characters of a hostile id, option value or header


@dataclass
class World:
    """A live server with an API key, a claimed pairing and one capture in it."""

    server: LiveServer
    http: httpx.Client
    data_dir: Path
    key: str
    pairing_id: str
    desktop: str
    phone: str
    asset_url: str  # a valid signed URL of the capture

    def balance(self) -> float:
        account = self.http.get("/v1/account", headers={"X-Api-Key": self.key})
        assert account.status_code == 200, account.text
        return account.json()["balance"]["remaining"]

    def stored(self) -> list[Path]:
        """The objects in storage (the file store in the data dir): captures and screen pictures."""
        return sorted(p for folder in ("assets", "screens") for p in (self.data_dir / folder).rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from api.offline import with_keys

    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    settings = make_settings(data_dir)

    async def create_key() -> str:
        async with with_keys(settings) as keys:
            return (await keys.create("hostile", credits=10_000))[1]

    key = asyncio.run(create_key())
    with LiveServer(settings, disk_model()) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        opened = http.post("/v1/pairings")
        assert opened.status_code == 201, opened.text
        claimed = http.post("/v1/pairings/claim", json={"code": opened.json()["code"]})
        assert claimed.status_code == 201, claimed.text
        phone = claimed.json()["phone_token"]
        captured = http.post("/v1/captures", headers=_bearer(phone), files={"image_file": good()})
        assert captured.status_code == 201, captured.text
        yield World(
            server, http, data_dir, key, opened.json()["pairing_id"], opened.json()["desktop_token"], phone,
            captured.json()["url"],
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------

def short_idat_png(width: int, height: int) -> bytes:
    """The finding: a valid header and a short, complete IDAT (two rows), ~100 bytes claiming millions of pixels."""
    return _png(_rgb_ihdr(width, height, interlaced=False), zlib.compress(b"\x00" * (width * 3 + 1) * 2, 9))


# The whole files of every format the truncation cases cut (made when a case first needs one).
WHOLE = TRUNCATION_SOURCES
CUTS: dict[str, Callable[[bytes], bytes]] = {
    "header-only": lambda data: data[:40],
    "half": lambda data: data[: len(data) // 2],
    "minus-2": lambda data: data[:-2],
}
CLOSED_EARLY: dict[str, Callable[[], bytes]] = {
    "jpeg-cut-then-eoi": lambda: CUTS["half"](whole("jpeg")) + b"\xff\xd9",
    "progressive-jpeg-cut-then-eoi": lambda: CUTS["half"](whole("progressive-jpeg")) + b"\xff\xd9",
    "png-stream-ends-early": lambda: png_ending_early(pixels(), 0.6, interlaced=False),
    "interlaced-png-stream-ends-early": lambda: png_ending_early(pixels(), 0.9, interlaced=True),
    **{f"png-{w}x{h}-short-idat": partial(short_idat_png, w, h) for w, h in ((4000, 3000), (16000, 3000))},
}
TRUNCATED = [f"{name}-{cut}" for name in WHOLE for cut in CUTS] + list(CLOSED_EARLY)


@cache
def pixels() -> np.ndarray:
    return photo(480, 360, seed=21)


@cache
def whole(name: str) -> bytes:
    return WHOLE[name](pixels())


@cache
def truncated(name: str) -> bytes:
    if name in CLOSED_EARLY:
        return CLOSED_EARLY[name]()
    fmt, cut = next((f, c) for f in WHOLE for c in CUTS if name == f"{f}-{c}")
    return CUTS[cut](whole(fmt))


WRONG_TYPES: dict[str, Callable[[], tuple[str, bytes, str]]] = {
    "text": lambda: ("a.txt", b"hello, world\n" * 20, "text/plain"),
    "pdf": lambda: ("a.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "application/pdf"),
    "zip": lambda: ("a.zip", b"PK\x03\x04\x14\x00" + b"\x00" * 40 + b"PK\x05\x06" + b"\x00" * 18, "application/zip"),
    "gif": lambda: ("a.gif", encode_image(pixels()[:32, :32], "GIF"), "image/gif"),
    "jpeg-named-but-text": lambda: ("a.jpg", b"not a jpeg at all", "image/jpeg"),
}


@cache
def good() -> tuple[str, bytes, str]:
    return ("a.jpg", jpeg(64, 48), "image/jpeg")


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------

Send = Callable[[World], httpx.Response]


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str
    send: Send
    marks: tuple[Any, ...] = field(default=())

    def param(self) -> Any:
        return pytest.param(self, id=self.name, marks=self.marks)


Part = Callable[[], tuple[str, bytes, str]]  # (filename, bytes, content type), made when sent


def clip(part: Part, headers: dict[str, str] | None = None, **kw: Any) -> Send:
    def send(w: World) -> httpx.Response:
        headers_ = {"X-Api-Key": w.key, **(headers or {})}
        return w.http.post("/v1/clip", headers=headers_, files={"image_file": part()}, **kw)

    return send


def capture(part: Part, headers: dict[str, str] | None = None) -> Send:
    def send(w: World) -> httpx.Response:
        headers_ = {**_bearer(w.phone), **(headers or {})}
        return w.http.post("/v1/captures", headers=headers_, files={"image_file": part()})

    return send


def raw_body(path: str, body: Callable[[], bytes], content_type: str, auth: str = "key") -> Send:
    def send(w: World) -> httpx.Response:
        headers = {"X-Api-Key": w.key} if auth == "key" else _bearer(w.phone)
        return w.http.post(path, headers={**headers, "Content-Type": content_type}, content=body())

    return send


def image_cases(route: str, send: Callable[[Part], Send]) -> list[Case]:
    cases = [
        Case(f"{route}-truncated-{name}", 400, "unreadable_image",
             send(partial(lambda n: ("f", truncated(n), "application/octet-stream"), name)))
        for name in TRUNCATED
    ]
    cases += [Case(f"{route}-{name}", 415, "unsupported_media_type", send(part)) for name, part in WRONG_TYPES.items()]
    cases += [
        Case(f"{route}-empty", 400, "empty_image", send(lambda: ("a.jpg", b"", "image/jpeg"))),
        *(Case(f"{route}-png-bomb-{n}x{n}", 413, "image_too_large",
               send(partial(lambda n: ("b.png", png_bomb(n, n), "image/png"), n)))
          for n in (100_000, 20_000)),
    ]
    return cases


def multipart_cases(route: str, auth: str) -> list[Case]:
    disposition = b'--xyz\r\nContent-Disposition: form-data; name="image_file"'
    head = disposition + b'; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    bodies = {
        "no-boundary": (b"--xyz\r\n", "multipart/form-data"),
        "cut-before-closing-boundary": (head + b"\xff\xd8\xff\xe0" + bytes(200), "multipart/form-data; boundary=xyz"),
        "garbage": (b"garbage, not a multipart body", "multipart/form-data; boundary=xyz"),
        "headers-never-end": (disposition, "multipart/form-data; boundary=xyz"),
        "huge-boundary": (b"--x\r\n", "multipart/form-data; boundary=" + "b" * HUGE),
    }
    return [
        Case(f"{route}-multipart-{name}", 400, "malformed_multipart",
             raw_body(f"/v1/{route}", partial(bytes, body), ctype, auth))
        for name, (body, ctype) in bodies.items()
    ]


def _signed_with(expires: Callable[[str], str]) -> Send:
    def send(w: World) -> httpx.Response:
        url = httpx.URL(w.asset_url)
        params = dict(url.params)
        return w.http.get(url.path, params={**params, "expires": expires(params["expires"])})

    return send


DEEP = 100_000  # JSON arrays nested this deep

CASES = [
    *image_cases("clip", clip),
    *image_cases("captures", capture),
    *multipart_cases("clip", "key"),
    *multipart_cases("captures", "phone"),
    Case("clip-raw-text-body", 415, "unsupported_media_type", raw_body("/v1/clip", lambda: b"hello", "text/plain")),
    Case("clip-raw-truncated-png-body", 400, "unreadable_image",
         raw_body("/v1/clip", lambda: truncated("png-4000x3000-short-idat"), "image/png")),
    # huge ids in paths
    Case("asset-huge-id", 404, "asset_not_found",
         lambda w: w.http.get("/v1/assets/ast_" + "a" * HUGE, headers=_bearer(w.phone))),
    Case("asset-huge-id-signed", 403, "bad_signature",
         lambda w: w.http.get("/v1/assets/ast_" + "a" * HUGE, params={"expires": "9" * HUGE, "sig": "s" * HUGE})),
    Case("paste-huge-asset-id", 404, "asset_not_found",
         lambda w: w.http.post(f"/v1/captures/ast_{'a' * HUGE}/paste", headers=_bearer(w.phone),
                               files={"view": ("v.jpg", jpeg(64, 48), "image/jpeg")})),
    Case("pairing-huge-id", 404, "pairing_not_found",
         lambda w: w.http.get("/v1/pairings/pair_" + "p" * HUGE, headers=_bearer(w.desktop))),
    Case("screen-huge-pairing-id", 404, "pairing_not_found",
         lambda w: w.http.put(f"/v1/pairings/pair_{'p' * HUGE}/screen", content=whole("png"),
                              headers={**_bearer(w.desktop), "Content-Type": "image/png"})),
    Case("claim-huge-code", 422, "invalid_parameter",
         lambda w: w.http.post("/v1/pairings/claim", json={"code": "C" * HUGE})),
    # signed-URL expiry: one spelling (int() would take each of these)
    Case("signed-expiry-leading-zero", 403, "bad_signature", _signed_with(lambda e: "0" + e)),
    Case("signed-expiry-underscore", 403, "bad_signature", _signed_with(lambda e: e[:4] + "_" + e[4:])),
    Case("signed-expiry-plus-sign", 403, "bad_signature", _signed_with(lambda e: "+" + e)),
    Case("signed-expiry-fullwidth-digits", 403, "bad_signature",
         _signed_with(lambda e: "".join(chr(0xFF10 + int(d)) for d in e))),
    Case("signed-expiry-huge", 403, "bad_signature", _signed_with(lambda e: e + "0" * HUGE)),
    Case("signed-sig-non-ascii", 403, "bad_signature",
         lambda w: w.http.get(httpx.URL(w.asset_url).copy_merge_params({"sig": "é" * 43}))),
    # huge headers and option values
    Case("huge-api-key", 403, "invalid_api_key",
         lambda w: w.http.get("/v1/account", headers={"X-Api-Key": "k" * HUGE})),
    Case("huge-bearer-token", 403, "invalid_token",
         capture(good, headers=_bearer("t" * HUGE))),
    Case("clip-huge-idempotency-key", 422, "invalid_idempotency_key",
         clip(good, headers={"Idempotency-Key": "i" * HUGE})),
    Case("captures-huge-idempotency-key", 422, "invalid_idempotency_key",
         capture(good, headers={"Idempotency-Key": "i" * HUGE})),
    Case("account-headers-over-64-kib", 431, "headers_too_large",
         lambda w: w.http.get("/v1/account", headers={"X-Api-Key": w.key, "X-Junk": "j" * 1_000_000})),
    Case("clip-huge-request-id-and-junk-header", 415, "unsupported_media_type",
         clip(WRONG_TYPES["text"], headers={"X-Request-Id": "r" * HUGE, "X-Junk": "j" * 60_000})),
    Case("clip-huge-bg-color", 422, "invalid_option", clip(good, data={"bg_color": "z" * HUGE})),
    Case("clip-huge-format", 422, "invalid_option", clip(good, params={"format": "f" * HUGE})),
    Case("clip-huge-crop-margin", 422, "invalid_option", clip(good, data={"crop_margin": "m" * HUGE})),
    Case("clip-huge-parameter-name", 422, "unknown_parameter", clip(good, params={"x" * HUGE: "1"})),
    Case("screen-huge-fiducials", 422, "invalid_parameter",
         lambda w: w.http.put(f"/v1/pairings/{w.pairing_id}/screen", params={"fiducials": "f" * HUGE},
                              content=whole("png"), headers={**_bearer(w.desktop), "Content-Type": "image/png"})),
    Case("screen-truncated-png", 400, "unreadable_image",
         lambda w: w.http.put(f"/v1/pairings/{w.pairing_id}/screen", content=truncated("png-minus-2"),
                              headers={**_bearer(w.desktop), "Content-Type": "image/png"})),
    Case("claim-json-nested-100000-deep", 422, "invalid_parameter",
         lambda w: w.http.post("/v1/pairings/claim", content=b'{"code": ' + b"[" * DEEP + b"]" * DEEP + b"}",
                               headers={"Content-Type": "application/json"})),
]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_hostile_input_gets_its_problem_and_costs_nothing(world: World, case: Case) -> None:
    balance, stored = world.balance(), world.stored()

    response = case.send(world)

    assert_problem(response, case.status, case.code)  # problem+json, the status and code, no X-Credits-Charged
    assert len(response.content) < ANSWER_LIMIT, f"{len(response.content)}-byte answer: {response.text[:200]}"
    assert len(response.headers.get("x-request-id", "")) <= 128
    assert world.balance() == balance, "an error was charged"
    assert world.stored() == stored, "a refused upload left something in storage"
    assert world.http.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------
# Requests the HTTP server refuses before the app sees them
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def raw_connection(world: World) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", world.server.port), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def _answer(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/assets/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/clip HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /v1/clip HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["not-http", "100k-path", "bad-content-length", "length-and-chunked"],
)
def test_unparseable_http_is_refused_by_the_server_and_it_keeps_serving(world: World, request_bytes: bytes) -> None:
    """uvicorn answers these itself (a plain-text 400, before any route: not ours to shape) and closes."""
    balance = world.balance()
    with raw_connection(world) as sock:
        sock.sendall(request_bytes)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert len(answer) < ANSWER_LIMIT
    assert world.balance() == balance
    assert world.http.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/v1/clip", "/v1/captures"])
def test_a_client_that_leaves_mid_upload_costs_nothing(world: World, path: str) -> None:
    balance, stored = world.balance(), world.stored()
    auth = f"X-Api-Key: {world.key}" if path == "/v1/clip" else f"Authorization: Bearer {world.phone}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: 100000\r\n\r\n"
    ).encode()
    part = b'--xyz\r\nContent-Disposition: form-data; name="image_file"; filename="a.png"\r\n\r\n' + whole("png")[:5000]
    with raw_connection(world) as sock:
        sock.sendall(head + part)
    assert world.http.get("/healthz").status_code == 200
    assert world.balance() == balance
    assert world.stored() == stored
