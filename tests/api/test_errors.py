"""Hostile and wrong requests: each gets its 4xx as problem+json, and the server stays healthy."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from segmentation.models import PRESETS
from segmentation.session import FunctionModel
from tests.conftest import (
    assert_problem,
    decode_response_image,
    disk_saliency,
    encode_image,
    jpeg,
    photo,
    png_bomb,
)

GOOD = None  # filled lazily: a small valid JPEG


def good_jpeg() -> bytes:
    global GOOD
    if GOOD is None:
        GOOD = jpeg(160, 120)
    return GOOD


def truncated(fmt: str) -> bytes:
    data = encode_image(photo(320, 240, seed=5), fmt)
    return data[: len(data) // 2]


# (name, file bytes, filename, content type, status, code)
HOSTILE_FILES = [
    ("empty", b"", "empty.jpg", "image/jpeg", 400, "empty_image"),
    ("truncated jpeg", None, "cut.jpg", "image/jpeg", 400, "unreadable_image"),
    ("truncated png", None, "cut.png", "image/png", 400, "unreadable_image"),
    ("jpeg header only", None, "head.jpg", "image/jpeg", 400, "unreadable_image"),
    ("text file", b"just some text, definitely not a picture\n" * 20, "notes.txt", "text/plain", 415, None),
    ("text posing as jpeg", b"<html><body>hi</body></html>", "x.jpg", "image/jpeg", 415, None),
    ("gif", None, "anim.gif", "image/gif", 415, None),
    ("bmp", None, "old.bmp", "image/bmp", 415, None),
    ("png bomb", None, "bomb.png", "image/png", 413, "image_too_large"),
]


def hostile_bytes(name: str) -> bytes:
    return {
        "truncated jpeg": lambda: truncated("JPEG"),
        "truncated png": lambda: truncated("PNG"),
        "jpeg header only": lambda: encode_image(photo(64, 48), "JPEG")[:20],
        "gif": lambda: encode_image(photo(64, 48), "GIF"),
        "bmp": lambda: encode_image(photo(64, 48), "BMP"),
        "png bomb": lambda: png_bomb(50_000, 50_000),
    }[name]()


@pytest.mark.parametrize(
    ("name", "data", "filename", "content_type", "status", "code"),
    HOSTILE_FILES,
    ids=[case[0] for case in HOSTILE_FILES],
)
async def test_hostile_files(api, name, data, filename, content_type, status, code) -> None:
    payload = data if data is not None else hostile_bytes(name)
    response = await api.clip(payload, filename, content_type)
    assert_problem(response, status, code)
    assert response.headers["X-Request-Id"]


async def test_png_bomb_is_refused_quickly(api) -> None:
    started = time.perf_counter()
    response = await api.clip(png_bomb(50_000, 50_000), "bomb.png", "image/png")
    assert time.perf_counter() - started < 2.0
    body = assert_problem(response, 413, "image_too_large")
    assert "50000" in body["detail"]


async def test_non_multipart_text_body_is_415(api) -> None:
    response = await api.client.post("/v1/clip", content=b"hello", headers={"Content-Type": "text/plain"})
    assert_problem(response, 415)


async def test_json_body_is_415(api) -> None:
    response = await api.client.post("/v1/clip", json={"image_url": "http://127.0.0.1/x.jpg"})
    assert_problem(response, 415)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("format", "gif"),
        ("size", "huge"),
        ("crop", "maybe"),
        ("crop_margin", "abc"),
        ("bg_color", "zzz"),
        ("channels", "cmyk"),
    ],
)
@pytest.mark.parametrize("where", ["form", "query"])
async def test_bad_parameters_are_422(api, name: str, value: str, where: str) -> None:
    files = {"image_file": ("p.jpg", good_jpeg(), "image/jpeg")}
    if where == "form":
        response = await api.client.post("/v1/clip", files=files, data={name: value})
    else:
        response = await api.client.post("/v1/clip", files=files, params={name: value})
    body = assert_problem(response, 422, "invalid_option")
    assert name in body["detail"]


async def test_missing_image_file_is_422(api) -> None:
    response = await api.client.post("/v1/clip", files={"other": ("p.jpg", good_jpeg(), "image/jpeg")})
    assert_problem(response, 422)
    response = await api.client.post("/v1/clip", data={"image_file": "not a file", "format": "png"},
                                     files={"x": ("a", b"b")})
    assert_problem(response, 422)


async def test_no_key_is_401(api) -> None:
    response = await api.client.post(
        "/v1/clip", files={"image_file": ("p.jpg", good_jpeg(), "image/jpeg")}, headers={"X-Api-Key": ""}
    )
    assert_problem(response, 401, "missing_api_key")
    del api.client.headers["X-Api-Key"]
    response = await api.client.post("/v1/clip", files={"image_file": ("p.jpg", good_jpeg(), "image/jpeg")})
    assert_problem(response, 401, "missing_api_key")


async def test_bad_key_is_403(api) -> None:
    for bad in ("arc_live_nope", api.key + "x", api.key[:-1]):
        response = await api.client.post(
            "/v1/clip", files={"image_file": ("p.jpg", good_jpeg(), "image/jpeg")}, headers={"X-Api-Key": bad}
        )
        assert_problem(response, 403, "invalid_api_key")


async def test_revoked_key_is_403(api) -> None:
    assert (await api.clip(good_jpeg())).status_code == 200
    await api.services.keys.revoke(api.key_id)
    response = await api.clip(good_jpeg())
    assert_problem(response, 403, "revoked_api_key")


async def test_auth_is_checked_before_the_image(api) -> None:
    response = await api.client.post(
        "/v1/clip", files={"image_file": ("b.png", png_bomb(), "image/png")}, headers={"X-Api-Key": "wrong"}
    )
    assert_problem(response, 403)


async def test_declared_oversize_upload_is_413(api) -> None:
    # Content-Length over the limit: refused by the middleware before any byte is read.
    big = b"\xff\xd8\xff" + b"\0" * (26 * 1024 * 1024)
    response = await api.client.post("/v1/clip", content=big, headers={"Content-Type": "image/jpeg"})
    assert_problem(response, 413)


async def test_image_over_byte_limit_is_413(app_factory, u2netp_model) -> None:
    async with app_factory(u2netp_model, max_upload_bytes=100_000) as api:
        rng = np.random.default_rng(0)
        noisy = encode_image(rng.integers(0, 256, (185, 185, 3), dtype=np.uint8), "PNG")
        assert 100_000 < len(noisy) < 100_000 + 60_000  # inside the multipart allowance, over the image limit
        response = await api.clip(noisy, "noise.png", "image/png")
        assert_problem(response, 413, "image_too_large")


async def test_unknown_route_and_method_are_problems(api) -> None:
    assert_problem(await api.client.get("/v1/nope"), 404, "not_found")
    assert_problem(await api.client.get("/v1/clip"), 405, "method_not_allowed")


async def test_server_stays_healthy_after_every_hostile_request(api) -> None:
    for name, data, filename, content_type, status, _ in HOSTILE_FILES:
        payload = data if data is not None else hostile_bytes(name)
        response = await api.clip(payload, filename, content_type)
        assert response.status_code == status, name
    for params in ({"format": "gif"}, {"size": "huge"}, {"crop": "maybe"}):
        response = await api.client.post(
            "/v1/clip", params=params, files={"image_file": ("p.jpg", good_jpeg(), "image/jpeg")}
        )
        assert response.status_code == 422
    assert (await api.client.post("/v1/clip", content=b"x" * 10, headers={"Content-Type": "text/plain"})).status_code == 415
    assert (await api.client.post("/v1/clip", files={"x": ("a", b"b")})).status_code == 422

    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["queue"]["admitted"] == 0, "an error leaked a queue place"
    response = await api.clip(good_jpeg())
    assert response.status_code == 200
    assert decode_response_image(response.content).size == (160, 120)


async def test_model_failure_is_a_500_problem_and_the_server_recovers(app_factory) -> None:
    failing = {"on": True}

    def fn(x: np.ndarray) -> np.ndarray:
        if failing["on"]:
            raise RuntimeError("model exploded: secret internals")
        return disk_saliency(x)

    model = FunctionModel(PRESETS["u2net"], fn, max_batch=1)
    async with app_factory(model, max_queue=1, workers=1) as api:
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-Api-Key": api.key}
        ) as client:
            files = {"image_file": ("p.jpg", good_jpeg(), "image/jpeg")}
            response = await client.post("/v1/clip", files=files)
            assert_problem(response, 500, "internal_error")
            assert "secret internals" not in response.text
            assert response.headers.get("X-Request-Id"), "500s must carry the request id too"
            failing["on"] = False
            # max_queue=1: this is admitted only if the failed request gave its place back
            response = await client.post("/v1/clip", files=files)
            assert response.status_code == 200, response.text
