"""Fixtures for the Python SDK's tests: a real arclip server (uvicorn on a loopback port, in its
own thread and event loop), API keys made in that server, and the SDK importable from the repo.

The SDK lives in ``clients/python`` (its own distribution, ``arclip-client``); it is put on
``sys.path`` here so the suite needs no separate install step.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SDK_ROOT = Path(__file__).resolve().parents[3] / "clients" / "python"
if str(SDK_ROOT) not in sys.path:
    sys.path.insert(0, str(SDK_ROOT))

import uvicorn  # noqa: E402

from tests.conftest import disk_model, make_settings  # noqa: E402


class LiveServer:
    """``create_app(settings, model=...)`` served by uvicorn on 127.0.0.1.

    It runs in its own thread and loop (so sync clients can call it from the test thread and
    async ones from the test's loop), can be restarted on the same port with the same data
    directory, and runs coroutines in the server's loop (``call``) to create keys and such.
    """

    def __init__(self, settings: Any, model: Any) -> None:
        self.settings = settings
        self.model = model
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.app: Any = None
        self._key_ids: dict[str, str] = {}

    def start(self) -> LiveServer:
        from api.app import create_app

        self.app = create_app(self.settings, model=self.model)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="arclip-sdk-server", daemon=True)
        self.thread.start()
        for _ in range(600):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.02)
        assert self.server.started, "uvicorn did not start"
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def _serve(self) -> None:
        assert self.loop is not None and self.server is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            assert not self.thread.is_alive(), "uvicorn did not stop"
        self.server = self.thread = None

    def restart(self) -> LiveServer:
        """Stop, then serve a fresh app on the same port and data directory (a server restart)."""
        self.stop()
        return self.start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def services(self) -> Any:
        return self.app.state.services

    def create_key(self, name: str = "sdk-tests", credits: int = 1_000_000) -> str:
        """A new API key's secret, with ``credits`` millicredits where the key service grants them."""
        keys = self.services.keys
        extra: dict[str, Any] = {}
        if "credits" in inspect.signature(keys.create).parameters:
            extra["credits"] = credits
        info, secret = self.call(keys.create(name, **extra))
        self._key_ids[secret] = info.id
        return secret

    def revoke_key(self, secret: str) -> None:
        self.call(self.services.keys.revoke(self._key_ids[secret]))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """``server_factory(model=None, **settings)``: a started ``LiveServer``, stopped after the test."""
    started: list[LiveServer] = []
    counter = iter(range(1000))

    def factory(model: Any = None, **overrides: Any) -> LiveServer:
        settings = make_settings(tmp_path / f"server{next(counter)}", **overrides)
        server = LiveServer(settings, model if model is not None else disk_model()).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    """A real server on a fast in-memory model (a centred disk), small upload limit."""
    return server_factory(max_upload_bytes=2_000_000)


@pytest.fixture
def api_key(server: LiveServer) -> str:
    return server.create_key()


def screen_scene(seed: int = 7) -> tuple[bytes, bytes, tuple[float, float]]:
    """A companion's screen picture (PNG, 1280x800, rich in features), a phone-like photo of part of
    it (JPEG: a crop, scaled and slightly rotated), and the screen point under the photo's centre."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    screen = np.full((800, 1280, 3), 235, np.uint8)
    for _ in range(160):
        x, y = int(rng.integers(0, 1240)), int(rng.integers(0, 770))
        color = tuple(int(c) for c in rng.integers(0, 220, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(screen, (x, y), (x + int(rng.integers(10, 90)), y + int(rng.integers(10, 60))), color, -1)
        elif kind == 1:
            cv2.circle(screen, (x, y), int(rng.integers(5, 40)), color, -1, cv2.LINE_AA)
        else:
            cv2.putText(screen, f"arclip {int(rng.integers(0, 999))}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, color, 2)
    target = (700.0, 380.0)
    rotation = cv2.getRotationMatrix2D(target, 4.0, 1.15)  # rotate 4 degrees, zoom 1.15 about the target
    rotation[:, 2] += (320 - target[0], 240 - target[1])  # ... and put the target at the photo's centre
    view = cv2.warpAffine(screen, rotation, (640, 480), flags=cv2.INTER_LINEAR, borderValue=(40, 40, 40))
    ok, screen_png = cv2.imencode(".png", screen)
    ok2, view_jpeg = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 88])
    assert ok and ok2
    return screen_png.tobytes(), view_jpeg.tobytes(), target
