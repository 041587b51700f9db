"""The capture app and the canvas companion in a real browser, against a real server.

One flow, in phases (a fake camera plays one file per browser launch, so the phone is launched
twice, on the same profile: its pairing and its clip must survive that, as they survive a reload):

A. The canvas opens a pairing and shows its QR code (decoded here) and code. The phone types the
   code, sees the camera, cuts the object in view (a mug on a wall), and the clip floats over the
   camera view. The canvas receives it and shows the paste pattern (uploading its picture with
   ``fiducials=true``). A paste aimed at the mug, not the screen, fails: the phone shows the hint,
   the canvas a toast.
B. From a screenshot of the canvas page, a phone photo of the screen is made: perspective, roll,
   scale, blur and noise, its centre on a known canvas point. The phone, relaunched with that as its
   camera, pastes by press-and-hold-and-release; the canvas places the layer centred on that point,
   at the size and roll the locator measured.
C. The canvas reloads: the layer is still there. Keyboard editing, export as PNG, deletion.
D. Resume: with the canvas closed, the phone cuts again; the reopened canvas receives the clip.
E. The server restarts (1012): the canvas reconnects by itself and misses nothing.

Screenshots go to artifacts/clients/.
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.clients.conftest import PHONE, collect_console, launch, write_y4m
from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
CANVAS_VIEWPORT = {"width": 1280, "height": 800}
TARGET = (560.0, 300.0)  # the canvas point the phone photo is aimed at (stage pixels)
ZOOM = 1.4  # phone photo pixels per screen pixel
ROLL_DEG = 8.0  # the screen appears rotated this much counter-clockwise in the photo


# ---------------------------------------------------------------------------
# Camera pictures
# ---------------------------------------------------------------------------


def mug_frame(width: int = 1280, height: int = 720, seed: int = 3) -> np.ndarray:
    """What the phone sees for the cut: an orange mug on a pale wall (BGR)."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    img[:] = (190, 200, 206)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cx, cy = width // 2, height // 2
    cv2.ellipse(img, (cx + 120, cy), (52, 80), 0, -80, 80, (20, 90, 230), 22, cv2.LINE_AA)  # handle
    cv2.rectangle(img, (cx - 110, cy - 150), (cx + 110, cy + 150), (30, 110, 240), -1, cv2.LINE_AA)  # body
    cv2.ellipse(img, (cx, cy - 150), (110, 30), 0, 0, 360, (20, 80, 200), -1, cv2.LINE_AA)  # rim
    cv2.ellipse(img, (cx, cy + 150), (110, 30), 0, 0, 180, (30, 110, 240), -1, cv2.LINE_AA)  # base
    shade = np.linspace(0.75, 1.15, 220, dtype=np.float32)[None, :, None]
    body = img[cy - 150 : cy + 150, cx - 110 : cx + 110].astype(np.float32)
    img[cy - 150 : cy + 150, cx - 110 : cx + 110] = np.clip(body * shade, 0, 255).astype(np.uint8)
    return img


def phone_photo(screen: np.ndarray, target: tuple[float, float], *, zoom: float, roll_deg: float,
                size: tuple[int, int] = (1280, 720), keystone: float = 18.0, seed: int = 5) -> np.ndarray:
    """A phone photo of ``screen`` (BGR) whose centre falls exactly on ``target`` (screen pixels).

    The screen appears ``zoom`` times larger, rotated ``roll_deg`` counter-clockwise, with a little
    keystone (the phone held below the screen's centre), blur and sensor noise, in a dim room.
    """
    w, h = size
    c = np.array([w / 2, h / 2], np.float64)
    t = np.array(target, np.float64)
    a = 200.0
    src = t + np.array([[-a, -a], [a, -a], [a, a], [-a, a]])
    phi = math.radians(roll_deg)
    rot = np.array([[math.cos(phi), math.sin(phi)], [-math.sin(phi), math.cos(phi)]])  # CCW as seen (y down)
    dst = c + zoom * (src - t) @ rot.T
    dst[0, 0] += keystone
    dst[1, 0] -= keystone
    hom = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    centre = cv2.perspectiveTransform(t.reshape(1, 1, 2), hom).reshape(2)
    shift = np.array([[1, 0, c[0] - centre[0]], [0, 1, c[1] - centre[1]], [0, 0, 1]])
    hom = shift @ hom
    view = cv2.warpPerspective(screen, hom, (w, h), flags=cv2.INTER_LINEAR, borderValue=(48, 44, 40))
    view = cv2.GaussianBlur(view, (0, 0), 0.8)
    noise = np.random.default_rng(seed).normal(0, 2.5, view.shape)
    return np.clip(view.astype(np.float64) * 0.95 + 6 + noise, 0, 255).astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Page helpers
