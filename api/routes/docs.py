"""``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by this app, never a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on an offline machine they are
blank. The files come from the installed ``fastapi-offline`` wheel (MIT; its ``static/`` folder
holds swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and a favicon): we use the files
only, and build the pages with FastAPI's own helpers.

    GET /docs                  Swagger UI over /openapi.json
    GET /redoc                 ReDoc over /openapi.json (no Google Fonts)
    GET /docs/assets/{name}    one of those four files
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from ..errors import ApiProblem

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_PREFIX = "/docs/assets"
_OPENAPI_URL = "/openapi.json"  # FastAPI's default, which create_app keeps

# The pages may load nothing from elsewhere: ReDoc's bundle itself fetches a logo from its CDN (it
# hides the image when that fails). Both pages run an inline script or inline styles of their own.
_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


@lru_cache(maxsize=1)
def assets_dir() -> Path:
    return Path(str(importlib.resources.files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    # Behind a proxy that mounts the app under a prefix, every URL the page loads carries it.
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=root + _OPENAPI_URL,
        title="arclip API - Swagger UI",
        swagger_js_url=f"{root}{_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{_PREFIX}/favicon.png",
        # No online validator badge: it would send the document to a third party.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers.update(_PAGE_HEADERS)
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    page = get_redoc_html(
        openapi_url=root + _OPENAPI_URL,
        title="arclip API - ReDoc",
        redoc_js_url=f"{root}{_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{_PREFIX}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(_PAGE_HEADERS)
    return page


@router.get(_PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:  # a fixed list: no path from the client ever reaches the file system
        raise ApiProblem(404, "not_found", "No such file.")
    # The files change only with the installed package: a day's caching, revalidated by ETag.
    return FileResponse(assets_dir() / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
