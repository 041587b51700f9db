"""Procedural screen pictures of several kinds, deterministic for a given seed.

These stand in for "the companion's current screen/canvas picture": crisp digital images in the
companion's own pixel coordinates (BGR uint8). Only OpenCV drawing is used so that the images are
identical on every machine.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SCREEN_SIZES: tuple[tuple[int, int], ...] = (
    (1440, 900),
    (1280, 800),
    (1536, 960),
    (1920, 1080),
    (1366, 768),
    (2560, 1600),  # a HiDPI picture: larger than the phone's view of it
)

_SYLLABLES = (
    "ka ri to na me lo su pe an ex in or ul ta ve mi do ra ne so li cu ba fe "
    "gro pla sti tra que mon der ber lin cal por"
).split()
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN)


def _word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(int(rng.integers(1, 4))))


def _sentence(rng: np.random.Generator, n_words: int) -> str:
    s = " ".join(_word(rng) for _ in range(n_words))
    return s[:1].upper() + s[1:]


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _text_block(
    img: np.ndarray,
    rng: np.random.Generator,
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    color: tuple[int, int, int] = (30, 30, 30),
    scale: float | None = None,
    font: int | None = None,
) -> None:
    """Fill a rectangle with ragged lines of pseudo-words."""
    font = int(rng.choice(_FONTS)) if font is None else font
    scale = float(rng.uniform(0.38, 0.6)) if scale is None else scale
    (_, th), _ = cv2.getTextSize("Ag", font, scale, 1)
    line_h = int(th * 2.0) + 2
    y = y0 + line_h
    while y < y1:
        if rng.random() < 0.12:  # paragraph break
            y += line_h
            continue
        text = _sentence(rng, int(rng.integers(3, 14)))
        (tw, _), _ = cv2.getTextSize(text, font, scale, 1)
        while tw > x1 - x0 and len(text) > 4:
            text = text[: int(len(text) * 0.8)]
            (tw, _), _ = cv2.getTextSize(text, font, scale, 1)
        cv2.putText(img, text, (x0, y), font, scale, color, 1, cv2.LINE_AA)
        y += line_h


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A photo-like patch: smooth colour noise at several octaves plus a few shapes."""
    acc = np.zeros((h, w, 3), np.float32)
    for octave in (4, 8, 16, 32):
        small = rng.random((max(2, h * octave // max(w, h)), octave, 3)).astype(np.float32)
        acc += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) / octave**0.5
    acc = cv2.normalize(acc, None, 0, 255, cv2.NORM_MINMAX)
    img = acc.astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(rng.integers(3, max(4, min(w, h) // 4)))
        cv2.circle(img, c, r, _color(rng), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):
        p = rng.integers(0, [w, h], size=(2, 2))
        cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), _color(rng), int(rng.integers(1, 5)), cv2.LINE_AA)
    return img


def _wallpaper(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    a, b = np.array(_color(rng, 20, 200), np.float32), np.array(_color(rng, 20, 200), np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = a * (1 - t) + b * t
    img = np.repeat(img, w, axis=1)
    blobs = _texture(rng, w // 8, h // 8).astype(np.float32)
    blobs = cv2.resize(cv2.GaussianBlur(blobs, (0, 0), 2), (w, h))
    img = 0.6 * img + 0.4 * blobs
    return np.clip(img, 0, 255).astype(np.uint8)


def _window(img: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int, y1: int) -> None:
    dark = rng.random() < 0.3
    bg = (40, 38, 36) if dark else (250, 250, 250)
    fg = (220, 220, 210) if dark else (35, 35, 35)
    cv2.rectangle(img, (x0 + 4, y0 + 4), (x1 + 4, y1 + 4), (50, 50, 50), -1)  # shadow
    cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
    bar = _color(rng, 150, 240)
    cv2.rectangle(img, (x0, y0), (x1, y0 + 28), bar, -1)
    for i, c in enumerate(((80, 90, 255), (60, 200, 250), (90, 200, 90))):
        cv2.circle(img, (x0 + 14 + 18 * i, y0 + 14), 6, c, -1, cv2.LINE_AA)
    cv2.putText(img, _sentence(rng, 2), (x0 + 80, y0 + 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    body = (x0 + 10, y0 + 38, x1 - 10, y1 - 10)
    kind = rng.choice(["text", "grid", "sheet", "code"])
    if kind == "text":
        _text_block(img, rng, *body, color=fg)
    elif kind == "grid":  # a gallery of thumbnails
        tw = int(rng.integers(70, 140))
        for yy in range(body[1], body[3] - tw, tw + 12):
            for xx in range(body[0], body[2] - tw, tw + 12):
                img[yy : yy + tw, xx : xx + tw] = _texture(rng, tw, tw)
    elif kind == "sheet":  # a spreadsheet: deliberately repetitive
        cw, ch = int(rng.integers(60, 110)), 22
        for yy in range(body[1], body[3], ch):
            cv2.line(img, (body[0], yy), (body[2], yy), (190, 190, 190), 1)
        for xx in range(body[0], body[2], cw):
            cv2.line(img, (xx, body[1]), (xx, body[3]), (190, 190, 190), 1)
        for yy in range(body[1], body[3] - ch, ch):
            for xx in range(body[0], body[2] - cw, cw):
                if rng.random() < 0.7:
                    txt = str(int(rng.integers(0, 10 ** int(rng.integers(1, 6)))))
                    cv2.putText(img, txt, (xx + 4, yy + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, fg, 1, cv2.LINE_AA)
    else:  # code editor
        cv2.rectangle(img, body[:2], body[2:], (30, 30, 30), -1)
        y = body[1] + 16
        while y < body[3]:
            indent = int(rng.integers(0, 4)) * 24
            x = body[0] + 8 + indent
            for _ in range(int(rng.integers(1, 6))):
                word = _word(rng)
                col = _color(rng, 120, 256)
                cv2.putText(img, word, (x, y), cv2.FONT_HERSHEY_PLAIN, 1.0, col, 1, cv2.LINE_AA)
                x += 10 * len(word) + 10
                if x > body[2] - 40:
                    break
            y += 17


def desktop(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = _wallpaper(rng, w, h)
    # a dock/taskbar with icons
    bar_h = 48
    cv2.rectangle(img, (0, h - bar_h), (w, h), (45, 45, 50), -1)
    for i in range(int(rng.integers(6, 14))):
        x = 60 + i * 56
        cv2.rectangle(img, (x, h - bar_h + 8), (x + 32, h - 8), _color(rng, 60, 256), -1)
        cv2.putText(img, _word(rng)[:1].upper(), (x + 9, h - 17), cv2.FONT_HERSHEY_DUPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(img, f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}", (w - 80, h - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (230, 230, 230), 1, cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 5))):
        ww, wh = int(rng.integers(w // 4, w * 2 // 3)), int(rng.integers(h // 4, h * 2 // 3))
        x0, y0 = int(rng.integers(0, w - ww)), int(rng.integers(0, h - bar_h - wh))
        _window(img, rng, x0, y0, x0 + ww, y0 + wh)
    return img


def _object(img: np.ndarray, rng: np.random.Generator, cx: int, cy: int, size: int) -> None:
    """A pasted cut-out: a textured blob with an irregular outline."""
    n = int(rng.integers(7, 14))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = size * rng.uniform(0.3, 0.5, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    x0, y0 = max(0, cx - size), max(0, cy - size)
    x1, y1 = min(img.shape[1], cx + size), min(img.shape[0], cy + size)
    if x1 <= x0 or y1 <= y0:
        return
    tex = _texture(rng, x1 - x0, y1 - y0)
    m = mask[y0:y1, x0:x1, None].astype(np.float32) / 255
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = (region * (1 - m) + tex * m).astype(np.uint8)


def canvas(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), _color(rng, 225, 256), np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        size = int(rng.integers(min(w, h) // 6, min(w, h) // 2))
        _object(img, rng, int(rng.integers(0, w)), int(rng.integers(0, h)), size)
    for _ in range(int(rng.integers(1, 4))):
        p0 = (int(rng.integers(0, w - 300)), int(rng.integers(40, h)))
        cv2.putText(img, _sentence(rng, 3), p0, cv2.FONT_HERSHEY_DUPLEX, float(rng.uniform(0.8, 1.8)), _color(rng, 0, 120), 2, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 5))):
        p = rng.integers(0, [w, h], size=(2, 2))
        cv2.rectangle(img, tuple(map(int, p[0])), tuple(map(int, p[1])), _color(rng), int(rng.integers(2, 6)))
    return img


def sparse(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), _color(rng, 235, 256), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        size = int(rng.integers(min(w, h) // 10, min(w, h) // 5))
        _object(img, rng, int(rng.integers(size, w - size)), int(rng.integers(size, h - size)), size)
    return img


def text(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), (236, 234, 232), np.uint8)
    cv2.rectangle(img, (0, 0), (w, 64), (245, 245, 245), -1)  # editor toolbar
    for i in range(int(rng.integers(8, 16))):
        cv2.rectangle(img, (16 + i * 38, 18), (44 + i * 38, 46), (200, 200, 200), 1)
    px0, px1 = w // 2 - int(w * 0.3), w // 2 + int(w * 0.3)
    cv2.rectangle(img, (px0, 80), (px1, h), (255, 255, 255), -1)
    font = int(rng.choice(_FONTS[:2]))
    y = 130
    cv2.putText(img, _sentence(rng, 4), (px0 + 60, y), font, 1.1, (20, 20, 20), 2, cv2.LINE_AA)
    y += 30
    while y < h - 40:
        bh = int(rng.integers(80, 260))
        _text_block(img, rng, px0 + 60, y, px1 - 60, min(h, y + bh), font=font, scale=0.5)
        y += bh + 20
        if y < h - 60 and rng.random() < 0.5:
            cv2.putText(img, _sentence(rng, 3), (px0 + 60, y), font, 0.75, (20, 20, 20), 2, cv2.LINE_AA)
            y += 30
    return img


def blank(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), _color(rng, 238, 256), np.uint8)


GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "desktop": desktop,
    "canvas": canvas,
    "sparse": sparse,
    "text": text,
    "blank": blank,
}


def make_screen(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    w, h = SCREEN_SIZES[int(rng.integers(0, len(SCREEN_SIZES)))]
    return GENERATORS[kind](rng, w, h)
