"""How the app serves its web clients (api/routes/clients.py), over the ASGI app.

/capture and /canvas redirect to their folders keeping the query (the QR code's ?code=); every file
the pages reference (HTML src/href, JS imports, the manifest's icons, the service workers' lists) is
served with the right type; nothing outside clients/ is; the fiducial pattern is pixel for pixel
the locator's; the QR code decodes to its text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import cv2
import numpy as np
import pytest

from api.routes import clients as client_routes
from sync.locate.fiducials import detect_markers, pattern_layout, render_pattern
from tests.conftest import assert_problem, disk_model

CLIENTS = Path(__file__).resolve().parents[2] / "clients"


@pytest.fixture
async def api(app_factory) -> Any:
    async with app_factory(disk_model()) as running:
        yield running


def test_clients_folder_is_found() -> None:
    assert client_routes.clients_dir() == CLIENTS


@pytest.mark.parametrize("app", ["capture", "canvas"])
async def test_app_root_redirects_to_its_folder_keeping_the_query(api, app: str) -> None:
    response = await api.client.get(f"/{app}?code=ABCD2345", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"/{app}/?code=ABCD2345"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert (await api.client.get(f"/{app}", follow_redirects=False)).headers["location"] == f"/{app}/"


@pytest.mark.parametrize("app", ["capture", "canvas"])
async def test_page_headers(api, app: str) -> None:
    page = await api.client.get(f"/{app}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script type=\"module\" src=\"app.js\"></script>" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    # revalidation is cheap: the ETag makes it a 304
    again = await api.client.get(f"/{app}/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    head = await api.client.head(f"/{app}/app.js")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/javascript")


_REF = re.compile(r"""(?:src|href)="([^"#]+)\"""")
_IMPORT = re.compile(r"""(?:import\s[^'"]*?from\s*|import\s*\(\s*|import\s+)["']([^"']+)["']""")
_MEDIA = {
    ".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml", ".png": "image/png",
}


async def _crawl(api, start: str) -> dict[str, str]:
    """Every same-origin file reachable from ``start``: path -> content type."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        url = todo.pop()
        path = urlparse(url).path
        if path in seen:
            continue
        response = await api.client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        ctype = response.headers["content-type"].split(";")[0]
        seen[path] = ctype
        suffix = Path(path).suffix or ".html"
        assert ctype == _MEDIA[suffix], (path, ctype)
        refs: list[str] = []
        if ctype == "text/html":
            refs = _REF.findall(response.text)
        elif ctype == "text/javascript":
            refs = _IMPORT.findall(response.text)
            if path.endswith("/sw.js"):  # the service worker's precache list
                shell = re.search(r"SHELL = \[(.*?)\];", response.text, re.S)
                assert shell, path
                refs += re.findall(r'"([^"]+)"', shell.group(1))
        elif ctype == "application/manifest+json":
            manifest = json.loads(response.text)
            refs = [icon["src"] for icon in manifest["icons"]]
            assert manifest["start_url"] == "./" and manifest["display"] in ("standalone", "fullscreen")
            assert any(i["sizes"] == "512x512" for i in manifest["icons"])
            assert any(i["sizes"] == "192x192" for i in manifest["icons"])
        for ref in refs:
            target = urljoin(url, ref)
            if urlparse(target).netloc == "testserver" and not urlparse(target).path.startswith("/v1/"):
                todo.append(target)
    return seen


@pytest.mark.parametrize("app", ["capture", "canvas"])
async def test_everything_a_page_references_is_served(api, app: str) -> None:
    seen = await _crawl(api, f"http://testserver/{app}/")
    seen.update(await _crawl(api, f"http://testserver/{app}/sw.js"))
    assert {f"/{app}/app.js", f"/{app}/style.css", f"/{app}/manifest.webmanifest", f"/{app}/icon-512.png",
            "/shared/sync.js", "/shared/api.js", "/shared/store.js", "/shared/ui.js"} <= set(seen)
    # and every file of the app's folder is listed in its service worker's precache
    sw = (await api.client.get(f"/{app}/sw.js")).text
    for file in (CLIENTS / app).iterdir():
        if file.name not in ("sw.js",):
            assert f'"./{file.name}"' in sw, f"{file.name} missing from {app}/sw.js"
    for file in (CLIENTS / "shared").glob("*.js"):
        assert f'"../shared/{file.name}"' in sw, f"shared/{file.name} missing from {app}/sw.js"


async def test_service_worker_scope_header(api) -> None:
    response = await api.client.get("/capture/sw.js")
    assert response.headers["service-worker-allowed"] == "/capture/"


@pytest.mark.parametrize(
    "path",
    [
        "/capture/../api/app.py", "/capture/%2e%2e/api/app.py", "/canvas/%2e%2e/%2e%2e/pyproject.toml",
        "/shared/..%2fcapture/index.html", "/capture/nope.js", "/shared/", "/capture/..%2f..%2fREADME.md",
    ],
)
async def test_nothing_outside_the_clients_folder(api, path: str) -> None:
    response = await api.client.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert "import" not in response.text


async def test_pages_answer_503_when_the_clients_are_not_installed(api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_routes, "_static", lambda app: None)
    response = await api.client.get("/capture/")
    assert_problem(response, 503, "clients_not_installed")
    assert (await api.client.get("/healthz")).status_code == 200


# -- the fiducial pattern ------------------------------------------------------------------------------


async def test_fiducials_png_is_the_locators_pattern(api) -> None:
    response = await api.client.get("/v1/fiducials.png", params={"w": 1000, "h": 748})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert "max-age" in response.headers["cache-control"]
    png = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.shape == (748, 1000, 4)
    assert np.array_equal(png, render_pattern(1000, 748))
    # drawn over a white canvas, every marker of the layout is found where the layout says
    white = np.where(png[..., 3:] > 0, png[..., :3], 255).astype(np.uint8)
    found = detect_markers(cv2.cvtColor(white, cv2.COLOR_BGR2GRAY))
    layout = pattern_layout(1000, 748)
    assert set(found) == {m.id for m in layout}
    for marker in layout:
        assert np.abs(found[marker.id] - marker.corners()).max() < 1.0


@pytest.mark.parametrize("query", [{"w": 10, "h": 500}, {"w": 500}, {"w": 9000, "h": 500}, {"w": "x", "h": 5}])
async def test_fiducials_png_refuses_bad_sizes(api, query: dict[str, Any]) -> None:
    assert_problem(await api.client.get("/v1/fiducials.png", params=query), 422)


# -- the QR code -------------------------------------------------------------------------------------


def _rasterize(svg: str, module_px: int = 8) -> np.ndarray:
    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))
    img = np.full((side * module_px, side * module_px), 255, np.uint8)
    for x, y, w in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", svg):
        x, y, w = int(x), int(y), int(w)
        img[y * module_px : (y + 1) * module_px, x * module_px : (x + w) * module_px] = 0
    return img


async def test_qr_svg_decodes_to_its_text(api) -> None:
    text = "http://192.168.1.20:8000/capture?code=ABCD2345"
    response = await api.client.get("/v1/qr.svg", params={"data": text})
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    decoded, *_ = cv2.QRCodeDetector().detectAndDecode(_rasterize(response.text))
    assert decoded == text


@pytest.mark.parametrize("data", ["", "x" * 2000])
async def test_qr_svg_refuses_bad_text(api, data: str) -> None:
    assert_problem(await api.client.get("/v1/qr.svg", params={"data": data}), 422)
