"""The server answers while its model loads: /healthz at once, /readyz "starting", clips 503 until ready."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, assert_problem, disk_model, jpeg, make_settings


def create_key(settings) -> str:  # type: ignore[no-untyped-def]
    from api.offline import with_keys

    async def create() -> str:
        async with with_keys(settings) as keys:
            return (await keys.create("warmup", credits=5_000))[1]

    return asyncio.run(create())


def wait_ready(base: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(f"{base}/readyz")
        if response.status_code == 200:
            return response
        time.sleep(0.05)
    raise AssertionError(f"not ready: {response.text}")


def test_slow_model_load_answers_starting_then_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.app

    release = threading.Event()

    def slow_build_model(settings):  # type: ignore[no-untyped-def]
        assert release.wait(30), "the test never released the model"
        return disk_model()

    monkeypatch.setattr(api.app, "build_model", slow_build_model)
    settings = make_settings(tmp_path / "data")
    key = create_key(settings)
    with LiveServer(settings, None) as server, httpx.Client(base_url=server.base, headers={"X-Api-Key": key}) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        body = ready.json()
        assert body["status"] == 503 and body["code"] == "starting"
        assert body["inference"]["status"] == "starting" and "loading the model" in body["inference"]["phase"]
        assert body["database"]["status"] == "ok"
        balance = client.get("/v1/account").json()["balance"]["remaining"]
        refused = client.post("/v1/clip", files={"image_file": ("p.jpg", jpeg(160, 120), "image/jpeg")})
        assert_problem(refused, 503, "starting")
        assert int(refused.headers["Retry-After"]) >= 1
        assert client.get("/v1/account").json()["balance"]["remaining"] == balance, "a refused clip is not charged"

        release.set()
        assert wait_ready(server.base).json()["inference"]["status"] == "ok"
        clipped = client.post("/v1/clip", files={"image_file": ("p.jpg", jpeg(160, 120), "image/jpeg")})
        assert clipped.status_code == 200, clipped.text
        assert client.get("/v1/account").json()["balance"]["remaining"] == balance - 1


def test_a_model_that_fails_to_load_is_reported_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.app

    def broken_build_model(settings):  # type: ignore[no-untyped-def]
        raise FileNotFoundError("no such model: /models/missing.onnx")

    monkeypatch.setattr(api.app, "build_model", broken_build_model)
    settings = make_settings(tmp_path / "data")
    key = create_key(settings)
    with LiveServer(settings, None) as server, httpx.Client(base_url=server.base, headers={"X-Api-Key": key}) as client:
        deadline = time.monotonic() + 10
        while (body := client.get("/readyz").json())["code"] == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert body["code"] == "not_ready"
        assert body["inference"]["status"] == "error" and "missing.onnx" in body["inference"]["detail"]
        refused = client.post("/v1/clip", files={"image_file": ("p.jpg", jpeg(160, 120), "image/jpeg")})
        assert_problem(refused, 503, "inference_unavailable")
        assert client.get("/healthz").status_code == 200
