"""The quality set's other-sources part: the same recipe, other objects, other backgrounds.

    python -m benchmarks.quality.build --source other   # .bench/quality-other, 90 images

A choice tuned on the main set (``build.py``: openclipart over MATE/GNOME photos) can fit
that set; this part checks whether it carries over. Nothing in it comes from the main
set's packages::

    apt-get install -y --no-install-recommends wesnoth-1.16-data oxygen-icon-theme \\
        plasma-workspace-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04

* objects: Battle for Wesnoth's painted unit portraits (people, beasts, monsters with hair,
  spears, bows, staffs: thin parts, and gaps between arm and body: holes) and Oxygen's
  256 px photo-like device and application icons (discs with a hole, drives, phones);
* backgrounds: the photographs of Plasma's and Lomiri's (Ubuntu Touch) wallpapers, some with
  salient things of their own (cups, boats, dogs, a bird, a bowl), and four that are paintings
  or renders (``GRAPHIC_BACKGROUNDS``).

Placement, shadows, noise, EXIF rotation and JPEG are ``build.make_sample``'s, with two
differences: a source is enlarged at most 3x (the icons are 256 px; more is mush), and a
portrait cut straight at its lower edge (a bust) stands upright on the frame's lower edge,
its cut outside the frame. Every sample is ``split == "other"``; seeds start at 1,000,000,
far from the main set's.

The manifest also records each sample's *structure cases*, measured on its ground truth
(``structure``): holes (enclosed transparent regions), thin parts (what a morphological
opening a few px wide removes) and specks (separate pieces of the object).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .build import Sample, make_sample, write_set

DEFAULT_OUT = Path(".bench/quality-other")
DEFAULT_COUNT = 90
DEFAULT_SEED = 1_000_000
APT_HINT = (
    "apt-get install -y --no-install-recommends wesnoth-1.16-data oxygen-icon-theme "
    "plasma-workspace-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04"
)

PORTRAIT_GLOB = "/usr/share/games/wesnoth/*/data/core/images/portraits"
ICON_ROOT = Path("/usr/share/icons/oxygen/base/256x256")
ICON_CONTEXTS = ("devices", "apps")  # things; not documents, folders, arrows or emblems
PORTRAIT_SHARE = 2 / 3  # of the objects; the rest are icons

PLASMA_ROOT = Path("/usr/share/wallpapers")
PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
    "OneStandsOut", "Path", "summer_1am",
)
PLASMA_GRAPHICS = ("Autumn", "SafeLanding", "Volna")  # a painting, an illustration, a render
LOMIRI_ROOT = Path("/usr/share/backgrounds")
LOMIRI_PHOTOS = (
    "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
    "analogpattern_by_Peter_Nerlich.jpg", "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg", "Kleiber_by_Lukas_Baubkus.jpg",
)
LOMIRI_GRAPHICS = ("Painting-Colors_by__herobrine7gamer.jpg",)  # flat painted stripes
GRAPHIC_BACKGROUNDS = frozenset(
    {*(f"plasma/{n}" for n in PLASMA_GRAPHICS), *(f"lomiri/{n}" for n in LOMIRI_GRAPHICS)}
)
# Photographs with salient things of their own beside the object (a subset in the report).
BUSY_BACKGROUNDS = frozenset({
    "plasma/ColorfulCups", "plasma/EveningGlow", "lomiri/Picture_0B_by_freespace.jpg",
    "lomiri/Picture_1A_by_freespace.jpg", "lomiri/Wine_by_Jakkub_Mede.jpg", "lomiri/free_by_Peter_Nerlich.jpg",
    "lomiri/friends_by_Aitzol_Berasategi.jpg", "lomiri/greentock_by_Peter_Nerlich.jpg",
    "lomiri/Kleiber_by_Lukas_Baubkus.jpg",
})
BACKGROUND_LONG_SIDE = 3840  # the 5120 px ones are reduced: crops are at most 2048 px wide
MAX_UPSCALE = 3.0


@dataclass
class OtherSample(Sample):
    source: str  # the Debian package the object comes from
    bust: bool  # stands on the frame's lower edge
    holes: int  # enclosed transparent regions (see ``structure``)
    hole_fraction: float  # their area / the object's
    thin_parts: int
    thin_fraction: float
    specks: int  # separate pieces of the object besides the main one


# ---------------------------------------------------------------------------- structure


def structure(gt: np.ndarray) -> dict[str, float | int]:
    """Holes, thin parts and specks of a ground-truth alpha (8-bit), at its own resolution.

    Sizes scale with the frame so that each case is one the model could see: it looks at a
    320 px square, the engine refines alpha at ~1024 px.

    * holes: transparent regions enclosed by the object (the frame's edge does not enclose),
      each at least 0.05 % of the frame (~50 px of the model's input);
    * thin parts: pieces of the object that an opening with a disc 8 px wide at 1024 px
      removes (~2.5 px at the model's 320), each at least 2 discs' squares in area, so
      the opening's rounding of corners does not count (a sample counts as a thin-parts case
      when they make at least 0.2 % of the object);
    * specks: separate pieces of the object besides the largest, each at least 0.01 % of the
      frame.
    """
    solid = gt > 127
    h, w = solid.shape
    frame = h * w
    area = int(solid.sum())
    out: dict[str, float | int] = {"holes": 0, "hole_fraction": 0.0, "thin_parts": 0, "thin_fraction": 0.0, "specks": 0}
    if area == 0:
        return out
    # Holes: background components (4-connected) that do not reach the frame's edge.
    background = np.pad(~solid, 1, constant_values=True).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    outside = labels[0, 0]
    holes = [
        int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, count)
        if i != outside and stats[i, cv2.CC_STAT_AREA] >= 0.0005 * frame
    ]
    out["holes"] = len(holes)
    out["hole_fraction"] = round(sum(holes) / area, 4)
    mask = solid.astype(np.uint8)
    thin = _thin_parts(mask, THIN_DISC_AT_1024 * max(h, w) / 1024)
    out["thin_parts"] = len(thin)
    out["thin_fraction"] = round(sum(thin) / area, 4)
    out["specks"] = sum(a >= 0.0001 * frame for a in _pieces(mask)[1:])
    return out


THIN_DISC_AT_1024 = 8  # px: ~2.5 px of the model's 320 px input


def _thin_parts(mask: np.ndarray, disc: float) -> list[int]:
    """Areas of what an opening with a disc ``disc`` px wide removes, in pieces long enough to be parts
    (at least two discs' squares: the opening also rounds every corner a little)."""
    d = max(3, round(disc)) | 1
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)))
    removed = (mask & (1 - opened)).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(removed, connectivity=8)
    return [int(a) for a in stats[1:, cv2.CC_STAT_AREA] if a >= 2 * d * d]


