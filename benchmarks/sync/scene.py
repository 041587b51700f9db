"""Deterministic inputs for the capture/paste flow: an object photo, a screen, a phone photo of it."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.locate.camera import Shot, render, truth_point
from benchmarks.locate.screens import make_screen

# A phone held portrait, aimed at a known point of the screen, tilted and rolled a little.
SHOT = Shot(
    view_w=1080, view_h=1440, hfov_deg=66, screen_cm=31, target=(1012.0, 377.0), distance_cm=38,
    yaw_deg=14, pitch_deg=-9, roll_deg=7, defocus=0.9, motion_px=0, moire=0.15, glare=40, reflection=0.1,
    gain=1.05, gamma=1.0, noise=2.5, jpeg_q=88, seed=20,
)


def object_photo(width: int = 1280, height: int = 960, seed: int = 1) -> bytes:
    """A phone-like JPEG of one object: a shaded orange mug (300x410 px body) on a wall and desk."""
    rng = np.random.default_rng(seed)
    scene = np.empty((height, width, 3), np.float32)
    scene[:] = (150, 170, 185)  # BGR: a pale wall
    scene[int(height * 0.62) :] = (70, 110, 150)  # a wooden desk
    scene += rng.normal(0, 4, scene.shape).astype(np.float32)
    img = np.clip(scene, 0, 255).astype(np.uint8)
    cx, cy = width * 31 // 64, height * 33 // 64
    cv2.ellipse(img, (cx + 170, cy), (70, 110), 0, -80, 80, (20, 90, 230), 28, cv2.LINE_AA)  # handle
    cv2.rectangle(img, (cx - 150, cy - 200), (cx + 150, cy + 210), (30, 110, 240), -1, cv2.LINE_AA)  # body
    cv2.ellipse(img, (cx, cy - 200), (150, 40), 0, 0, 360, (20, 80, 200), -1, cv2.LINE_AA)  # rim
    cv2.ellipse(img, (cx, cy + 210), (150, 40), 0, 0, 180, (30, 110, 240), -1, cv2.LINE_AA)  # base
    shade = np.linspace(0.75, 1.15, 300, dtype=np.float32)[None, :, None]
    body = img[cy - 200 : cy + 210, cx - 150 : cx + 150].astype(np.float32)
    img[cy - 200 : cy + 210, cx - 150 : cx + 150] = np.clip(body * shade, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def desktop_scene(seed: int = 21, shot: Shot = SHOT) -> tuple[bytes, bytes, tuple[float, float]]:
    """The companion's screen picture (PNG), a phone photo of it (JPEG) and the true screen point
    under the photo's centre (pinhole camera with tilt and roll, bezel, room, blur, glare, JPEG)."""
    screen = make_screen("desktop", seed)
    view, H = render(screen, shot)
    ok, screen_png = cv2.imencode(".png", screen)
    ok2, view_jpeg = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and ok2
    return screen_png.tobytes(), view_jpeg.tobytes(), truth_point(H, shot.view_w, shot.view_h)
