"""The first-party web clients (SPEC §6) and two small helpers they draw with.

    GET /capture, /canvas        -> 307 to /capture/ and /canvas/ (the query, e.g. ?code=, is kept)
    GET /capture/{path}          the phone's capture app            (files of clients/capture/)
    GET /canvas/{path}           the desktop canvas companion       (files of clients/canvas/)
    GET /shared/{path}           the JS modules both apps import    (files of clients/shared/)
    GET /v1/fiducials.png?w=&h=  the paste pattern (``sync.locate.fiducials.render_pattern``) as an RGBA PNG
    GET /v1/qr.svg?data=         a QR code of ``data`` (the pairing URL) as SVG

The URL layout mirrors the folder layout, so the apps use relative URLs only
(``../shared/sync.js``) and work the same from any host or prefix-free proxy.

Where the files are: ``clients/`` next to the ``api`` package (a source checkout or an
editable install), else a ``clients`` package installed as package data (a wheel), else
``./clients`` (a container whose working directory holds the repository). Without them
the pages answer 503 problem+json saying so; the API is unaffected.
"""

from __future__ import annotations

import importlib.util
import logging
import mimetypes
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import cv2
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..errors import ApiProblem
from ..openapi import image_response, merge, problem_responses

log = logging.getLogger("arclip.clients")

router = APIRouter(tags=["clients"])

APPS = ("capture", "canvas", "shared")
# Python's table lacks some of these, or disagrees between platforms.
mimetypes.add_type("application/manifest+json", ".webmanifest")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("image/svg+xml", ".svg")

# What a page may do: its own scripts, styles and API only; images from itself, blobs (camera
# frames, clips) and data: URLs; websockets back to the same host.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; worker-src 'self'; "
    "manifest-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_HEADERS = {
    # Revalidate every time (ETag makes it a 304): a deploy is picked up at once; the
    # service workers keep the apps working offline.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Pairing codes sit in /capture?code=…, tokens in asset URLs: never hand them on.
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADERS = {**_HEADERS, "Content-Security-Policy": _CSP, "Permissions-Policy": "camera=(self), microphone=()"}


def _has_apps(folder: Path) -> bool:
    return all((folder / app).is_dir() for app in APPS) and (folder / "capture" / "index.html").is_file()


@lru_cache(maxsize=1)
def clients_dir() -> Path | None:
    """The folder holding ``capture/``, ``canvas/`` and ``shared/``; None when not installed."""
    candidates = [Path(__file__).resolve().parents[2] / "clients"]
    try:
        spec = importlib.util.find_spec("clients")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    candidates.append(Path.cwd() / "clients")
    for folder in candidates:
        if _has_apps(folder):
            return folder
    log.warning("the web clients (clients/capture, clients/canvas) were not found; /capture and /canvas answer 503")
    return None


@lru_cache(maxsize=len(APPS))
def _static(app: str) -> StaticFiles | None:
    folder = clients_dir()
    if folder is None:
        return None
    return StaticFiles(directory=folder / app, html=True, follow_symlink=False)


async def _serve(app: str, path: str, request: Request) -> Response:
    static = _static(app)
    if static is None:
        raise ApiProblem(503, "clients_not_installed", "The web clients are not installed with this server.")
    try:
        response = await static.get_response(path or "index.html", request.scope)
    except StarletteHTTPException as exc:  # not found, or a path outside the folder
        raise ApiProblem(exc.status_code, "not_found" if exc.status_code == 404 else f"http_{exc.status_code}",
                         "No such file.") from None
    is_page = path in ("", "index.html") or path.endswith(".html")
    response.headers.update(_PAGE_HEADERS if is_page else _HEADERS)
    if path == "sw.js":
        response.headers["Service-Worker-Allowed"] = f"/{app}/"
    return response