def _pieces(mask: np.ndarray) -> list[int]:
    """Areas of the mask's separate pieces (8-connected), largest first."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return sorted(stats[1:, cv2.CC_STAT_AREA].tolist(), reverse=True)


def structure_cases(sample: dict) -> set[str]:
    """Which structure cases a manifest entry has: "holes", "thin", "specks"."""
    cases = set()
    if sample.get("holes", 0) > 0:
        cases.add("holes")
    if sample.get("thin_parts", 0) > 0 and sample.get("thin_fraction", 0.0) >= 0.002:
        cases.add("thin")
    if sample.get("specks", 0) > 0:
        cases.add("specks")
    return cases


# ---------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Filter:
    """``build._load_object``'s tests, with thresholds per source."""

    min_long_side: int  # of the alpha's box
    min_fill: float
    keep_after_opening: float  # fraction of the solid area an opening must leave (not line art)
    max_soft: float  # soft pixels / solid area (glows, baked-in shadows)
    max_dark: float  # near-black pixels / solid area (ink)


# Portraits: painted figures. Spears, bows and spread arms leave less of the box filled
# (0.25, not the main set's 0.35), and weapons are thin by design (0.85 must survive the
# opening, not 0.9: line art still fails). Painted hair and fur have soft edges (0.12, not
# 0.08; glowing spells are above that). Dark armour and robes are paint, not ink (0.6, not
# 0.3 near-black pixels: at 0.3 half the portraits would go).
PORTRAIT_FILTER = Filter(min_long_side=300, min_fill=0.25, keep_after_opening=0.85, max_soft=0.12, max_dark=0.6)
# Icons: 256 px. Oxygen draws a soft rim and a faint contact shadow 2-3 px wide, a larger
# share of a 256 px icon than of the main set's >= 300 px clip-art (0.16, not 0.08: a disc's
# clear hub is real transparency); a phone's black screen is not ink (0.7, not 0.3).
ICON_FILTER = Filter(min_long_side=200, min_fill=0.35, keep_after_opening=0.9, max_soft=0.16, max_dark=0.7)


