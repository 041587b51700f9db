"""Photos the CPU default is unsure of, and photos it is sure of: the speed benchmark's worst case and its best.

The CPU default (``flip-uncertain,aspect-flip-uncertain``) runs two more model views
on a photo whose first map is unsure (``segmentation.passes.is_unsure``), so its
speed depends on the share of such photos. These sets fix that share: 12 MP
phone-like JPEGs composited like ``benchmarks/quality``'s images (a clip-art
object from ``openclipart-png`` with a cast shadow over a defocused photograph,
noise, EXIF-rotated portraits) but at phone size and from other objects and seeds,
then sorted by what the server's own engine does with them: "unsure" photos get
the extra views, "sure" ones do not. "mix" takes the quality set's share of unsure
photos (30 %) and fills the rest with sure ones.

Deterministic (seeded) and cached under ``OUT/sets_WxH/`` while the recipe is unchanged.
Needs ``apt-get install openclipart-png mate-backgrounds gnome-backgrounds``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.quality import build as composites

# 2: sorted by the engine that sees the photo at its own aspect first; 3: by a faster int8 graph
# (both edits, one since dropped); 4: by int8 recipe 3 (the one-channel convolutions split)
_RECIPE_VERSION = 4
QUALITY_SET_UNSURE_SHARE = 0.30  # of benchmarks/quality's 180 images, the aspect view first (quality README)
DEFAULT_PASSES = "flip-uncertain,aspect-flip-uncertain"


def render(index: int, seed: int, obj: np.ndarray, backgrounds: list[tuple[str, np.ndarray]], size: tuple[int, int]) -> bytes:
    """One phone JPEG: the quality benchmark's compositing, at ``size`` (stored), every third a portrait (EXIF 6)."""
    rng = np.random.default_rng(seed)
    width, height = size
    portrait = index % 3 == 2
    displayed = (height, width) if portrait else (width, height)
    _, photo = backgrounds[int(rng.integers(len(backgrounds)))]
    background = composites._background_crop(rng, photo, displayed)
    defocus = float(rng.uniform(2.0, 12.0)) if rng.random() < 0.6 else 0.0  # the quality set's 1-6 px, at 12 MP
    if defocus:
        background = composites.cv2.GaussianBlur(background, (0, 0), defocus)
    colour, alpha = composites._place_object(rng, obj, displayed)
    if rng.random() < 0.5:
        shadow, _ = composites._cast_shadow(rng, alpha)
        background = background * (1.0 - shadow[:, :, None] * np.array([1.0, 0.96, 0.88], np.float32))
    image = colour + (1.0 - alpha[:, :, None]) * background
    del colour, alpha, background
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 5.0))
    img = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8))
    del image
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    exif[0x0110] = "iPhone 13 (arclip benchmark)"
    exif[0x0112] = 6 if portrait else 1
    if portrait:
        img = img.transpose(Image.Transpose.ROTATE_90)  # stored landscape; tag 6 turns it upright
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90, subsampling=2, exif=exif.tobytes())
    return buffer.getvalue()


def _extra_views_ran(paths: list[Path]) -> list[bool]:
    """Whether the server's engine (CPU default passes, int8 model) adds views for each photo."""
    from api.app import build_engine
    from api.settings import Settings
    from segmentation import ClipOptions

    async def go() -> list[bool]:
        with tempfile.TemporaryDirectory(prefix="arclip-sets-") as data_dir:
            settings = Settings(
                _env_file=None, data_dir=Path(data_dir), extra_passes=DEFAULT_PASSES, load_aware_passes=False,
                model_cache_dir=Path(".bench/speed/model-cache"),
            )
            engine = build_engine(settings)
            await engine.start()
            try:
                verdicts = []
                for path in paths:
                    result = await engine.clip(path.read_bytes(), ClipOptions(channels="alpha"))
                    verdicts.append(result.passes != ("base",))
                return verdicts
            finally:
                await engine.close()

    return asyncio.run(go())


def ensure_sets(out: Path, count: int, width: int, height: int, seed: int = 9001) -> dict[str, list[Path]]:
    """``count`` unsure and ``count`` sure photos, and the mix; rendered and sorted once, then reused."""
    folder = out / f"sets_{width}x{height}"
    recipe = {"version": _RECIPE_VERSION, "count": count, "size": [width, height], "seed": seed,
              "passes": DEFAULT_PASSES}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    manifest = folder / "manifest.json"
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("digest") == digest and all((folder / n).is_file() for n in saved["unsure"] + saved["sure"]):
            return _sets(folder, saved["unsure"], saved["sure"])
    folder.mkdir(parents=True, exist_ok=True)
    backgrounds = composites.load_backgrounds()
    candidates = 6 * count
    objects = composites.select_objects(candidates, seed)
    unsure: list[str] = []
    sure: list[str] = []
    print(f"sorting 12 MP composites into unsure/sure by the engine's own first map (up to {candidates}) ...", flush=True)
    for start in range(0, candidates, 4):
        batch = []
        for index in range(start, min(start + 4, candidates)):
            path = folder / f"c{index:03d}.jpg"
            path.write_bytes(render(index, seed + index, objects[index][1], backgrounds, (width, height)))
            batch.append(path)
        for path, more in zip(batch, _extra_views_ran(batch)):
            kind = unsure if more else sure
            if len(kind) < count:
                kind.append(path.name)
            else:
                path.unlink()
        print(f"  {start + len(batch)} rendered: {len(unsure)} unsure, {len(sure)} sure", flush=True)
        if len(unsure) >= count and len(sure) >= count:
            break
    if len(unsure) < count or len(sure) < count:
        raise SystemExit(f"only {len(unsure)} unsure and {len(sure)} sure photos in {candidates}; need {count} of each")
    manifest.write_text(json.dumps({"digest": digest, "recipe": recipe, "unsure": unsure, "sure": sure}, indent=1))
    return _sets(folder, unsure, sure)


def _sets(folder: Path, unsure: list[str], sure: list[str]) -> dict[str, list[Path]]:
    count = len(unsure)
    share = round(QUALITY_SET_UNSURE_SHARE * count)
    # Interleaved, so a round-robin run meets the unsure ones spread out, as real traffic would.
    mix = [folder / n for n in unsure[:share]] + [folder / n for n in sure[: count - share]]
    order = np.argsort([(i * 7919) % count for i in range(count)], kind="stable")
    return {
        "unsure": [folder / n for n in unsure],
        "sure": [folder / n for n in sure],
        "mix": [mix[i] for i in order],
    }
