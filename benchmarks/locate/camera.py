"""A deterministic simulator of phone photos of a laptop screen.

Geometry: a pinhole camera aimed at a known screen point (so the ground truth is exact) from a
given distance, with yaw/pitch (tilt) and roll. The screen lies in a lid plane with a bezel; a
synthetic room fills the rest of the frame. Photometry: sub-pixel grid (which aliases into moiré
when sampled), glare and reflections, vignetting, exposure/gamma, defocus and motion blur, sensor
noise and JPEG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .screens import _texture, _sentence


@dataclass(frozen=True)
class Shot:
    """Everything that defines one photo (besides the screen picture itself)."""

    view_w: int
    view_h: int
    hfov_deg: float  # horizontal field of view of the long side
    screen_cm: float  # physical width of the screen
    target: tuple[float, float]  # screen pixel on the optical axis (the ground truth)
    distance_cm: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    defocus: float  # Gaussian sigma, view pixels
    motion_px: float  # length of a linear motion blur, 0 for none
    moire: float  # strength of the sub-pixel grid
    glare: float  # peak additive glare, 0..255
    reflection: float  # strength of a reflected room ghost
    gain: float
    gamma: float
    noise: float
    jpeg_q: int
    seed: int


def sample_shot(rng: np.random.Generator, screen_w: int, screen_h: int, seed: int) -> Shot:
    portrait = rng.random() < 0.5
    vw, vh = (1080, 1440) if portrait else (1440, 1080)

    def tilt() -> float:  # mostly modest, sometimes steep
        return float(rng.triangular(-40, 0, 40))

    return Shot(
        view_w=vw,
        view_h=vh,
        hfov_deg=float(rng.uniform(60, 70)),
        screen_cm=float(rng.uniform(28, 35)),
        target=(float(rng.uniform(0.03, 0.97) * screen_w), float(rng.uniform(0.03, 0.97) * screen_h)),
        distance_cm=float(math.exp(rng.uniform(math.log(15), math.log(60)))),
        yaw_deg=tilt(),
        pitch_deg=tilt(),
        roll_deg=float(rng.uniform(-25, 25)),
        defocus=float(rng.uniform(0.3, 2.2)),
        motion_px=float(rng.uniform(3, 12)) if rng.random() < 0.15 else 0.0,
        moire=float(rng.uniform(0.1, 0.45)) if rng.random() < 0.5 else 0.0,
        glare=float(rng.uniform(60, 255)) if rng.random() < 0.35 else 0.0,
        reflection=float(rng.uniform(0.08, 0.25)) if rng.random() < 0.3 else 0.0,
        gain=float(rng.uniform(0.65, 1.5)),
        gamma=float(rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(1, 6)),
        jpeg_q=int(rng.integers(55, 96)),
        seed=seed,
    )


def screen_to_view(shot: Shot, screen_w: int) -> np.ndarray:
    """Homography from screen pixels to view pixels for the shot."""
    long_side = max(shot.view_w, shot.view_h)
    f = (long_side / 2) / math.tan(math.radians(shot.hfov_deg) / 2)
    K = np.array([[f, 0, (shot.view_w - 1) / 2], [0, f, (shot.view_h - 1) / 2], [0, 0, 1]])
    cm = shot.screen_cm / screen_w  # cm per screen pixel
    target = np.array([shot.target[0] * cm, shot.target[1] * cm, 0.0])
    yaw, pitch, roll = (math.radians(a) for a in (shot.yaw_deg, shot.pitch_deg, shot.roll_deg))
    # optical axis: the screen normal (+z, into the screen) turned by yaw and pitch
    axis = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    centre = target - shot.distance_cm * axis
    z = axis
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    R = np.stack([x, y, z])  # world -> camera
    P = K @ np.column_stack([R[:, 0], R[:, 1], -R @ centre])
    return P @ np.diag([cm, cm, 1.0])


def room(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A plausible background: wall, desk, furniture and a poster or two (distractors)."""
    wall = rng.integers(90, 220, 3).astype(np.float32)
    t = np.linspace(0.7, 1.1, h, dtype=np.float32)
    img = np.clip(cv2.resize((t[:, None, None] * wall[None, None, :]), (w, h), interpolation=cv2.INTER_NEAREST), 0, 255).astype(np.uint8)
    desk_y = int(h * rng.uniform(0.55, 0.85))
    wood = rng.integers(40, 160, 3).astype(np.float32)
    streaks = 1 + 0.12 * np.sin(np.linspace(0, rng.uniform(20, 80), w, dtype=np.float32))
    img[desk_y:] = np.clip(streaks[None, :, None] * wood[None, None, :], 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):  # furniture blocks
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(50, 400)), y0 + int(rng.integers(50, 400))), tuple(int(v) for v in rng.integers(20, 240, 3)), -1)
    if rng.random() < 0.7:  # a poster: text and picture, the kind of thing that matches by accident
        pw, ph = int(rng.integers(150, 400)), int(rng.integers(150, 400))
        poster = np.full((ph, pw, 3), 240, np.uint8)
        poster[10 : ph // 2, 10 : pw - 10] = _texture(rng, pw - 20, ph // 2 - 10)
        for i in range(ph // 2 + 25, ph - 10, 18):
            cv2.putText(poster, _sentence(rng, 3), (12, i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
        x0, y0 = int(rng.integers(0, max(1, w - pw))), int(rng.integers(0, max(1, h - ph)))
        img[y0 : y0 + ph, x0 : x0 + pw] = poster
    return img


def _lid(screen: np.ndarray, rng: np.random.Generator, screen_cm: float) -> tuple[np.ndarray, int, int]:
    """Screen plus bezel (in the same plane), as BGRA; returns the image and the screen offset."""
    h, w = screen.shape[:2]
    px_per_cm = w / screen_cm
    side, top, bottom = (int(px_per_cm * v) for v in (rng.uniform(0.5, 1.3), rng.uniform(0.6, 1.5), rng.uniform(1.2, 2.5)))
    bezel = int(rng.integers(8, 45))
    lid = np.full((h + top + bottom, w + 2 * side, 4), (bezel, bezel, bezel, 255), np.uint8)
    lid[top : top + h, side : side + w, :3] = screen
    cv2.circle(lid, (side + w // 2, top // 2), max(2, top // 8), (5, 5, 5, 255), -1)  # webcam
    return lid, side, top


def _moire(shape: tuple[int, int], hinv: np.ndarray, strength: float) -> np.ndarray:
    """The screen's sub-pixel grid, point-sampled at the camera pixels: it aliases into moiré."""
    h, w = shape
    hinv = hinv.astype(np.float32)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    den = hinv[2, 0] * xs + hinv[2, 1] * ys + hinv[2, 2]
    u = (hinv[0, 0] * xs + hinv[0, 1] * ys + hinv[0, 2]) / den
    v = (hinv[1, 0] * xs + hinv[1, 1] * ys + hinv[1, 2]) / den
    rows = 0.5 + 0.5 * np.cos(2 * np.pi * v)
    cu, su = np.cos(2 * np.pi * u), np.sin(2 * np.pi * u)
    out = np.empty((h, w, 3), np.float32)
    for c, phase in enumerate((2 * np.pi / 3, 0.0, -2 * np.pi / 3)):  # B, G, R stripes
        cols = 0.5 + 0.5 * (cu * np.float32(np.cos(phase)) - su * np.float32(np.sin(phase)))
        out[..., c] = 1 - strength * (1 - cols * rows)
    return out


def _three(m: np.ndarray) -> np.ndarray:
    return cv2.merge([m, m, m])  # explicit 3 channels: numpy broadcasting over (h, w, 1) is slow


def render(screen: np.ndarray, shot: Shot) -> tuple[np.ndarray, np.ndarray]:
    """Photograph `screen` as described by `shot`; returns (JPEG-decoded BGR view, screen->view H)."""
    rng = np.random.default_rng([shot.seed, 11])
    sh, sw = screen.shape[:2]
    H = screen_to_view(shot, sw)
    lid, ox, oy = _lid(screen, rng, shot.screen_cm)
    H_lid = H @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1.0]])
    vw, vh = shot.view_w, shot.view_h
    # 2x supersampling: antialiased like a lens would, before the sensor samples it
    ss = np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1.0]])
    warped = cv2.warpPerspective(lid, ss @ H_lid, (2 * vw, 2 * vh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    warped = cv2.resize(warped, (vw, vh), interpolation=cv2.INTER_AREA)
    alpha = _three(warped[..., 3].astype(np.float32) * np.float32(1 / 255))
    mask = _three(cv2.warpPerspective(np.ones((sh, sw), np.float32), H, (vw, vh), flags=cv2.INTER_NEAREST))

    background = room(rng, vw, vh)
    img = background.astype(np.float32) * np.float32(rng.uniform(0.4, 0.9))  # rooms are darker than screens
    lidc = warped[..., :3].astype(np.float32)
    if shot.moire > 0:
        lidc *= 1 - mask + mask * _moire((vh, vw), np.linalg.inv(H), shot.moire)
    img = img * (1 - alpha) + lidc * alpha
    if shot.reflection > 0:  # the room behind the phone, mirrored in the glass
        ghost = cv2.GaussianBlur(cv2.flip(background, 1), (0, 0), 6).astype(np.float32)
        img += np.float32(shot.reflection) * ghost * mask
    if shot.glare > 0:
        cx, cy = rng.uniform(0, vw), rng.uniform(0, vh)
        sx, sy = rng.uniform(0.05, 0.25) * vw, rng.uniform(0.05, 0.25) * vh
        gx = np.exp(-(((np.arange(vw, dtype=np.float32) - cx) / sx) ** 2) / 2)
        gy = np.exp(-(((np.arange(vh, dtype=np.float32) - cy) / sy) ** 2) / 2)
        img += _three((shot.glare * np.outer(gy, gx)).astype(np.float32))
    xs = ((np.arange(vw, dtype=np.float32) - vw / 2) / (vw / 2)) ** 2
    ys = ((np.arange(vh, dtype=np.float32) - vh / 2) / (vh / 2)) ** 2
    img *= _three(1 - 0.175 * (ys[:, None] + xs[None, :]))  # vignetting
    img *= np.array(rng.uniform(0.88, 1.12, 3), np.float32)  # white balance
    img = cv2.GaussianBlur(img, (0, 0), shot.defocus)
    if shot.motion_px > 0:
        k = int(math.ceil(shot.motion_px)) | 1
        kern = np.zeros((k, k), np.float32)
        ang = rng.uniform(0, math.pi)
        c = k // 2
        dx, dy = math.cos(ang) * shot.motion_px / 2, math.sin(ang) * shot.motion_px / 2
        cv2.line(kern, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1, cv2.LINE_AA)
        img = cv2.filter2D(img, -1, kern / kern.sum())
    # exposure and tone curve through a lookup table (fast), then sensor noise
    lut = (255 * np.clip(np.arange(256, dtype=np.float32) * shot.gain / 255, 0, 1) ** shot.gamma).astype(np.float32)
    img = lut[np.clip(img, 0, 255).astype(np.uint8)]
    noise = np.empty(img.shape, np.float32)
    cv2.setRNGSeed(shot.seed)
    cv2.randn(noise, 0.0, shot.noise)
    view = np.clip(img + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, shot.jpeg_q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR), H


def photo_without_screen(seed: int, portrait: bool) -> np.ndarray:
    """A phone photo of a room with no screen in it (a negative)."""
    rng = np.random.default_rng([seed, 13])
    vw, vh = (1080, 1440) if portrait else (1440, 1080)
    img = cv2.GaussianBlur(room(rng, vw, vh), (0, 0), rng.uniform(0.5, 2)).astype(np.float32)
    noise = np.empty(img.shape, np.float32)
    cv2.setRNGSeed(seed)
    cv2.randn(noise, 0.0, 3.0)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def truth_point(H: np.ndarray, view_w: int, view_h: int) -> tuple[float, float]:
    """The screen point under the centre of the view: H^-1 of the principal point."""
    p = np.linalg.inv(H) @ np.array([(view_w - 1) / 2, (view_h - 1) / 2, 1.0])
    return float(p[0] / p[2]), float(p[1] / p[2])
