"""In a real browser: each app shows whether the other device is connected right now, and the capture
app's cut carries an Idempotency-Key that its retry reuses (a lost answer makes no second clip)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import PHONE, LiveServer, collect_console, launch, write_y4m
from tests.conftest import disk_model, make_settings, photo

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_presence_pills_and_a_retried_cut(tmp_path: Path, playwright_api: Any, chromium_path: str) -> None:
    pw = playwright_api
    log: list[str] = []
    camera = write_y4m(tmp_path / "object.y4m", [photo(1280, 720)])
    settings = make_settings(tmp_path / "data", workers=2, hub_presence_grace_s=0.3)
    with LiveServer(settings, disk_model()) as server:
        desktop = launch(pw, chromium_path)
        phone_ctx = launch(pw, chromium_path, camera=camera, user_data_dir=tmp_path / "phone", **PHONE)
        try:
            canvas = desktop.new_context(viewport={"width": 1280, "height": 800}).new_page()
            canvas.set_default_timeout(TIMEOUT_MS)
            collect_console(canvas, log, "canvas")
            canvas.goto(f"{server.base}/canvas")
            canvas.wait_for_selector("#code[data-code]")
            code = canvas.get_attribute("#code", "data-code")
            assert canvas.is_hidden("#peer")  # no phone paired: nothing to say yet

            phone = phone_ctx.pages[0] if phone_ctx.pages else phone_ctx.new_page()
            phone.set_default_timeout(TIMEOUT_MS)
            collect_console(phone, log, "phone")
            phone.goto(f"{server.base}/capture")
            phone.fill("#code-input", code)
            phone.click("#pair-btn")
            phone.wait_for_selector("#camera-view[data-camera='live']")

            # -- presence, both ways
            phone.wait_for_selector("#peer[data-state='online']")
            assert phone.inner_text("#peer") == "Laptop connected"
            canvas.wait_for_selector("#peer[data-state='online']")
            assert canvas.inner_text("#peer") == "Phone connected"

            # -- the cut's answer is lost once: the retry carries the same key and gets the same clip
            keys: list[str] = []

            def lose_first_answer(route: Any) -> None:
                keys.append(route.request.headers.get("idempotency-key", ""))
                if len(keys) == 1:
                    route.fetch()  # the server does the work...
                    route.abort("connectionreset")  # ...and the phone never hears back
                else:
                    route.continue_()

            phone.route("**/v1/captures", lose_first_answer)
            phone.wait_for_function("() => document.getElementById('video').videoWidth === 1280")
            phone.click("#cut-btn")
            phone.wait_for_selector("#clip-box[data-loaded='true']")
            asset_id = phone.get_attribute("#clip-box", "data-asset")
            assert len(keys) == 2 and keys[0] == keys[1] and UUID.match(keys[0]), keys
            canvas.wait_for_selector(f"#clip-list li[data-asset='{asset_id}']")
            clips = canvas.evaluate("() => window.arclipCanvas.state.clips.map(c => c.asset_id)")
            assert clips == [asset_id]  # one clip, announced once

            # -- the phone closes the app: after the grace the canvas says so
            phone_ctx.close()
            phone_ctx = None
            canvas.wait_for_selector("#peer[data-state='away']")
            assert canvas.inner_text("#peer") == "Phone not connected"
        except Exception:
            print("\n".join(log))
            raise
        finally:
            if phone_ctx is not None:
                phone_ctx.close()
            desktop.close()
