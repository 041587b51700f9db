"""The canvas companion, in a real browser, comes back after the hub has trimmed what it missed.

The server keeps only a few messages per pairing (``hub_max_messages``). The canvas pairs and
receives clips live; then the laptop "sleeps" (Playwright takes the browser context offline:
``navigator.onLine`` goes false, the canvas drops its socket and says so) while, over the HTTP API,
a second phone joins and the phone cuts more clips than the hub keeps, one of which (and one the
canvas already has) is deleted on the server. When the network comes back the canvas resumes from
its last id, the server answers with a ``resync`` whose snapshot holds the pairing's devices and
live assets, and the canvas rebuilds its view:

* every clip it missed is in its list, newest first above the ones it already had, no duplicates,
  each thumbnail loaded; the clip deleted while it was away never shows up;
* the clips it already had stay (the canvas keeps its clips locally, past the server's retention,
  exactly as a canvas that never slept would);
* the newest missed clip gets the paste markers, as its ``asset.created`` would have; the phone
  count follows the snapshot and the code the second phone used is no longer shown;
* layers already on the canvas (one placed by a real paste, one placed and dragged by hand) keep
  their positions, sizes and images;
* it gets and handles one resync (one notice) even when its resume reaches the server after the
  server's own replay from the stored ack has answered the gap (the server does not repeat a
  snapshot on one connection; the client would ignore a repeat, too), saves the
  resync's id as its last id, and carries on: later live messages (a clip, a paste of a missed clip)
  arrive and are acked as usual, and a reload resumes without another resync.

Frames are observed by wrapping the page's ``WebSocket`` (an init script), toasts by a
MutationObserver: the tests wait on DOM conditions, not on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.clients.conftest import collect_console, launch
from tests.clients.test_browser_flow import (
    CANVAS_VIEWPORT,
    canvas_layers,
    decode_png,
    mug_frame,
    phone_photo,
    stage_box,
    wait_canvas_uploaded,
)
from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
RESYNC_NOTICE = "Reconnected after a long break"

# Runs before the page's own scripts: records every frame the page's sockets receive and send,
# and every toast shown, so the test can wait on them and count them.
RECORDER = """
(() => {
  window.__frames = [];   // received: {id, type, data}
  window.__sent = [];     // sent: the parsed frames
  window.__toasts = [];   // texts of the toasts shown
  // Set by the test: hold the next "resume" until the server's first resync has arrived, as a slow
  // uplink would (the server replays from its stored ack as soon as it says hello).
  window.__holdResume = false;
  const Native = window.WebSocket;
  class RecordingSocket extends Native {
    constructor(...args) {
      super(...args);
      this.held = [];
      this.addEventListener("message", (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch { return; }
        window.__frames.push(frame);
        if (frame.type === "resync" && this.held.length) {
          window.__holdResume = false;
          for (const data of this.held.splice(0)) this.send(data);
        }
      });
    }
    send(data) {
      let frame = null;
      try { frame = JSON.parse(data); } catch { /* not ours */ }
      if (frame && frame.type === "resume" && window.__holdResume) {
        this.held.push(data);
        return;
      }
      if (frame) window.__sent.push(frame);
      return super.send(data);
    }
  }
  window.WebSocket = RecordingSocket;
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.classList && node.classList.contains("toast")) window.__toasts.push(node.textContent);
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""


# ---------------------------------------------------------------------------
# The phone (HTTP API) and the server's own view
# ---------------------------------------------------------------------------


class Phone:
    """A phone of the pairing, driven over the device API with its token."""

    def __init__(self, base: str, code: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=60)
        claimed = self.http.post("/v1/pairings/claim", json={"code": code})
        assert claimed.status_code == 201, claimed.text
        self.pairing_id = claimed.json()["pairing_id"]
        self.http.headers["Authorization"] = f"Bearer {claimed.json()['phone_token']}"

    def capture(self, seed: int) -> str:
        ok, jpg = cv2.imencode(".jpg", mug_frame(seed=seed))
        assert ok
        response = self.http.post("/v1/captures", files={"image_file": ("cut.jpg", jpg.tobytes(), "image/jpeg")})
        assert response.status_code == 201, response.text
        return response.json()["asset_id"]

    def paste(self, asset_id: str, view: np.ndarray) -> dict[str, Any]:
        ok, jpg = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        response = self.http.post(f"/v1/captures/{asset_id}/paste", files={"view": ("view.jpg", jpg.tobytes(), "image/jpeg")})
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        self.http.close()


def on_server(server: LiveServer, work: Any) -> Any:
    """Run ``await work(services)`` on the server's own event loop (its thread); return the result."""
    services = server.server.config.app.state.services
    loop = server.server.servers[0].get_loop()
    return asyncio.run_coroutine_threadsafe(work(services), loop).result(timeout=30)


def delete_asset(server: LiveServer, asset_id: str) -> None:
    """Delete an asset as the retention sweep does: its object and its row."""

    async def work(services: Any) -> None:
        await services.assets.delete(await services.assets.get(asset_id))

    on_server(server, work)


def hub_head(server: LiveServer, pairing_id: str) -> int:
    async def work(services: Any) -> int:
        return await services.hub.last_id(pairing_id)

    return on_server(server, work)


# ---------------------------------------------------------------------------
# Page helpers
# ---------------------------------------------------------------------------


def open_canvas(browser: Any, base: str, log: list[str]) -> tuple[Any, Any]:
    context = browser.new_context(viewport=CANVAS_VIEWPORT)
    context.add_init_script(RECORDER)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    collect_console(page, log, "canvas")
    page.goto(f"{base}/canvas/")
    page.wait_for_selector("#code[data-code]")
    page.wait_for_selector("#conn[data-state='open']")
    return context, page


def wait_clip_shown(page: Any, asset_id: str) -> None:
    """The clip is in the list and its thumbnail has loaded."""
    page.wait_for_function(
        """(id) => {
          const img = document.querySelector(`#clip-list li[data-asset="${id}"] img.thumb`);
          return Boolean(img && img.src.startsWith("blob:") && img.complete && img.naturalWidth > 0);
        }""",
        arg=asset_id,
    )


def listed_clips(page: Any) -> list[str]:
    """The clips as the page shows them (top first) -- checked against the saved state."""
    shown = page.eval_on_selector_all("#clip-list li", "lis => lis.map(li => li.dataset.asset)")
    state = page.evaluate("() => window.arclipCanvas.state.clips.map(c => c.asset_id)")
    assert shown == state, (shown, state)
    return shown


def thumbs_loaded(page: Any) -> list[bool]:
    return page.eval_on_selector_all(
        "#clip-list li img.thumb", "imgs => imgs.map(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)"
    )


def frames(page: Any, type: str | None = None) -> list[dict[str, Any]]:
    received = page.evaluate("() => window.__frames")
    return [f for f in received if type is None or f["type"] == type]


def resync_notices(page: Any) -> list[str]:
    return [t for t in page.evaluate("() => window.__toasts") if RESYNC_NOTICE in t]


def sleep_laptop(context: Any, page: Any) -> None:
    """The network goes: the canvas drops its socket and shows that it is offline."""
    context.set_offline(True)
    page.wait_for_selector("#conn[data-state='offline']")


def wake_laptop(context: Any, page: Any, *, slow_resume: bool = False) -> None:
    """The network comes back: the canvas reconnects by itself and is handed a resync.

    ``slow_resume``: the canvas's resume reaches the server only after the server's own replay
    (from the canvas's stored ack) has sent a resync, so the resume's replay sends a second one.
    """
    page.evaluate("(hold) => { window.__holdResume = hold; }", slow_resume)
    context.set_offline(False)
    page.wait_for_selector("#conn[data-state='open']")
    page.wait_for_function(
        "(text) => window.__toasts.some((t) => t.includes(text))", arg=RESYNC_NOTICE
    )


# ---------------------------------------------------------------------------
# The clip list after a resync
# ---------------------------------------------------------------------------


def test_canvas_rebuilds_its_clips_from_the_resync_snapshot(
    tmp_path: Path, u2netp_model, playwright_api, chromium_path: str, artifacts: Path
) -> None:
    log: list[str] = []
    server = LiveServer(make_settings(tmp_path / "data", workers=2, hub_max_messages=3), u2netp_model).start()
    base = server.base
    browser = launch(playwright_api, chromium_path)
    phones: list[Phone] = []
    try:
        context, canvas = open_canvas(browser, base, log)
        phone = Phone(base, canvas.get_attribute("#code", "data-code"))
        phones.append(phone)
        pairing_id = phone.pairing_id
        canvas.wait_for_selector("#phones[data-state='paired']")  # message 1: peer.joined

        # live: two clips (messages 2, 3)
        first = phone.capture(seed=1)
        wait_clip_shown(canvas, first)
        kept = phone.capture(seed=2)
        wait_clip_shown(canvas, kept)
        assert listed_clips(canvas) == [kept, first]
        canvas.wait_for_function(f"() => localStorage.getItem('arclip.canvas.sync.{pairing_id}') === '3'")
        # "Add a phone": a new code is shown
        canvas.click("#btn-pair")
        canvas.wait_for_selector("#pairing-open:not([hidden]) #code[data-code]")
        second_code = canvas.get_attribute("#code", "data-code")

        # asleep: a second phone joins with that code (message 4) and four clips are cut (5-8; the
        # hub keeps 6-8); one of them, and one the canvas already has, are deleted meanwhile
        sleep_laptop(context, canvas)
        phones.append(Phone(base, second_code))
        missed = [phone.capture(seed=10 + i) for i in range(4)]
        gone = missed[1]
        delete_asset(server, gone)
        delete_asset(server, kept)
        assert hub_head(server, pairing_id) == 8

        # awake: resume from 3 -> resync (id 8) with the live assets. The resume is slow: the
        # server's replay from the stored ack (3) answers first; the resume, reaching back before
        # the snapshot this connection already carried, goes on from it instead of repeating it.
        wake_laptop(context, canvas, slow_resume=True)
        live_missed = [a for a in missed if a != gone]
        for asset_id in live_missed:
            wait_clip_shown(canvas, asset_id)
        resumes = [f for f in canvas.evaluate("() => window.__sent") if f["type"] == "resume"]
        assert resumes[-1] == {"type": "resume", "last_id": 3}, resumes
        resyncs = frames(canvas, "resync")
        assert [f["id"] for f in resyncs] == [8]
        snapshot = resyncs[0]["data"]["snapshot"]
        assert resyncs[0]["data"]["reason"] == "trimmed"
        items = snapshot["assets"]["items"]
        assert [item["asset_id"] for item in items] == [first, *live_missed], "the live assets, oldest first"
        for item in items:
            assert item["url"].startswith(f"/v1/assets/{item['asset_id']}?") and "sig=" in item["url"], item
            assert {"width", "height", "bbox", "created_at"} <= item.keys(), item
        assert [d["role"] for d in snapshot["pairing"]["devices"]] == ["desktop", "phone", "phone"]

        # newest first, after the clips it had (the deleted one stays: it is the canvas's own copy)
        clips = listed_clips(canvas)
        assert clips == [*reversed(live_missed), kept, first], clips
        assert gone not in clips
        assert len(set(clips)) == len(clips)
        canvas.wait_for_function("() => [...document.querySelectorAll('#clip-list img.thumb')].every(i => i.naturalWidth > 0)")
        assert all(thumbs_loaded(canvas))
        # the newest clip was cut a moment ago: the paste markers are up for it, as asset.created does
        canvas.wait_for_selector("#pattern:not([hidden])")
        assert canvas.evaluate("() => window.arclipCanvas.state.pending.asset_id") == live_missed[-1]
        # the missed peer.joined: two phones, and the code they used is no longer shown
        assert canvas.inner_text("#phones").startswith("2 phones")
        assert canvas.is_hidden("#pairing-open")
        canvas.screenshot(path=artifacts / "30-canvas-after-resync.png")

        # live again: the next clip arrives as usual, once, on top
        later = phone.capture(seed=20)  # message 9
        wait_clip_shown(canvas, later)
        assert listed_clips(canvas) == [later, *reversed(live_missed), kept, first]
        # one snapshot for one gap, though the slow resume reached the server after it had answered
        assert [f["id"] for f in frames(canvas, "resync")] == [8]
        assert len(resync_notices(canvas)) == 1, canvas.evaluate("() => window.__toasts")
        canvas.wait_for_function(f"() => localStorage.getItem('arclip.canvas.sync.{pairing_id}') === '9'")
        assert hub_head(server, pairing_id) == 9

        # a reload resumes from 9, inside the kept history: no resync, nothing doubled
        canvas.reload()
        canvas.wait_for_selector("#conn[data-state='open']")
        after_reload = phone.capture(seed=21)  # message 10
        wait_clip_shown(canvas, after_reload)
        assert [f for f in canvas.evaluate("() => window.__sent") if f["type"] == "resume"] == [
            {"type": "resume", "last_id": 9}
        ]
        assert frames(canvas, "resync") == []
        assert resync_notices(canvas) == []
        assert listed_clips(canvas) == [after_reload, later, *reversed(live_missed), kept, first]
        assert all(thumbs_loaded(canvas))
    finally:
        (artifacts / "console-resync.log").write_text("\n".join(log))
        for each in phones:
            each.close()
        browser.close()
        server.stop()
    errors = [line for line in log if "pageerror" in line]
    assert not errors, errors


# ---------------------------------------------------------------------------
# Layers already on the canvas
# ---------------------------------------------------------------------------


def paste_at(canvas: Any, phone: Phone, asset_id: str, target: tuple[float, float]) -> dict[str, Any]:
    """The phone photographs the canvas (the paste pattern showing) aimed at ``target``, and pastes."""
    canvas.wait_for_selector("#pattern:not([hidden])")
    wait_canvas_uploaded(canvas, markers=True)
    canvas.evaluate("() => document.querySelectorAll('.toast').forEach(t => t.remove())")
    shot = decode_png(canvas.screenshot())[:, :, :3]
    box = stage_box(canvas)
    view = phone_photo(shot, (target[0] + box["x"], target[1] + box["y"]), zoom=1.3, roll_deg=4.0)
    return phone.paste(asset_id, view)


def layer_boxes(page: Any) -> dict[str, dict[str, float]]:
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.layer')].map((el) => {
          const img = el.querySelector('img');
          return [el.dataset.layer, {left: el.style.left, top: el.style.top, width: el.style.width,
                  height: el.style.height, rotate: el.style.rotate,
                  loaded: img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0}];
        }))"""
    )


def test_resync_keeps_the_layers_already_placed(
    tmp_path: Path, u2netp_model, playwright_api, chromium_path: str, artifacts: Path
) -> None:
    log: list[str] = []
    server = LiveServer(make_settings(tmp_path / "data", workers=2, hub_max_messages=2), u2netp_model).start()
    base = server.base
    browser = launch(playwright_api, chromium_path)
    phone: Phone | None = None
    try:
        context, canvas = open_canvas(browser, base, log)
        phone = Phone(base, canvas.get_attribute("#code", "data-code"))
        pairing_id = phone.pairing_id
        canvas.wait_for_selector("#phones[data-state='paired']")

        # one layer placed by a real paste (asset.placed), one placed by hand and dragged
        pasted = phone.capture(seed=1)
        wait_clip_shown(canvas, pasted)
        placement = paste_at(canvas, phone, pasted, (420.0, 260.0))
        canvas.wait_for_selector(f".layer[data-asset='{pasted}'] img[src^='blob:']")
        by_hand = phone.capture(seed=2)
        wait_clip_shown(canvas, by_hand)
        canvas.click(f"#clip-list li[data-asset='{by_hand}'] button:has-text('Place')")
        hand_el = canvas.locator(f".layer[data-asset='{by_hand}']")
        canvas.wait_for_selector(f".layer[data-asset='{by_hand}'] img[src^='blob:']")
        box = hand_el.bounding_box()
        canvas.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        canvas.mouse.down()
        canvas.mouse.move(box["x"] + box["width"] / 2 + 180, box["y"] + box["height"] / 2 + 90, steps=5)
        canvas.mouse.up()
        layers = canvas_layers(canvas)
        assert [layer["asset_id"] for layer in layers] == [pasted, by_hand]
        assert abs(layers[0]["x"] - placement["x"]) < 0.01 and abs(layers[0]["y"] - placement["y"]) < 0.01
        boxes = layer_boxes(canvas)
        assert all(b["loaded"] for b in boxes.values()), boxes
        last_id = hub_head(server, pairing_id)
        canvas.wait_for_function(f"() => localStorage.getItem('arclip.canvas.sync.{pairing_id}') === '{last_id}'")

        # asleep past the history (2 kept), awake: resync
        sleep_laptop(context, canvas)
        missed = [phone.capture(seed=10 + i) for i in range(3)]
        wake_laptop(context, canvas)
        for asset_id in missed:
            wait_clip_shown(canvas, asset_id)
        assert frames(canvas, "resync")[-1]["id"] == last_id + 3
        assert canvas_layers(canvas) == layers, "the layers are the canvas's own: a resync leaves them be"
        assert layer_boxes(canvas) == boxes
        assert listed_clips(canvas) == [*reversed(missed), by_hand, pasted]
        canvas.screenshot(path=artifacts / "31-canvas-layers-after-resync.png")

        # live again: the phone pastes the clip it cut while the canvas was away (the markers are up
        # for it); the new layer arrives, the earlier ones stay where they are
        newest = missed[-1]
        placed = paste_at(canvas, phone, newest, (900.0, 520.0))
        canvas.wait_for_selector(f".layer[data-asset='{newest}'] img[src^='blob:']")
        now = canvas_layers(canvas)
        assert now[:2] == layers
        assert now[2]["asset_id"] == newest
        assert abs(now[2]["x"] - placed["x"]) < 0.01 and abs(now[2]["y"] - placed["y"]) < 0.01
        assert len(resync_notices(canvas)) == 1, canvas.evaluate("() => window.__toasts")
        canvas.wait_for_function(
            f"() => localStorage.getItem('arclip.canvas.sync.{pairing_id}') === '{hub_head(server, pairing_id)}'"
        )
    finally:
        (artifacts / "console-resync-layers.log").write_text("\n".join(log))
        if phone is not None:
            phone.close()
        browser.close()
        server.stop()
    errors = [line for line in log if "pageerror" in line]
    assert not errors, errors
