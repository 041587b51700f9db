"""Shared fixtures and image helpers for the arclip test suite.

Images are generated in code (small, deterministic); the real u2netp model is
loaded once per session and shared by every app and engine that needs it.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from segmentation.models import PRESETS
from segmentation.session import FunctionModel

# ---------------------------------------------------------------------------
# Image helpers
# ---------------------------------------------------------------------------

OBJECT_RGB = (200, 30, 30)
BACKGROUND_RGB = (200, 205, 210)


def photo(
    width: int = 320,
    height: int = 240,
    *,
    center: tuple[int, int] | None = None,
    radius: int | None = None,
    color: tuple[int, int, int] = OBJECT_RGB,
    background: tuple[int, int, int] = BACKGROUND_RGB,
    seed: int = 0,
) -> np.ndarray:
    """A photo-like RGB image: a red disk (the object) on a lightly noisy grey background."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.int16)
    img[:] = background
    img += rng.integers(-6, 7, (height, width, 3), dtype=np.int16)
    img = img.clip(0, 255).astype(np.uint8)
    cx, cy = center if center is not None else (width // 2, height // 2)
    r = radius if radius is not None else min(width, height) // 4
    cv2.circle(img, (cx, cy), r, color, -1, lineType=cv2.LINE_AA)
    return img


def encode_image(pixels: np.ndarray | Image.Image, fmt: str = "JPEG", **save_kw) -> bytes:
    img = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    if fmt.upper() in ("HEIF", "HEIC"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        fmt = "HEIF"
    if fmt.upper() in ("JPEG", "JPG"):
        save_kw.setdefault("quality", 92)
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kw)
    return buf.getvalue()


def jpeg(width: int = 320, height: int = 240, **photo_kw) -> bytes:
    return encode_image(photo(width, height, **photo_kw), "JPEG")


def stored_for_orientation(displayed: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that EXIF ``orientation`` displays ``displayed``.

    Written from the EXIF definition (where the stored row 0 / column 0 go),
    independently of Pillow's own transpose table.
    """
    d = displayed
    stored = {
        1: lambda: d,
        2: lambda: d[:, ::-1],  # mirrored horizontally
        3: lambda: d[::-1, ::-1],  # rotated 180
        4: lambda: d[::-1, :],  # mirrored vertically
        5: lambda: d.transpose(1, 0, 2),  # transpose (self-inverse)
        6: lambda: np.rot90(d, 1),  # display = stored rotated 90 deg clockwise
        7: lambda: d[::-1, ::-1].transpose(1, 0, 2),  # transverse (self-inverse)
        8: lambda: np.rot90(d, -1),  # display = stored rotated 90 deg counter-clockwise
    }[orientation]()
    return np.ascontiguousarray(stored)


def exif_jpeg(displayed: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """A JPEG whose pixels are stored rotated/mirrored, plus the EXIF tag that undoes it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = stored_for_orientation(displayed, orientation)
    return encode_image(stored, "JPEG", quality=quality, exif=exif.tobytes())


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid-looking PNG whose IHDR claims width x height, with a tiny compressed IDAT.

    Decoding it would need width*height bytes; its header alone must get it refused.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)  # the first few (empty) rows
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def decode_response_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def alpha_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, width, height) of every non-zero alpha pixel; (0, 0, 0, 0) when empty."""
    ys, xs = np.nonzero(alpha)
    if ys.size == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))


PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is RFC 9457 problem+json with our machine-readable code."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    for name in PROBLEM_FIELDS:
        assert name in body, f"problem body lacks {name!r}: {body}"
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["type"], str) and body["type"]
    if code is not None:
        assert body["code"] == code, body
    # no error is charged
    assert "x-credits-charged" not in response.headers
    return body


# ---------------------------------------------------------------------------
# In-memory models
# ---------------------------------------------------------------------------


def disk_saliency(x: np.ndarray, radius_fraction: float = 0.3) -> np.ndarray:
    """A fixed centred disk, whatever the input: a predictable 'object'."""
    size = x.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= (radius_fraction * size) ** 2).astype(np.float32)


def disk_model(delay: float = 0.0, max_batch: int = 8) -> FunctionModel:
    """A FunctionModel predicting a centred disk; ``delay`` seconds per *batch* (a slow GPU)."""
    model: FunctionModel

    def fn(x: np.ndarray) -> np.ndarray:
        return disk_saliency(x)

    model = FunctionModel(PRESETS["u2net"], fn, max_batch=max_batch)
    if delay:
        predict = model.predict
        calls = threading.Lock()

        def slow_predict(batch: np.ndarray) -> np.ndarray:
            with calls:
                time.sleep(delay)
            return predict(batch)

        model.predict = slow_predict  # type: ignore[method-assign]
    return model


class LiveServer:
    """uvicorn serving ``create_app(settings, model=...)`` on 127.0.0.1 in its own thread and loop.

    Protocol pings are off: the tests exercise the app's own heartbeat, and a browser the test
    takes offline must stay connected until the test says otherwise.
    """

    def __init__(self, settings: Any, model: Any, port: int = 0) -> None:
        import uvicorn

        from api.app import create_app

        config = uvicorn.Config(
            create_app(settings, model=model), host="127.0.0.1", port=port, log_level="warning", lifespan="on",
            ws_ping_interval=None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-live", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        for _ in range(600):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert self.server.started, "uvicorn did not start"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of derived model graphs (the int8 u2netp, ~10 CPU s to build) for the whole run."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, model_cache_dir: Path) -> None:
    """No ARCLIP_* variable from the outer environment leaks into a test; derived models are shared."""
    import os

    for name in list(os.environ):
        if name.startswith("ARCLIP_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARCLIP_MODEL_CACHE_DIR", str(model_cache_dir))


@pytest.fixture(scope="session")
def u2netp_model(model_cache_dir: Path):
    """The real shipped model as a CPU server runs it (int8 where it passes its proof), loaded once."""
    from segmentation import OnnxModel, resolve_model

    return OnnxModel(resolve_model("u2netp"), max_batch=1, precision="auto", derived_dir=model_cache_dir)


# The free plan without rate limits: tests of other parts send bursts of concurrent
# requests and must not trip the limiter by accident (billing's tests set their own).
UNLIMITED_PLANS = {"free": {"rate": 10_000.0, "burst": 10_000, "concurrency": 10_000}}


def make_settings(data_dir: Path, **overrides):
    from api.settings import Settings

    defaults = dict(data_dir=data_dir, workers=2, max_queue=16, intra_op_threads=None, plans=UNLIMITED_PLANS)
    defaults.update(overrides)
    return Settings(_env_file=None, **defaults)


@dataclass
class RunningApp:
    app: object
    client: httpx.AsyncClient
    services: object
    key: str  # a valid API key's secret
    key_id: str

    async def clip(self, image: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg", **options):
        """POST /v1/clip with options as form fields."""
        return await self.client.post(
            "/v1/clip",
            files={"image_file": (filename, image, content_type)},
            data={k: str(v) for k, v in options.items()},
        )


@contextlib.asynccontextmanager
async def running_app(settings, model) -> AsyncIterator[RunningApp]:
    """create_app with its lifespan running, a key created, and an ASGI client with that key."""
    from api.app import create_app

    app = create_app(settings, model=model)
    async with app.router.lifespan_context(app):
        services = app.state.services
        info, secret = await services.keys.create("tests")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-Api-Key": secret}, timeout=60
        ) as client:
            yield RunningApp(app=app, client=client, services=services, key=secret, key_id=info.id)


@pytest.fixture
async def api(tmp_path: Path, u2netp_model) -> AsyncIterator[RunningApp]:
    """The whole app on the real model, fresh database per test."""
    async with running_app(make_settings(tmp_path / "data"), u2netp_model) as running:
        yield running


@pytest.fixture
def app_factory(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[RunningApp]]:
    """``async with app_factory(model, **settings) as api:`` for tests needing their own settings/model."""
    counter = iter(range(1000))

    def factory(model, **overrides):
        return running_app(make_settings(tmp_path / f"data{next(counter)}", **overrides), model)

    return factory


# ---------------------------------------------------------------------------
# Billing: a local Stripe (localstripe + a stub, loopback only) and a real redis-server
# ---------------------------------------------------------------------------

STRIPE_TEST_KEY = "sk_test_arclip_local_only"
WEBHOOK_SECRET = "whsec_arclip_test_secret"


@pytest.fixture(scope="session")
def _stripe_servers():
    from tests.billing.stripe_server import LocalStripe, LocalStripeServers, StripeStub

    localstripe = LocalStripe().start()
    stub = StripeStub(upstream=localstripe.url).start()
    try:
        yield LocalStripeServers(localstripe, stub)
    finally:
        stub.stop()
        localstripe.stop()


@pytest.fixture
def stripe_local(_stripe_servers):
    """The local Stripe, its stub's failures and records reset for each test."""
    _stripe_servers.stub.reset()
    yield _stripe_servers
    _stripe_servers.stub.reset()


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on loopback, for the whole session (skipped where there is none)."""
    from tests.postgres import running_postgres

    with running_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway redis-server on a free loopback port, for the whole session."""
    from sync.hub.testing import RedisServer

    with RedisServer(tmp_path_factory.mktemp("billing-redis"), appendonly=False) as url:
        yield url


@contextlib.contextmanager
def sqlite_locked(database: Path) -> Iterator[None]:
    """Another process's ``BEGIN EXCLUSIVE`` on the SQLite file, held until the block ends."""
    holder = sqlite3.connect(database, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()