def _to_folder(request: Request) -> RedirectResponse:
    url = request.url.path + "/"
    if request.url.query:
        url += "?" + request.url.query
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.api_route("/capture", methods=["GET", "HEAD"], include_in_schema=False)
async def capture_root(request: Request) -> RedirectResponse:
    """The QR code's URL (``/capture?code=…``) opens the capture app, code kept."""
    return _to_folder(request)


@router.api_route("/canvas", methods=["GET", "HEAD"], include_in_schema=False)
async def canvas_root(request: Request) -> RedirectResponse:
    return _to_folder(request)


@router.api_route("/capture/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def capture_files(path: str, request: Request) -> Response:
    return await _serve("capture", path, request)


@router.api_route("/canvas/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def canvas_files(path: str, request: Request) -> Response:
    return await _serve("canvas", path, request)


@router.api_route("/shared/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def shared_files(path: str, request: Request) -> Response:
    if not path:
        raise ApiProblem(404, "not_found", "No such file.")
    return await _serve("shared", path, request)


# -- drawing helpers ---------------------------------------------------------------------------------

MAX_PATTERN_SIDE = 8192


@lru_cache(maxsize=16)
def _pattern_png(width: int, height: int) -> bytes:
    from sync.locate.fiducials import render_pattern

    pattern = render_pattern(width, height)  # BGRA, black and white: channel order is moot
    ok, buf = cv2.imencode(".png", pattern, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGRA array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


@router.get(
    "/v1/fiducials.png",
    operation_id="fiducialsPng",
    response_class=Response,
    responses=merge(
        image_response(200, "The pattern, transparent between markers.", ("image/png",)), problem_responses(422)
    ),
)
async def fiducials_png(
    w: Annotated[int, Query(ge=64, le=MAX_PATTERN_SIDE, description="canvas width in its pixels")],
    h: Annotated[int, Query(ge=64, le=MAX_PATTERN_SIDE, description="canvas height in its pixels")],
) -> Response:
    """The ArUco paste pattern the companion draws over a ``w`` x ``h`` canvas while a paste is pending.

    Pixel for pixel what the locator expects (``sync.locate.fiducials.render_pattern``); deterministic,
    so it is cached.
    """
    try:
        data = _pattern_png(w, h)
    except ValueError as exc:  # more markers than the dictionary holds
        raise ApiProblem(422, "invalid_parameter", f"No pattern for a {w}x{h} canvas: {exc}.") from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "public, max-age=86400, immutable"})


MAX_QR_DATA = 1024


def qr_modules(data: str) -> list[list[bool]]:
    """The QR code of ``data`` as rows of dark (True) modules, without the quiet zone."""
    encoder = cv2.QRCodeEncoder.create()
    image = encoder.encode(data)  # one pixel per module, 0 dark, with a quiet border
    if image is None or image.size == 0:
        raise ValueError("cannot encode")
    dark = image < 128
    rows, cols = dark.nonzero()
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    return [[bool(v) for v in row[left : right + 1]] for row in dark[top : bottom + 1]]


def qr_svg(data: str, quiet: int = 4) -> str:
    modules = qr_modules(data)
    n = len(modules)
    side = n + 2 * quiet
    runs: list[str] = []
    for y, row in enumerate(modules):
        x = 0
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                runs.append(f"M{start + quiet} {y + quiet}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/><path fill="#000" d="{"".join(runs)}"/></svg>'
    )


@router.get(
    "/v1/qr.svg",
    operation_id="qrSvg",
    response_class=Response,
    responses=merge(image_response(200, "The QR code.", ("image/svg+xml",)), problem_responses(422)),
)
async def qr_code(data: Annotated[str, Query(min_length=1, max_length=MAX_QR_DATA)]) -> Response:
    """A QR code (SVG, 4-module quiet zone) of ``data``: the companion shows its pairing URL with it."""
    try:
        svg = qr_svg(data)
    except (ValueError, cv2.error):
        raise ApiProblem(422, "invalid_parameter", "This text cannot be put in a QR code.") from None
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})
