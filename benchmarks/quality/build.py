"""Build the quality evaluation set: photo-like composites with exact ground-truth alpha.

    python -m benchmarks.quality.build --out .bench/quality [--count 180] [--seed 0]

Objects are clip-art with a real alpha channel from Debian's ``openclipart-png``
(filtered: solid, one main piece, not line art, no baked-in drop shadow, not a
plain rectangle); backgrounds are the photographs shipped by ``mate-backgrounds``
and ``gnome-backgrounds``::

    apt-get install -y --no-install-recommends openclipart-png mate-backgrounds gnome-backgrounds

Every sample ``i`` is drawn from ``numpy.random.default_rng(seed + i)`` alone, so
the set is the same on every machine with the same packages. What a sample gets:

* a crop of a background photo at 1.2-3 MP, landscape or portrait, often defocused;
* one object, scaled so its box covers 10-55 % of the frame, sometimes rotated, flipped or cut by
  the frame's lower edge, lit with a gentle gradient and softened by the "lens";
* in about half the samples a cast shadow: a blurred, offset or ground-squashed copy
  of the silhouette darkening the background (bluish, as skylight-lit shadows are).
  The shadow is *not* part of the ground truth;
* sensor noise, then JPEG compression (a few stay PNG);
* about a quarter of the JPEGs stored rotated with an EXIF orientation tag, as phones
  do. The ground truth is always in displayed orientation.

Output: ``images/NNNN.{jpg,png}``, ``gt/NNNN.png`` (8-bit alpha), ``fg/NNNN.png``
(the object's true colour, RGB, for the halo metric), ``shadow/NNNN.png`` (where the
cast shadow shows, for the shadow-leak metric) and ``manifest.json``.
Even seeds are the tuning half, odd seeds the held-out half.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

CLIPART_ROOT = Path("/usr/share/openclipart/png")
BACKGROUND_FILES = [
    # Photographs (mate-backgrounds).
    *(f"/usr/share/backgrounds/mate/nature/{n}.jpg" for n in (
        "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
        "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower",
    )),
    "/usr/share/backgrounds/mate/abstract/Elephants.jpg",
    "/usr/share/backgrounds/mate/desktop/GreenTraditional.jpg",
    # Photo-real renders and textures (gnome-backgrounds).
    "/usr/share/backgrounds/gnome/wood-l.webp",
    "/usr/share/backgrounds/gnome/wood-d.webp",
    "/usr/share/backgrounds/gnome/pixels-l.webp",
    "/usr/share/backgrounds/gnome/pixels-d.webp",
    "/usr/share/backgrounds/gnome/licorice-l.webp",
]
# Not photographs: renders full of icons or sweets and a wallpaper with a logo and a
# slogan, salient things of their own beside the object (the benchmark reports them
# as a subset).
GRAPHIC_BACKGROUNDS = frozenset({"GreenTraditional.jpg", "pixels-l.webp", "pixels-d.webp", "licorice-l.webp"})
# Clip-art categories of things one photographs; flags, maps, signs and shapes are not.
SKIP_CATEGORIES = {"shapes", "signs_and_symbols", "geography", "logos", "buttons"}
APT_HINT = "apt-get install -y --no-install-recommends openclipart-png mate-backgrounds gnome-backgrounds"

# EXIF orientation -> the transpose that turns *displayed* pixels into *stored* ones
# (the inverse of what a viewer applies).
_STORE_TRANSPOSE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


@dataclass
class Sample:
    id: str
    seed: int
    split: str  # "tune" (even seed) | "heldout" (odd seed)
    image: str
    gt: str
    fg: str
    shadow_map: str  # visible cast-shadow strength, 8-bit; only when shadow != "none"
    width: int  # displayed
    height: int
    background: str
    object: str
    object_fraction: float  # ground-truth foreground area / image area
    shadow: str  # "none" | "drop" | "ground"
    defocus: float  # background blur sigma, px
    noise: float
    jpeg_quality: int | None
    exif_orientation: int  # 1 = stored upright


# ---------------------------------------------------------------------------- objects


def _clipart_files() -> list[Path]:
    files = sorted(p for p in CLIPART_ROOT.rglob("*.png") if p.relative_to(CLIPART_ROOT).parts[0] not in SKIP_CATEGORIES)
    return files


def _load_object(path: Path) -> np.ndarray | None:
    """The clip-art's RGBA cropped to its alpha box, or None when it is not a usable object."""
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            w, h = im.size
            if max(w, h) < 350 or w * h > 6_000_000:
                return None
            rgba = np.asarray(im.convert("RGBA"))
    except (OSError, ValueError, SyntaxError):
        return None  # unreadable clip-art: skip it
    alpha = rgba[:, :, 3]
    if alpha.min() == 255:
        return None  # no transparency: a rectangle
    ys, xs = np.nonzero(alpha > 8)
    if ys.size == 0:
        return None
    rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if max(rgba.shape[:2]) < 300 or min(rgba.shape[:2]) < 80:
        return None
    small = rgba
    if max(small.shape[:2]) > 700:
        f = 700 / max(small.shape[:2])
        small = cv2.resize(small, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    a = small[:, :, 3]
    solid = (a > 127).astype(np.uint8)
    area = int(solid.sum())
    fill = area / solid.size
    if fill < 0.35 or fill > 0.96:  # thin/sparse drawings, or a plain rectangle
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < 0.9 * area:
        return None  # several pieces
    k = max(3, int(0.03 * max(solid.shape)))
    opened = cv2.morphologyEx(solid, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if opened.sum() < 0.9 * area:
        return None  # line art: thin strokes vanish under an opening
    semi = (a > 10) & (a < 245)
    if semi.sum() > 0.08 * area:
        return None  # glass, glows, baked-in soft shadows
    rgb = small[:, :, :3][solid > 0].astype(np.float32)
    if (rgb.max(axis=1) < 50).mean() > 0.3:
        return None  # mostly black ink
    q = (rgb // 16).astype(np.int32)
    if np.unique(q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]).size < 40:
        return None  # flat, few-colour art
    return rgba


def select_objects(count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``count`` distinct usable objects, in a seeded order (at most a quarter computer icons)."""
    files = _clipart_files()
    if not files:
        sys.exit(f"no clip-art under {CLIPART_ROOT}; install it: {APT_HINT}")
    order = np.random.default_rng(seed + 1_000_003).permutation(len(files))
    chosen: list[tuple[str, np.ndarray]] = []
    digests: set[str] = set()
    icons = 0
    for idx in order:
        path = files[idx]
        rel = str(path.relative_to(CLIPART_ROOT))
        is_icon = rel.startswith("computer/")
        if is_icon and icons >= count // 4:
            continue
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest in digests:
            continue
        rgba = _load_object(path)
        if rgba is None:
            continue
        digests.add(digest)
        icons += is_icon
        chosen.append((rel, rgba))
        if len(chosen) == count:
            break
    if len(chosen) < count:
        sys.exit(f"only {len(chosen)} usable clip-art objects found; need {count}")
    return chosen


# ---------------------------------------------------------------------------- backgrounds


def load_backgrounds() -> list[tuple[str, np.ndarray]]:
    found = []
    for name in BACKGROUND_FILES:
        path = Path(name)
        if path.exists():
            with Image.open(path) as im:
                found.append((path.name, np.asarray(im.convert("RGB"))))
    if len(found) < 6:
        sys.exit(f"background photographs missing ({len(found)} found); install them: {APT_HINT}")
    return found


def _background_crop(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A random crop of ``photo`` with the aspect of ``size``, resized to it."""
    out_w, out_h = size
    ph, pw = photo.shape[:2]
    aspect = out_w / out_h
    scale = rng.uniform(0.55, 1.0)
    crop_w = min(pw, ph * aspect) * scale
    crop_h = crop_w / aspect
    x0 = rng.uniform(0, pw - crop_w)
    y0 = rng.uniform(0, ph - crop_h)
    crop = photo[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if crop.shape[1] > out_w else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(crop), (out_w, out_h), interpolation=interp).astype(np.float32)


# ---------------------------------------------------------------------------- compositing


def _premultiplied(rgba: np.ndarray) -> np.ndarray:
    x = rgba.astype(np.float32)
    x[:, :, :3] *= x[:, :, 3:4] / 255.0
    return x


def _place_object(
    rng: np.random.Generator, rgba: np.ndarray, size: tuple[int, int], *, max_upscale: float | None = None,
    bust: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The object on an empty frame: (premultiplied colour (H,W,3) in 0..255, alpha (H,W) in 0..1).

    ``max_upscale``: never enlarge the source more than this (small sources would turn to mush);
    ``bust``: the source is cut straight at its lower edge (a portrait), so it stands upright on
    the frame's lower edge, its cut out of the frame. Neither changes the draws of a plain object.
    """
    out_w, out_h = size
    pm = _premultiplied(rgba)
    if rng.random() < 0.5:
        pm = pm[:, ::-1]
    oh, ow = pm.shape[:2]
    # Scale: the object's box covers 10-55 % of the frame (one points the phone at it), and fits.
    target = rng.uniform(0.10, 0.55) * out_w * out_h
    scale = math.sqrt(target / (ow * oh))
    scale = min(scale, 0.92 * out_w / ow, 0.92 * out_h / oh)
    if max_upscale is not None:
        scale = min(scale, max_upscale)
    angle = rng.uniform(-20, 20) if rng.random() < 0.3 else 0.0
    new_w, new_h = max(8, round(ow * scale)), max(8, round(oh * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    pm = cv2.resize(np.ascontiguousarray(pm), (new_w, new_h), interpolation=interp)
    pm = np.clip(pm, 0, 255)
    pm[:, :, :3] = np.minimum(pm[:, :, :3], pm[:, :, 3:4])
    # Position: inside the frame; sometimes cut by the lower edge (a thing on a table).
    cx = rng.uniform(new_w / 2, out_w - new_w / 2)
    cy = rng.uniform(new_h / 2, out_h - new_h / 2)
    if rng.random() < 0.15:
        cy = out_h - new_h / 2 + rng.uniform(0.05, 0.25) * new_h
    if bust:
        angle = 0.0  # a tilted cut would show a straight edge inside the frame
        cy = out_h - new_h / 2 + rng.uniform(0.0, 0.15) * new_h
    m = cv2.getRotationMatrix2D((new_w / 2, new_h / 2), angle, 1.0)
    m[0, 2] += cx - new_w / 2
    m[1, 2] += cy - new_h / 2
    layer = cv2.warpAffine(pm, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # Lens softness: blurring colour and alpha alike keeps the composite exact.
    lens = rng.uniform(0.0, 1.2)
    if lens > 0.3:
        layer = cv2.GaussianBlur(layer, (0, 0), lens)
    alpha = np.clip(layer[:, :, 3] / 255.0, 0.0, 1.0)
    colour = layer[:, :, :3]
    # Gentle lighting gradient across the object.
    gy, gx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(theta) * (gx - cx) + np.sin(theta) * (gy - cy)) / max(new_w, new_h)
    light = 1.0 + rng.uniform(0.05, 0.25) * ramp
    colour = colour * light[:, :, None]
    colour = np.minimum(np.clip(colour, 0, None), alpha[:, :, None] * 255.0)
    return colour, alpha


def _cast_shadow(rng: np.random.Generator, alpha: np.ndarray) -> tuple[np.ndarray, str]:
    """A shadow intensity map (0..1) from the silhouette, and its kind."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    if ys.size == 0:
        return np.zeros_like(alpha), "none"
    obj = max(ys.max() - ys.min(), xs.max() - xs.min())
    kind = "drop" if rng.random() < 0.55 else "ground"
    if kind == "drop":
        # Light from above-left/right: the shadow falls behind and below, on a wall or floor.
        dx = rng.choice([-1, 1]) * rng.uniform(0.03, 0.12) * obj
        dy = rng.uniform(0.03, 0.12) * obj
        m = np.float32([[1, 0, dx], [0, 1, dy]])
    else:
        # Ground shadow: the silhouette laid on the floor from its base line, squashed and
        # sheared; towards the camera (below the base) or away from it (above, beside).
        base = float(ys.max())
        towards_camera = rng.random() < 0.65
        squash = rng.uniform(0.2, 0.6) * (1 if towards_camera else -1)
        shear = rng.uniform(-1.5, 1.5) if towards_camera else rng.choice([-1, 1]) * rng.uniform(1.2, 2.5)
        # y' = base + squash * (base - y);  x' = x + shear * |squash| * (base - y)
        k = shear * abs(squash)
        m = np.float32([
            [1, -k, k * base],
            [0, -squash, base * (1 + squash)],
        ])
        m[1, 2] -= rng.uniform(0.0, 0.02) * obj  # tuck it under the contact line
    shadow = cv2.warpAffine(alpha.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    sigma = rng.uniform(0.01, 0.05) * obj if kind == "drop" else rng.uniform(0.005, 0.025) * obj
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(sigma, 0.8))
    if kind == "ground":
        # Darkest near the contact line, fading with distance.
        ramp = np.clip(1.0 - (np.arange(h, dtype=np.float32) - ys.max()) / max(0.5 * obj, 1.0), 0.3, 1.0)
        shadow *= ramp[:, None]
    strength = rng.uniform(0.4, 0.8)
    return np.clip(shadow * strength, 0.0, 0.95), kind


def make_sample(
    index: int, seed: int, objects: list[tuple[str, np.ndarray]], backgrounds: list[tuple[str, np.ndarray]],
    *, max_upscale: float | None = None, bust: bool = False,
) -> tuple[Sample, Image.Image, np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``index`` from ``rng(seed)``; ``max_upscale`` and ``bust`` as ``_place_object``'s."""
    rng = np.random.default_rng(seed)
    long_side = int(rng.choice([1280, 1440, 1600, 1800, 2048]))
    aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0]))
    size = (long_side, round(long_side / aspect))
    if rng.random() < 0.35:
        size = size[::-1]
    out_w, out_h = size

    bg_name, photo = backgrounds[int(rng.integers(len(backgrounds)))]
    background = _background_crop(rng, photo, size)
    defocus = float(rng.uniform(1.0, 6.0)) if rng.random() < 0.6 else 0.0
    if defocus:
        background = cv2.GaussianBlur(background, (0, 0), defocus)

    obj_name, rgba = objects[index]
    colour, alpha = _place_object(rng, rgba, size, max_upscale=max_upscale, bust=bust)

    shadow_kind = "none"
    shadow = np.zeros_like(alpha)
    if rng.random() < 0.5:
        shadow, shadow_kind = _cast_shadow(rng, alpha)
        # Shadows are lit by the sky: red falls a little more than blue.
        tint = np.array([1.0, 0.96, 0.88], dtype=np.float32)
        background = background * (1.0 - shadow[:, :, None] * tint)

    composite = colour + (1.0 - alpha[:, :, None]) * background
    noise = float(rng.uniform(0.0, 5.0))
    composite = composite + rng.standard_normal(composite.shape).astype(np.float32) * noise
    pixels = np.clip(composite + 0.5, 0, 255).astype(np.uint8)
    gt = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    safe = np.maximum(alpha, 1e-6)[:, :, None]
    fg = np.clip(colour / safe + 0.5, 0, 255).astype(np.uint8)
    fg[alpha <= 0] = 0

    as_jpeg = rng.random() < 0.88
    quality = int(rng.integers(70, 96)) if as_jpeg else None
    orientation = int(rng.choice([6, 6, 8, 3])) if as_jpeg and rng.random() < 0.25 else 1
    image = Image.fromarray(pixels)
    sample = Sample(
        id=f"{index:04d}",
        seed=seed,
        split="tune" if seed % 2 == 0 else "heldout",
        image=f"images/{index:04d}.{'jpg' if as_jpeg else 'png'}",
        gt=f"gt/{index:04d}.png",
        fg=f"fg/{index:04d}.png",
        shadow_map=f"shadow/{index:04d}.png",
        width=out_w,
        height=out_h,
        background=bg_name,
        object=obj_name,
        object_fraction=round(float((gt > 128).mean()), 4),
        shadow=shadow_kind,
        defocus=round(defocus, 2),
        noise=round(noise, 2),
        jpeg_quality=quality,
        exif_orientation=orientation,
    )
    # Where the cast shadow shows (not under the object): for the shadow-leak metric.
    visible_shadow = np.clip(shadow * (1.0 - alpha) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return sample, image, gt, fg, visible_shadow


def _encode(image: Image.Image, sample: Sample) -> bytes:
    buf = io.BytesIO()
    if sample.jpeg_quality is None:
        image.save(buf, "PNG", compress_level=1)
        return buf.getvalue()
    stored = image
    exif = Image.Exif()
    if sample.exif_orientation != 1:
        stored = image.transpose(_STORE_TRANSPOSE[sample.exif_orientation])
        exif[0x0112] = sample.exif_orientation
    stored.save(buf, "JPEG", quality=sample.jpeg_quality, exif=exif.tobytes())
    data = buf.getvalue()
    # Prove that a viewer shows it upright.
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if shown.size != image.size:
        raise AssertionError(f"orientation {sample.exif_orientation} did not round-trip")
    return data


# One sample: (index, seed) -> (manifest entry, displayed image, gt, fg, visible shadow).
MakeSample = Callable[[int, int], tuple[Sample, Image.Image, np.ndarray, np.ndarray, np.ndarray]]


def write_set(out: Path, count: int, seed: int, make: MakeSample, extra: dict | None = None) -> list[Sample]:
    """Write samples ``seed + i`` (i < count) and the manifest (``extra``: more top-level keys)."""
    started = time.perf_counter()
    for sub in ("images", "gt", "fg", "shadow"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    samples = []
    for index in range(count):
        sample, image, gt, fg, shadow = make(index, seed + index)
        (out / sample.image).write_bytes(_encode(image, sample))
        Image.fromarray(gt).save(out / sample.gt, compress_level=1)
        Image.fromarray(fg).save(out / sample.fg, compress_level=1)
        if sample.shadow != "none":
            Image.fromarray(shadow).save(out / sample.shadow_map, compress_level=1)
        samples.append(sample)
        if (index + 1) % 20 == 0:
            print(f"  {index + 1}/{count}  ({time.perf_counter() - started:.0f} s)")
    manifest = {
        "version": 1,
        "seed": seed,
        "count": count,
        **(extra or {}),
        "samples": [asdict(s) for s in samples],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    shadows = sum(s.shadow != "none" for s in samples)
    rotated = sum(s.exif_orientation != 1 for s in samples)
    print(f"wrote {count} samples to {out} ({shadows} with a cast shadow, {rotated} EXIF-rotated) "
          f"in {time.perf_counter() - started:.0f} s")
    return samples


def build(out: Path, count: int, seed: int) -> list[Sample]:
    started = time.perf_counter()
    backgrounds = load_backgrounds()
    objects = select_objects(count, seed)
    print(f"{len(backgrounds)} backgrounds, {len(objects)} objects ({time.perf_counter() - started:.1f} s)")
    return write_set(out, count, seed, lambda index, s: make_sample(index, s, objects, backgrounds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.build", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", choices=("main", "other"), default="main",
        help="main: openclipart over MATE/GNOME photos; other: the other-sources part (other_sources.py)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default .bench/quality, or .bench/quality-other")
    parser.add_argument("--count", type=int, default=None, help="default 180, or 90 for --source other")
    parser.add_argument("--seed", type=int, default=None, help="default 0, or 1000000 for --source other")
    args = parser.parse_args(argv)
    if args.source == "other":
        from . import other_sources

        other_sources.build(
            args.out or other_sources.DEFAULT_OUT,
            other_sources.DEFAULT_COUNT if args.count is None else args.count,
            other_sources.DEFAULT_SEED if args.seed is None else args.seed,
        )
        return
    build(args.out or Path(".bench/quality"), 180 if args.count is None else args.count, args.seed or 0)


if __name__ == "__main__":
    main()
