"""Real-browser tests of the web clients: Debian's chromium driven by Playwright.

Chromium is the system one (``apt-get install chromium``), never a Playwright download: we pass
``executable_path``. Cameras are Chromium's fake capture device fed from a generated .y4m file,
one file per browser launch. Without chromium or playwright these tests are skipped, except in CI
(``CI`` set), where that is a failure: ``.ci/run`` installs both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import LiveServer, make_settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real Chromium (tests/clients)")


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "clients"


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install it: see scripts/test.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("ARCLIP_TEST_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if Path(p).exists()), shutil.which("chromium")
    )
    if not path:
        _missing("chromium is not installed (apt-get install chromium)")
    return str(path)


@pytest.fixture
def playwright_api(chromium_path: str) -> Iterator[Any]:
    """Playwright's sync API, per test: while it is started an event loop runs in this thread, and
    pytest-asyncio cannot run the async tests that come after."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; never `playwright install`)")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def launch(
    pw: Any, chromium_path: str, *, camera: Path | None = None, user_data_dir: Path | None = None, **context: Any
):
    """A browser (or, with ``user_data_dir``, a persistent context keeping localStorage across launches).

    ``camera``: a .y4m file the fake camera plays (in a loop). Camera prompts are always auto-accepted,
    so without ``camera`` a page asking for one finds none (NotFoundError) instead of waiting on a prompt.
    """
    args = list(CHROMIUM_ARGS) + ["--use-fake-ui-for-media-stream"]
    if camera is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"]
    if user_data_dir is not None:
        return pw.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=chromium_path, args=args, **context
        )
    return pw.chromium.launch(executable_path=chromium_path, args=args)


PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """A YUV4MPEG2 (4:2:0) file of BGR frames, as Chromium's fake camera reads it."""
    h, w = frames[0].shape[:2]
    assert w % 2 == 0 and h % 2 == 0
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def collect_console(page: Any, log: list[str], name: str) -> None:
    page.on("console", lambda m: log.append(f"[{name}] {m.type}: {m.text}"))
    page.on("pageerror", lambda e: log.append(f"[{name}] pageerror: {e}"))


# ---------------------------------------------------------------------------
# A real server
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving(data_dir: Path, model: Any, port: int = 0, **overrides: Any) -> Iterator[LiveServer]:
    with LiveServer(make_settings(data_dir, workers=2, **overrides), model, port=port) as server:
        yield server
