"""``/docs`` and ``/redoc`` in a real browser on a machine that cannot reach anything but itself.

Every request the pages make that is not to 127.0.0.1 is recorded and aborted (as an offline
machine would fail it). The pages must still render the API's operations, and nothing may have
left loopback: Swagger UI and ReDoc load from the app (``api/routes/docs.py``), not a CDN.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.clients.conftest import collect_console, launch, serving
from tests.conftest import disk_model

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serving(tmp_path_factory.mktemp("docs"), disk_model()) as live:
        yield live


def _offline_page(browser: Any, left: list[str], seen: list[str]) -> Any:
    page = browser.new_page()

    def route(r: Any) -> None:
        url = r.request.url
        seen.append(url)
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOOPBACK:
            r.continue_()
        else:
            left.append(url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    return page


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        # Swagger UI: one block per operation, its path in the summary line.
        ("/docs", ".opblock-summary-path"),
        # ReDoc: the operations in its side menu.
        ("/redoc", "[role=menuitem], .menu-content li"),
    ],
)
def test_docs_pages_render_offline(
    server: Any, playwright_api: Any, chromium_path: str, artifacts: Path, path: str, rendered: str
) -> None:
    left: list[str] = []
    seen: list[str] = []
    console: list[str] = []
    browser = launch(playwright_api, chromium_path)
    try:
        page = _offline_page(browser, left, seen)
        collect_console(page, console, path)
        page.goto(server.base + path, wait_until="load", timeout=TIMEOUT_MS)
        page.wait_for_selector(rendered, timeout=TIMEOUT_MS)
        # The operations are there, by their paths: the clipping route and the device API.
        page.get_by_text("/v1/clip", exact=False).first.wait_for(state="visible", timeout=TIMEOUT_MS)
        text = page.inner_text("body")
        page.screenshot(path=str(artifacts / f"docs{path.replace('/', '-')}.png"))
    finally:
        browser.close()
    assert "/v1/clip" in text and "/v1/pairings" in text, console
    assert any(urlsplit(u).path == "/openapi.json" for u in seen), seen  # it read the app's document
    assert not left, f"requests left loopback: {left}"
    assert not [line for line in console if "pageerror" in line], console


def test_docs_assets_come_from_the_app(server: Any) -> None:
    with httpx.Client(base_url=server.base) as client:
        page = client.get("/docs").text
        for name, media_type in [("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")]:
            assert f'"/docs/assets/{name}"' in page or f"'/docs/assets/{name}'" in page
            response = client.get(f"/docs/assets/{name}")
            assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
            assert len(response.content) > 10_000
        assert "/docs/assets/redoc.standalone.js" in client.get("/redoc").text
        redoc = client.get("/redoc")
        assert "fonts.googleapis.com" not in redoc.text
        # ReDoc's bundle asks its CDN for a logo: the page's policy forbids any other origin.
        assert "default-src 'self'" in redoc.headers["content-security-policy"]
        missing = client.get("/docs/assets/..%2Fcore.py")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
