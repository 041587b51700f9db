"""Deterministic phone-like test photos for the speed benchmark.

Each image is a composite: a real photograph (Debian's ``mate-backgrounds`` /
``gnome-backgrounds``, when installed) as a slightly defocused background, an
object cut from another photograph in a smooth blob shape with shading and a
soft cast shadow, then sensor-like noise and a phone-quality JPEG (4:2:0,
quality 90) with Make/Model EXIF. Every third image is a portrait stored the
way iPhones store it: landscape pixels with EXIF orientation 6.

Without the background packages a procedural texture stands in (the run says
so); ``apt-get install mate-backgrounds gnome-backgrounds`` gives real photos.
Same arguments, same bytes: everything is seeded.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

PHOTO_GLOBS = (
    "/usr/share/backgrounds/mate/nature/*.jpg",
    "/usr/share/backgrounds/mate/abstract/Elephants_5640x3172.jpg",
)
_GENERATOR_VERSION = 4


@dataclass(frozen=True)
class ImageSpec:
    index: int
    width: int  # stored (pre-EXIF) size
    height: int
    orientation: int
    seed: int

    @property
    def displayed(self) -> tuple[int, int]:
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def photo_sources() -> list[Path]:
    import glob

    paths: list[Path] = []
    for pattern in PHOTO_GLOBS:
        paths.extend(Path(p) for p in sorted(glob.glob(pattern)))
    return paths


def _cover(img: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Scale to cover (width, height), then crop at a seeded offset."""
    h, w = img.shape[:2]
    scale = max(width / w, height / h) * float(rng.uniform(1.0, 1.25))
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    x = int(rng.integers(0, new_w - width + 1))
    y = int(rng.integers(0, new_h - height + 1))
    return resized[y : y + height, x : x + width]


def _procedural(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Multi-octave coloured noise: a stand-in when no photographs are installed."""
    out = np.zeros((height, width, 3), np.float32)
    for octave in range(1, 7):
        cells = 2**octave
        small = rng.uniform(0, 255, (cells * 3 // 4 + 2, cells + 2, 3)).astype(np.float32)
        out += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) / (octave**0.9)
    out -= out.min()
    out *= 255.0 / max(float(out.max()), 1.0)
    return out.astype(np.uint8)


def _load_photo(path: Path | None, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    if path is None:
        return _procedural(width, height, rng)
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    return _cover(rgb, width, height, rng)


def _blob_alpha(width: int, height: int, cx: float, cy: float, radius: float, rng: np.random.Generator) -> np.ndarray:
    """An anti-aliased smooth random blob: r(theta) = R * (1 + sum a_k cos(k theta + phi_k))."""
    ys, xs = np.ogrid[:height, :width]
    dx = (xs - cx).astype(np.float32)
    dy = (ys - cy).astype(np.float32) * 1.15  # a bit taller than wide
    theta = np.arctan2(dy, dx)
    edge = np.ones_like(theta)
    for k in range(2, 6):
        edge += float(rng.uniform(0.03, 0.12)) / (k - 1) * np.cos(k * theta + float(rng.uniform(0, 2 * np.pi)))
    dist = np.sqrt(dx * dx + dy * dy)
    return np.clip(radius * edge - dist + 0.5, 0.0, 1.0).astype(np.float32)


def render(spec: ImageSpec, photos: list[Path]) -> bytes:
    """One JPEG, as a phone would write it."""
    rng = np.random.default_rng(spec.seed)
    width, height = spec.displayed
    bg_path = photos[spec.index % len(photos)] if photos else None
    fg_path = photos[(spec.index * 5 + 3) % len(photos)] if photos else None

    background = _load_photo(bg_path, width, height, rng)
    background = cv2.GaussianBlur(background, (0, 0), sigmaX=max(width, height) / 1600.0).astype(np.float32)
    obj = _load_photo(fg_path, width, height, rng).astype(np.float32)

    short = min(width, height)
    cx = width * float(rng.uniform(0.4, 0.6))
    cy = height * float(rng.uniform(0.42, 0.58))
    radius = short * float(rng.uniform(0.28, 0.40))
    alpha = _blob_alpha(width, height, cx, cy, radius, rng)

    # Cast shadow: the object's silhouette, offset down-right and blurred.
    shift = np.float32([[1, 0, radius * 0.12], [0, 1, radius * 0.18]])
    shadow = cv2.warpAffine(alpha, shift, (width, height))
    shadow = cv2.GaussianBlur(shadow, (0, 0), sigmaX=radius * 0.08)
    background *= (1.0 - 0.55 * shadow)[:, :, None]

    # Shading: the object is lit from the top left.
    ys, xs = np.ogrid[:height, :width]
    light = 1.15 - 0.45 * np.clip(((xs - cx) + (ys - cy)) / (2.2 * radius) + 0.5, 0.0, 1.0)
    obj *= light.astype(np.float32)[:, :, None]

    a = alpha[:, :, None]
    image = obj * a + background * (1.0 - a)
    del obj, background, shadow, light
    # Sensor noise: luminance plus a little chroma.
    image += rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)
    image += rng.normal(0.0, 0.8, (height, width, 3)).astype(np.float32)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    del image

    img = Image.fromarray(pixels)
    if spec.orientation == 6:
        # Stored pixels are rotated 90 degrees anticlockwise; tag 6 says "rotate clockwise to display".
        img = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x010F] = "Apple"  # Make
    exif[0x0110] = "iPhone 13 (arclip benchmark)"  # Model
    exif[0x0112] = spec.orientation
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90, subsampling=2, exif=exif.tobytes())
    return buffer.getvalue()


def plan(count: int, width: int, height: int, seed: int) -> list[ImageSpec]:
    """Every third image is an iPhone-style portrait (orientation 6)."""
    return [
        ImageSpec(index=i, width=width, height=height, orientation=6 if i % 3 == 2 else 1, seed=seed * 1000 + i)
        for i in range(count)
    ]


def ensure_images(root: Path, name: str, count: int, width: int, height: int, seed: int = 7) -> list[Path]:
    """Generate (or reuse, when the recipe is unchanged) ``count`` JPEGs under root/name."""
    photos = photo_sources()
    specs = plan(count, width, height, seed)
    recipe = {
        "version": _GENERATOR_VERSION,
        "photos": [str(p) for p in photos],
        "specs": [asdict(s) for s in specs],
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = root / name
    manifest = folder / "manifest.json"
    paths = [folder / f"img{s.index:02d}_o{s.orientation}.jpg" for s in specs]
    if manifest.is_file() and json.loads(manifest.read_text()).get("digest") == digest and all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    if not photos:
        print("note: no photographs found (apt-get install mate-backgrounds); using procedural textures")
    for spec, path in zip(specs, paths):
        path.write_bytes(render(spec, photos))
    manifest.write_text(json.dumps({"digest": digest, "recipe": recipe}, indent=1))
    return paths