def _load_object(path: Path, rules: Filter) -> np.ndarray | None:
    """The RGBA cropped to its alpha box, or None when it is not a usable object."""
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
    except (OSError, ValueError, SyntaxError):
        return None
    alpha = rgba[:, :, 3]
    if alpha.min() == 255:
        return None
    ys, xs = np.nonzero(alpha > 8)
    if ys.size == 0:
        return None
    rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if max(rgba.shape[:2]) < rules.min_long_side or min(rgba.shape[:2]) < 60:
        return None
    a = rgba[:, :, 3]
    solid = (a > 127).astype(np.uint8)
    area = int(solid.sum())
    fill = area / solid.size
    if fill < rules.min_fill or fill > 0.96:
        return None  # sparse drawings, or a plain rectangle (the icons' screenshots)
    count, _, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    if count < 2 or stats[1:, cv2.CC_STAT_AREA].max() < 0.9 * area:
        return None  # several pieces
    k = max(3, int(0.03 * max(solid.shape)))
    opened = cv2.morphologyEx(solid, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if opened.sum() < rules.keep_after_opening * area:
        return None  # line art
    if ((a > 10) & (a < 245)).sum() > rules.max_soft * area:
        return None
    rgb = rgba[:, :, :3][solid > 0].astype(np.float32)
    if (rgb.max(axis=1) < 50).mean() > rules.max_dark:
        return None
    q = (rgb // 16).astype(np.int32)
    if np.unique(q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]).size < 40:
        return None  # flat, few-colour art
    return rgba


def _family(path: Path) -> str:
    """Near-duplicates share one: draug-2 / draug, network-wireless-connected-25 / -50."""
    stem = re.sub(r"[-_]?\d+$", "", path.stem)
    if path.parent.parent == ICON_ROOT:
        stem = "-".join(stem.split("-")[:2])  # media-optical-dvd, media-optical-blu-ray
    return f"{path.parent.name}/{stem}"


def _portrait_files() -> list[Path]:
    roots = sorted(Path("/").glob(PORTRAIT_GLOB.lstrip("/")))
    return sorted(roots[-1].rglob("*.png")) if roots else []


def _icon_files() -> list[Path]:
    return sorted(p for ctx in ICON_CONTEXTS for p in (ICON_ROOT / ctx).glob("*.png"))


def _source_cases(rgba: np.ndarray) -> set[str]:
    """Structure cases at the source's own size, to steer the choice; the manifest records the
    placed object's (``structure``). The disc is ~2.2 % of the long side: a 450 px portrait
    placed at ~700 px of a 2048 px frame meets the 8 px-at-1024 disc at about that size."""
    mask = (rgba[:, :, 3] > 127).astype(np.uint8)
    area = int(mask.sum())
    cases = set()
    if sum(_thin_parts(mask, 0.022 * max(mask.shape))) >= 0.002 * area:
        cases.add("thin")
    if any(a >= 0.002 * area for a in _pieces(mask)[1:]):
        cases.add("specks")
    return cases


def _pick(
    files: list[Path], rules: Filter, count: int, rng: np.random.Generator, wants: dict[str, int]
) -> list[tuple[Path, np.ndarray]]:
    """``count`` usable files, one per family, in a seeded order; first ``wants[case]`` with each
    structure case (as many as there are), so that a fair share of the set has them."""
    usable: list[tuple[Path, np.ndarray, set[str]]] = []
    seen: set[str] = set()
    for idx in rng.permutation(len(files)):
        path = files[idx]
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        family = _family(path)
        if digest in seen or family in seen:
            continue
        rgba = _load_object(path, rules)
        if rgba is None:
            continue
        seen |= {digest, family}
        usable.append((path, rgba, _source_cases(rgba)))
    chosen: list[int] = []
    for case, wanted in wants.items():
        chosen += [i for i, (_, _, cases) in enumerate(usable) if case in cases and i not in chosen][:wanted]
    chosen += [i for i in range(len(usable)) if i not in chosen][: max(0, count - len(chosen))]
    return [usable[i][:2] for i in sorted(chosen[:count])]


def _is_bust(rgba: np.ndarray) -> bool:
    """Cut straight at the lower edge: solid across a fair part of the bottom row."""
    return bool((rgba[-1, :, 3] > 127).mean() > 0.15)


def select_objects(count: int, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """``count`` distinct usable objects (package, name, RGBA), two thirds portraits, in a seeded order."""
    rng = np.random.default_rng(seed + 1_000_003)
    portraits, icons = _portrait_files(), _icon_files()
    if not portraits or not icons:
        sys.exit(f"portraits or icons missing; install them: {APT_HINT}")
    n_portraits = round(count * PORTRAIT_SHARE)
    wants = {"specks": round(0.1 * n_portraits), "thin": round(0.5 * n_portraits)}
    picked = [("wesnoth-1.16-data", p, a) for p, a in _pick(portraits, PORTRAIT_FILTER, n_portraits, rng, wants)]
    n_icons = count - len(picked)
    picked += [("oxygen-icon-theme", p, a) for p, a in _pick(icons, ICON_FILTER, n_icons, rng, {"specks": 2})]
    if len(picked) < count:
        sys.exit(f"only {len(picked)} usable objects found; need {count}")
    order = rng.permutation(len(picked))
    return [(picked[i][0], f"{picked[i][1].parent.name}/{picked[i][1].name}", picked[i][2]) for i in order]


# ---------------------------------------------------------------------------- backgrounds


def _largest_image(folder: Path) -> Path:
    """A Plasma wallpaper's largest size (by pixels; the file names do not always say it)."""
    def pixels(p: Path) -> tuple[int, str]:
        with Image.open(p) as im:
            return im.size[0] * im.size[1], p.name
    return max(sorted(folder.glob("*.*")), key=pixels)


def load_backgrounds() -> list[tuple[str, np.ndarray]]:
    found = []
    paths = [(f"plasma/{n}", PLASMA_ROOT / n / "contents" / "images") for n in (*PLASMA_PHOTOS, *PLASMA_GRAPHICS)]
    paths += [(f"lomiri/{n}", LOMIRI_ROOT / n) for n in (*LOMIRI_PHOTOS, *LOMIRI_GRAPHICS)]
    for name, path in paths:
        if path.is_dir() and any(path.iterdir()):
            path = _largest_image(path)
        if not path.is_file():
            continue
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        long_side = max(rgb.shape[:2])
        if long_side > BACKGROUND_LONG_SIDE:
            f = BACKGROUND_LONG_SIDE / long_side
            rgb = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        found.append((name, rgb))
    if len(found) < len(paths):
        sys.exit(f"background photographs missing ({len(found)} of {len(paths)} found); install them: {APT_HINT}")
    return found


# ---------------------------------------------------------------------------- the set


def build(out: Path, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Sample]:
    started = time.perf_counter()
    backgrounds = load_backgrounds()
    objects = select_objects(count, seed)
    plain = [(name, rgba) for _, name, rgba in objects]
    print(f"{len(backgrounds)} backgrounds, {len(objects)} objects ({time.perf_counter() - started:.1f} s)")

    def make(index: int, sample_seed: int):  # type: ignore[no-untyped-def]
        source, _, rgba = objects[index]
        bust = source.startswith("wesnoth") and _is_bust(rgba)
        sample, image, gt, fg, shadow = make_sample(
            index, sample_seed, plain, backgrounds, max_upscale=MAX_UPSCALE, bust=bust
        )
        fields = {**asdict(sample), "split": "other"}
        other = OtherSample(**fields, source=source, bust=bust, **structure(gt))  # type: ignore[arg-type]
        return other, image, gt, fg, shadow

    samples = write_set(out, count, seed, make, extra={"part": "other-sources"})
    cases = [structure_cases(asdict(s)) for s in samples]
    print("structure cases: " + ", ".join(
        f"{name} {sum(name in c for c in cases)}" for name in ("holes", "thin", "specks")
    ) + f", any {sum(bool(c) for c in cases)}, none {sum(not c for c in cases)}")
    return samples