# ---------------------------------------------------------------------------


def wait_canvas_uploaded(page: Any, markers: bool) -> None:
    want = "markers" if markers else "plain"
    page.wait_for_function(
        f"() => window.arclipCanvas && window.arclipCanvas.uploadIdle() && document.getElementById('stage').dataset.uploaded === '{want}'",
        timeout=TIMEOUT_MS,
    )


def canvas_layers(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.arclipCanvas.state.layers))")


def stage_box(page: Any) -> dict[str, float]:
    return page.locator("#stage").bounding_box()


def open_phone(pw: Any, chromium_path: str, profile: Path, camera: Path, base: str, log: list[str]) -> tuple[Any, Any]:
    context = launch(pw, chromium_path, camera=camera, user_data_dir=profile, **PHONE)
    page = context.pages[0] if context.pages else context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    collect_console(page, log, "phone")
    return context, page


# ---------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------


def test_pair_cut_paste_reload_resume(
    tmp_path: Path, u2netp_model, playwright_api, chromium_path: str, artifacts: Path
) -> None:
    pw = playwright_api
    log: list[str] = []
    cut_camera = write_y4m(tmp_path / "mug.y4m", [mug_frame()])
    profile = tmp_path / "phone-profile"
    port = free_port()
    data_dir = tmp_path / "data"
    server = LiveServer(make_settings(data_dir, workers=2), u2netp_model, port=port).start()
    base = server.base
    desktop = launch(pw, chromium_path)
    try:
        context = desktop.new_context(viewport=CANVAS_VIEWPORT, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        canvas = context.new_page()
        canvas.set_default_timeout(TIMEOUT_MS)
        collect_console(canvas, log, "canvas")

        # -- A: pair, cut, a paste that misses -------------------------------------------------------
        canvas.goto(f"{base}/canvas")
        canvas.wait_for_selector("#code[data-code]")
        code = canvas.get_attribute("#code", "data-code")
        canvas.wait_for_function("() => document.getElementById('qr').complete && document.getElementById('qr').naturalWidth > 0")
        canvas.screenshot(path=artifacts / "01-canvas-pairing.png")
        qr = cv2.imdecode(np.frombuffer(canvas.locator("#qr").screenshot(), np.uint8), cv2.IMREAD_GRAYSCALE)
        qr_text, *_ = cv2.QRCodeDetector().detectAndDecode(cv2.resize(qr, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
        assert qr_text == f"{base}/capture?code={code}", qr_text
        assert canvas.locator("#conn").get_attribute("data-state") == "open"

        phone_ctx, phone = open_phone(pw, chromium_path, profile, cut_camera, base, log)
        try:
            phone.goto(f"{base}/capture")
            phone.wait_for_selector("#pair-view:not([hidden])")
            phone.screenshot(path=artifacts / "02-phone-pair.png")
            phone.fill("#code-input", code.lower()[:4] + "-" + code.lower()[4:])  # typed loosely
            phone.click("#pair-btn")
            phone.wait_for_selector("#camera-view[data-camera='live']")
            phone.wait_for_function("() => document.getElementById('video').videoWidth === 1280")
            canvas.wait_for_selector("#phones[data-state='paired']")
            phone_token = phone.evaluate("() => JSON.parse(localStorage.getItem('arclip.capture.v1')).pairing.phone_token")
            assert phone_token.startswith("arcp_")
            phone.wait_for_selector("#conn[data-state='open']")
            phone.screenshot(path=artifacts / "03-phone-camera.png")

            phone.click("#cut-btn")
            phone.wait_for_selector("#clip-box[data-loaded='true']")
            clip_asset = phone.get_attribute("#clip-box", "data-asset")
            phone.screenshot(path=artifacts / "04-phone-clip.png")

            canvas.wait_for_selector(f"#clip-list li[data-asset='{clip_asset}']")
            canvas.wait_for_selector("#pattern:not([hidden])")
            wait_canvas_uploaded(canvas, markers=True)
            asset = canvas.evaluate(f"() => window.arclipCanvas.state.clips.find(c => c.asset_id === '{clip_asset}')")
            assert 150 <= asset["width"] <= 420 and 250 <= asset["height"] <= 520, asset  # the mug, cropped

            phone.click("#paste-btn")  # the camera still shows the mug: no screen in view
            phone.wait_for_selector("#hint[data-kind='warn']")
            hint = phone.inner_text("#hint")
            assert "press Paste again" in hint, hint
            assert phone.is_visible("#paste-btn"), "the clip is kept for another try"
            canvas.wait_for_selector(".toast:has-text('Paste missed')")
            phone.screenshot(path=artifacts / "05-phone-paste-missed.png")
        finally:
            phone_ctx.close()

        # -- B: a photo of the screen, aimed at TARGET; paste by press-hold-release -------------------
        wait_canvas_uploaded(canvas, markers=True)
        canvas.evaluate("() => document.querySelectorAll('.toast').forEach(t => t.remove())")
        canvas.screenshot(path=artifacts / "06-canvas-pattern.png")
        shot = decode_png(canvas.screenshot())[:, :, :3]
        box = stage_box(canvas)
        stage_w, stage_h = canvas.evaluate("() => [window.arclipCanvas.stageSize().w, window.arclipCanvas.stageSize().h]")
        assert (stage_w, stage_h) == (round(box["width"]), round(box["height"]))
        photo = phone_photo(shot, (TARGET[0] + box["x"], TARGET[1] + box["y"]), zoom=ZOOM, roll_deg=ROLL_DEG)
        cv2.imwrite(str(artifacts / "07-phone-photo-of-screen.jpg"), photo)
        paste_camera = write_y4m(tmp_path / "screen.y4m", [photo])

        phone_ctx, phone = open_phone(pw, chromium_path, profile, paste_camera, base, log)
        try:
            phone.goto(f"{base}/capture")  # no code: pairing and clip come back from localStorage
            phone.wait_for_selector("#camera-view[data-camera='live']")
            phone.wait_for_selector(f"#clip-box[data-asset='{clip_asset}'][data-loaded='true']")
            phone.wait_for_function("() => document.getElementById('video').videoWidth === 1280")
            scope = phone.evaluate("async () => (await navigator.serviceWorker.ready).scope")
            assert scope == f"{base}/capture/"
            phone.screenshot(path=artifacts / "08-phone-aiming.png")
            phone.wait_for_timeout(500)
            view = phone.locator("#viewfinder").bounding_box()
            phone.mouse.move(view["x"] + view["width"] / 2, view["y"] + view["height"] * 0.4)
            phone.mouse.down()
            phone.wait_for_timeout(700)
            phone.mouse.up()  # release: paste
            phone.wait_for_selector("#camera-view[data-pasted='1']")
            phone.wait_for_selector("#hint[data-kind='ok']")
            phone.screenshot(path=artifacts / "09-phone-pasted.png")
        finally:
            phone_ctx.close()

        canvas.wait_for_selector(f".layer[data-asset='{clip_asset}']")
        canvas.wait_for_timeout(500)  # the arrival animation
        wait_canvas_uploaded(canvas, markers=False)
        assert canvas.is_hidden("#pattern"), "the pattern goes once the clip is placed"
        canvas.screenshot(path=artifacts / "10-canvas-placed.png")
        (layer,) = canvas_layers(canvas)
        (artifacts / "placement.json").write_text(json.dumps(
            {"target": TARGET, "zoom": ZOOM, "roll_deg": ROLL_DEG, "asset": asset, "layer": layer}, indent=2))
        assert abs(layer["x"] - TARGET[0]) <= 12 and abs(layer["y"] - TARGET[1]) <= 12, (layer, TARGET)
        # natural size: the clip's pixels times the photo's scale (1 / ZOOM), within the measurement's noise
        assert layer["w"] == pytest.approx(asset["width"] / ZOOM, rel=0.15), (layer, asset)
        assert layer["h"] / layer["w"] == pytest.approx(asset["height"] / asset["width"], rel=0.02)
        assert layer["rot"] == pytest.approx(ROLL_DEG, abs=3), layer  # upright as the phone saw it
        # where the page shows it: the element's centre on the stage
        el = canvas.locator(f".layer[data-asset='{clip_asset}']").bounding_box()
        assert abs(el["x"] + el["width"] / 2 - box["x"] - TARGET[0]) <= 13
        assert abs(el["y"] + el["height"] / 2 - box["y"] - TARGET[1]) <= 13

        # -- C: reload; edit with the keyboard; export; delete ------------------------------------------
        canvas.reload()
        canvas.wait_for_selector(f".layer[data-asset='{clip_asset}'] img[src^='blob:']")
        canvas.wait_for_selector("#conn[data-state='open']")
        (again,) = canvas_layers(canvas)
        assert again == layer
        canvas.screenshot(path=artifacts / "11-canvas-reloaded.png")

        layer_el = canvas.locator(f".layer[data-asset='{clip_asset}']")
        el = layer_el.bounding_box()
        canvas.mouse.move(el["x"] + el["width"] / 2, el["y"] + el["height"] / 2)
        canvas.mouse.down()
        canvas.mouse.move(el["x"] + el["width"] / 2 + 40, el["y"] + el["height"] / 2 + 20, steps=5)
        canvas.mouse.up()
        (dragged,) = canvas_layers(canvas)
        assert (dragged["x"], dragged["y"]) == (pytest.approx(layer["x"] + 40), pytest.approx(layer["y"] + 20))
        wait_canvas_uploaded(canvas, markers=False)  # a move is a new picture for the locator
        layer_el.focus()
        canvas.keyboard.press("Shift+ArrowRight")
        canvas.keyboard.press("]")
        canvas.keyboard.press("+")
        (edited,) = canvas_layers(canvas)
        assert edited["x"] == pytest.approx(dragged["x"] + 10)
        assert edited["rot"] == pytest.approx(layer["rot"] + 5)
        assert edited["w"] == pytest.approx(layer["w"] * 1.1)
        assert "Clip 1" in layer_el.get_attribute("aria-label")
        layer_el.click()  # selects it, showing the handles and the clip's tools
        assert canvas.is_visible("#selection")
        canvas.screenshot(path=artifacts / "12-canvas-selected.png")

        with canvas.expect_download() as download_info:
            canvas.click("#btn-export")
        exported = decode_png(Path(download_info.value.path()).read_bytes())
        assert exported.shape[:2] == (stage_h, stage_w)
        cx, cy = round(edited["x"]), round(edited["y"])
        assert exported[cy - 5 : cy + 5, cx - 5 : cx + 5, :3].mean() < 200, "the clip is drawn at its place"
        assert exported[5:15, 5:15, :3].min() >= 250, "the background is white, with no markers"

        with canvas.expect_download() as download_info:
            canvas.click("#btn-download")
        clip_png = decode_png(Path(download_info.value.path()).read_bytes())
        assert clip_png.shape == (asset["height"], asset["width"], 4)

        canvas.click("#btn-copy")
        canvas.wait_for_selector(".toast:has-text('copied')")
        copied = canvas.evaluate(
            "async () => { const [item] = await navigator.clipboard.read(); return item.types; }"
        )
        assert "image/png" in copied

        layer_el.focus()
        canvas.keyboard.press("Delete")
        assert canvas_layers(canvas) == []
        assert canvas.locator(".layer").count() == 0
        canvas.click(f"#clip-list li[data-asset='{clip_asset}'] button:has-text('Place')")
        canvas.wait_for_selector(f".layer[data-asset='{clip_asset}']")
        (placed,) = canvas_layers(canvas)
        assert (placed["x"], placed["y"]) == (stage_w / 2, stage_h / 2)

        # -- D: the canvas is closed while the phone cuts; reopened, it catches up ----------------------
        canvas.close()
        phone_ctx, phone = open_phone(pw, chromium_path, profile, cut_camera, base, log)
        try:
            phone.goto(f"{base}/capture")
            phone.wait_for_selector("#camera-view[data-camera='live']")
            phone.wait_for_function("() => document.getElementById('video').videoWidth === 1280")
            phone.click("#cut-btn")
            phone.wait_for_selector("#clip-box[data-loaded='true']")
            second_asset = phone.get_attribute("#clip-box", "data-asset")
            assert second_asset != clip_asset
        finally:
            phone_ctx.close()
        canvas = context.new_page()
        canvas.set_default_timeout(TIMEOUT_MS)
        collect_console(canvas, log, "canvas")
        canvas.goto(f"{base}/canvas/")
        canvas.wait_for_selector(f"#clip-list li[data-asset='{second_asset}']")
        canvas.wait_for_selector("#pattern:not([hidden])")
        assert canvas.locator(".layer").count() == 1, "the earlier layer is still there, and only it"

        # -- E: the server restarts; the canvas reconnects and misses nothing ---------------------------
        server.stop()
        canvas.wait_for_selector("#conn:not([data-state='open'])")
        server = LiveServer(make_settings(data_dir, workers=2), u2netp_model, port=port).start()
        canvas.wait_for_selector("#conn[data-state='open']", timeout=20_000)
        pairing = canvas.evaluate("() => window.arclipCanvas.state.pairing")
        _post_capture(base, phone_token, mug_frame(seed=9))
        canvas.wait_for_function("() => window.arclipCanvas.state.clips.length === 3")
        assert canvas.evaluate("() => window.arclipCanvas.state.pairing.pairing_id") == pairing["pairing_id"]
        canvas.screenshot(path=artifacts / "13-canvas-after-restart.png")
    finally:
        (artifacts / "console.log").write_text("\n".join(log))
        desktop.close()
        server.stop()
    errors = [line for line in log if "pageerror" in line]
    assert not errors, errors


def _post_capture(base: str, token: str, frame: np.ndarray) -> dict[str, Any]:
    import httpx

    ok, jpg = cv2.imencode(".jpg", frame)
    assert ok
    response = httpx.post(
        f"{base}/v1/captures", headers={"Authorization": f"Bearer {token}"},
        files={"image_file": ("cut.jpg", jpg.tobytes(), "image/jpeg")}, timeout=60,
    )
    assert response.status_code == 201, response.text
    return response.json()


# ---------------------------------------------------------------------------
# Pairing's life, without a live camera
# ---------------------------------------------------------------------------


def test_pairing_lifecycle_photo_picker_offline_and_resync(
    tmp_path: Path, u2netp_model, playwright_api, chromium_path: str, artifacts: Path
) -> None:
    """QR link claims at once; a used or wrong code is explained; a second phone joins with a new code;
    without a camera Cut opens the photo picker; offline is reported; a canvas away for longer than
    the hub keeps messages resyncs; a phone unpairs; the canvas unpairs and the phone is told."""
    pw = playwright_api
    log: list[str] = []
    mug = tmp_path / "mug.jpg"
    cv2.imwrite(str(mug), mug_frame(seed=11))
    server = LiveServer(make_settings(tmp_path / "data", workers=2, hub_max_messages=4), u2netp_model).start()
    base = server.base
    browser = launch(pw, chromium_path)
    try:
        desk = browser.new_context(viewport=CANVAS_VIEWPORT)
        canvas = desk.new_page()
        canvas.set_default_timeout(TIMEOUT_MS)
        collect_console(canvas, log, "canvas")
        canvas.goto(f"{base}/canvas/")
        canvas.wait_for_selector("#code[data-code]")
        code = canvas.get_attribute("#code", "data-code")
        assert canvas.is_visible("#reach-warning")  # 127.0.0.1 is no address for a phone

        # the QR code's link pairs at once, and drops the code from the address
        phone_a = browser.new_context(**PHONE).new_page()
        phone_a.set_default_timeout(TIMEOUT_MS)
        collect_console(phone_a, log, "phone-a")
        phone_a.goto(f"{base}/capture?code={code}")
        phone_a.wait_for_selector("#camera-view:not([hidden])")
        assert "code=" not in phone_a.url
        phone_a.wait_for_selector("#no-camera:not([hidden])")  # no camera here: the picker stands in
        assert "camera" in phone_a.inner_text("#no-camera-text").lower()
        phone_a.screenshot(path=artifacts / "20-phone-no-camera.png")
        canvas.wait_for_selector("#phones[data-state='paired']")

        # a second phone: the used code, then a wrong one, are explained; a new code works
        phone_b_ctx = browser.new_context(**PHONE)
        phone_b = phone_b_ctx.new_page()
        phone_b.set_default_timeout(TIMEOUT_MS)
        collect_console(phone_b, log, "phone-b")
        phone_b.goto(f"{base}/capture?code={code}")
        phone_b.wait_for_selector("#pair-status[data-kind='error']")
        assert "already used" in phone_b.inner_text("#pair-status")
        phone_b.fill("#code-input", "ZZZZ-ZZZZ")
        phone_b.press("#code-input", "Enter")
        phone_b.wait_for_function("() => document.getElementById('pair-status').textContent.includes(\"isn't right\")")
        phone_b.screenshot(path=artifacts / "21-phone-wrong-code.png")
        canvas.click("#btn-pair")
        canvas.wait_for_function(f"() => document.getElementById('code').dataset.code !== '{code}'")
        new_code = canvas.get_attribute("#code", "data-code")
        phone_b.fill("#code-input", new_code)
        phone_b.click("#pair-btn")
        phone_b.wait_for_selector("#camera-view:not([hidden])")
        canvas.wait_for_function("() => document.getElementById('phones').textContent.startsWith('2 phones')")

        # offline: the cut cannot be sent, and the phone says so
        phone_b_ctx.set_offline(True)
        with phone_b.expect_file_chooser() as chooser:
            phone_b.click("#cut-btn")
        chooser.value.set_files(str(mug))
        phone_b.wait_for_selector("#hint[data-kind='error']")
        assert "offline" in phone_b.inner_text("#hint").lower()
        phone_b.screenshot(path=artifacts / "22-phone-offline.png")
        phone_b_ctx.set_offline(False)

        # the photo picker's photo is cut like a camera frame
        with phone_b.expect_file_chooser() as chooser:
            phone_b.click("#cut-btn")
        chooser.value.set_files(str(mug))
        phone_b.wait_for_selector("#clip-box[data-loaded='true']")
        first = phone_b.get_attribute("#clip-box", "data-asset")
        canvas.wait_for_selector(f"#clip-list li[data-asset='{first}']")

        # the canvas is away while more happens than the hub keeps: it resyncs, then carries on
        canvas.close()
        token = phone_b.evaluate("() => JSON.parse(localStorage.getItem('arclip.capture.v1')).pairing.phone_token")
        for seed in range(5):
            _post_capture(base, token, mug_frame(seed=20 + seed))
        canvas = desk.new_page()
        canvas.set_default_timeout(TIMEOUT_MS)
        collect_console(canvas, log, "canvas")
        canvas.goto(f"{base}/canvas/")
        canvas.wait_for_selector(".toast:has-text('Reconnected after a long break')")
        assert canvas.locator("#phones").inner_text().startswith("2 phones")  # from the snapshot
        later = _post_capture(base, token, mug_frame(seed=30))  # and live messages flow again
        canvas.wait_for_selector(f"#clip-list li[data-asset='{later['asset_id']}']")

        # a phone unpairs itself; the canvas sees it go
        phone_b.click("#menu-btn")
        phone_b.click("#unpair-btn")
        phone_b.wait_for_selector("#pair-view:not([hidden])")
        canvas.wait_for_function("() => document.getElementById('phones').textContent.startsWith('1 phone ')")

        # the canvas unpairs: the remaining phone is told, and the canvas shows a fresh code
        canvas.once("dialog", lambda dialog: dialog.accept())
        canvas.click("#btn-unpair")
        phone_a.wait_for_selector("#pair-view:not([hidden])")
        phone_a.wait_for_selector("#pair-status[data-kind='error']")
        assert "pair again" in phone_a.inner_text("#pair-status").lower()
        phone_a.screenshot(path=artifacts / "23-phone-pairing-ended.png")
        canvas.wait_for_function(f"() => !['{code}', '{new_code}'].includes(document.getElementById('code').dataset.code)")
        canvas.wait_for_selector("#phones[data-state='none']")
        assert canvas.is_hidden("#pattern"), "no phone is left to paste"
        assert canvas.locator("#clip-list li").count() >= 2, "the clips stay with the canvas"
        canvas.screenshot(path=artifacts / "24-canvas-after-unpair.png")
    finally:
        (artifacts / "console-lifecycle.log").write_text("\n".join(log))
        browser.close()
        server.stop()
    errors = [line for line in log if "pageerror" in line]
    assert not errors, errors
