"""Fast loop for working on ``segmentation/alpha.py``: cached saliency, no rembg.

    python -m benchmarks.quality.tune [--data .bench/quality] [--split tune|heldout|all] [--extra-passes flip,zoom]

(with ``-uncertain`` passes it also prints how many images got the extra views.)

The model's saliency does not change while one tunes mask-to-alpha, so it is
computed once per image (``cache/NNNN.npy``) and only ``saliency_to_alpha`` (plus
the foreground colour estimate) runs again. The decode path mirrors the engine's:
a reduced decode for the working image and a full one for the output.
With ``--extra-passes`` the extra model runs (``segmentation.passes``) are cached
as well (``NNNN.flip.npy``, ``NNNN.aspect-352x256.npy``, ``NNNN.aspect-352x256.flip.npy``,
``NNNN.zoom-<window>.npy`` and its views) and merged as the engine does (the photo's own
aspect first). Without them the square view alone is scored, not the engine's one pass
(``quality=fast`` runs the aspect view; ``python -m benchmarks.quality.views --plans 5``).
Tune on the even seeds; look at the odd ones only to report.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .metrics import LABELS, METRICS, aggregate, score_image

WORK_SIDE = 1024


@dataclass
class Item:
    sample: dict
    saliency: np.ndarray
    work: np.ndarray
    full: np.ndarray
    gt: np.ndarray
    fg: np.ndarray
    shadow: np.ndarray | None
    # Extra model passes (``segmentation.passes``), cached like the first one, by
    # view (``VIEW_NAMES``; mirrored maps not yet mirrored back): "flip", "aspect",
    # "aspect.flip"; "zoom" (the map of the crop ``window``) and its "zoom-<view>".
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    window: object | None = None  # segmentation.passes.Window


def _decode_pair(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The working and the full-size image, as the engine makes them (a JPEG's working size is a DCT scale)."""
    from segmentation.decode import ImageLimits, decode, probe
    from segmentation.preprocess import working_size

    info = probe(data, ImageLimits())
    size = (info.width, info.height)
    work_size = working_size(info.width, info.height, WORK_SIDE, jpeg=info.format == "jpeg")
    full = decode(data, info).rgb
    if info.format == "jpeg":
        work = decode(data, info, min_size=work_size).rgb
    else:
        work = full
    if (work.shape[1], work.shape[0]) != work_size:
        work = cv2.resize(work, work_size, interpolation=cv2.INTER_AREA)
    assert (full.shape[1], full.shape[0]) == size
    return work, full


# What the cached maps depend on besides the image, the model and the view: the working
# size (maps cached under the earlier rule, fit within 1024 px, are dropped).
_CACHE_RECIPE = {"work_size": "as the engine: a JPEG's DCT scale just under 1024 px, else fit within 1024"}


def _cache_dir(cache: Path) -> Path:
    stamp = cache / "recipe.json"
    if cache.is_dir() and (not stamp.is_file() or json.loads(stamp.read_text()) != _CACHE_RECIPE):
        for stale in cache.glob("*.npy"):
            stale.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(_CACHE_RECIPE))
    return cache


class _LazyModel:
    """The model as the server builds it, loaded on first use only (a warm cache never needs it)."""

    def __init__(self, precision: str) -> None:
        self._precision = precision
        self._model = None

    def __call__(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        from segmentation.preprocess import to_model_input

        if self._model is None:
            from api.app import build_model
            from api.settings import Settings

            self._model = build_model(Settings(model="u2netp", model_precision=self._precision))  # type: ignore[arg-type]
        return self._model.predict(to_model_input(np.ascontiguousarray(rgb), self._model.preset, size)[None])[0]


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if path.exists():
        return np.load(path)
    value = compute()
    np.save(path, value)
    return value


# Cache names of the extra views (``segmentation.passes.View``: aspect, mirrored).
VIEW_NAMES = {(False, True): "flip", (True, False): "aspect", (True, True): "aspect.flip"}


def _view_maps(
    cache: Path, tag: str, rgb: np.ndarray, model: Callable[..., np.ndarray], aspect_scale: float
) -> dict[str, np.ndarray]:
    """Every extra view's map of ``rgb`` (mirrored ones as the model gave them).

    The aspect views are cached by their input size (``NNNN.aspect-352x256.npy``): views
    at another ``aspect_scale`` are other files.
    """
    from segmentation.preprocess import aspect_view_size

    size = aspect_view_size(rgb.shape[1], rgb.shape[0], 320, aspect_scale)  # 320: u2netp's input
    maps = {}
    for (aspect, mirrored), name in VIEW_NAMES.items():
        if aspect and size is None:
            continue  # the engine skips it too: the square view is the photo's aspect
        seen = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
        file = name.replace("aspect", f"aspect-{size[0]}x{size[1]}") if aspect and size else name
        maps[name] = _cached(cache / f"{tag}.{file}.npy", lambda: model(seen, size if aspect else None))
    return maps


def add_passes(  # type: ignore[no-untyped-def]
    item: Item, cache: Path, model: Callable[..., np.ndarray], zoom=None, aspect_scale: float | None = None
) -> None:
    """Cache and attach the extra passes' maps; ``zoom`` is a ``passes.ZoomParams``.

    ``aspect_scale``: the aspect views' side (``preprocess.aspect_view_size``), the engine's by default.
    """
    from segmentation.passes import ZoomParams, crop, zoom_window
    from segmentation.preprocess import ASPECT_SCALE

    zoom = zoom or ZoomParams()
    aspect_scale = ASPECT_SCALE if aspect_scale is None else aspect_scale
    key = item.sample["id"]
    item.extra.update(_view_maps(cache, key, item.work, model, aspect_scale))
    work_size = (item.work.shape[1], item.work.shape[0])
    item.window = zoom_window(item.saliency, work_size, zoom)
    if item.window is None:
        return
    w = item.window
    tag = f"{key}.zoom-{w.left}-{w.top}-{w.right}-{w.bottom}"
    item.extra["zoom"] = _cached(cache / f"{tag}.npy", lambda: model(crop(item.work, w)))
    crop_maps = _view_maps(cache, tag, crop(item.work, w), model, aspect_scale)
    item.extra.update({f"zoom-{k}": v for k, v in crop_maps.items()})


def _merged_views(square: np.ndarray, maps: dict[str, np.ndarray], passes: tuple[str, ...]) -> np.ndarray:
    """As ``ClipEngine._saliency`` merges: the planned views, the later ones only when unsure.

    ``square`` is the square view's map; ``maps`` the other views' (``VIEW_NAMES``).
    """
    from segmentation.passes import is_unsure, merge_views, plan_views

    now, later = plan_views(passes)  # type: ignore[arg-type]
    # The engine sees the photo's own aspect first where it has one (``EngineConfig.aspect_first``).
    aspect_first = "aspect" in maps
    found = {**maps, "square": square}
    first = maps["aspect"] if aspect_first else square
    views = now + (later if later and is_unsure(first) else [])
    names = [VIEW_NAMES.get((v.at_aspect(aspect_first), v.mirrored), "square") for v in views]
    return merge_views([first, *(found[n][..., ::-1] if n.endswith("flip") else found[n] for n in names if n in found)])


def merged_saliency(item: Item, passes: tuple[str, ...], zoom=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The map the engine would hand to ``refine_alpha`` with these extra passes.

    One difference: the zoom window comes from the plain first pass even with other
    views (the engine boxes the merged map), so the cache serves every combination;
    ``python -m benchmarks.quality --extra-passes`` gives the exact figures.
    """
    from segmentation.passes import ZoomParams, zoom_merge

    zoom = zoom or ZoomParams()
    saliency = _merged_views(item.saliency, item.extra, passes)
    if "zoom" not in passes or item.window is None:
        return saliency
    crop_maps = {k.removeprefix("zoom-"): v for k, v in item.extra.items() if k.startswith("zoom-")}
    zoomed = _merged_views(item.extra["zoom"], crop_maps, passes)
    work_size = (item.work.shape[1], item.work.shape[0])
    return zoom_merge(saliency, zoomed, item.window, work_size, item.saliency.shape[-1], zoom)


def load(
    data_dir: Path, split: str = "tune", limit: int | None = None, passes: bool = False, zoom=None,  # type: ignore[no-untyped-def]
    precision: str = "int8", aspect_scale: float | None = None,
) -> list[Item]:
    """The split's items with their model maps, cached under ``cache/<precision>/``.

    ``precision``: int8 is what a CPU server runs (``ARCLIP_MODEL_PRECISION=auto``);
    ``aspect_scale``: the aspect views' side (``add_passes``).
    """
    samples = json.loads((data_dir / "manifest.json").read_text())["samples"]
    if split != "all":
        samples = [s for s in samples if s["split"] == split]
    samples = samples[:limit] if limit else samples
    cache = _cache_dir(data_dir / "cache" / precision)
    model = _LazyModel(precision)
    items = []
    for s in samples:
        data = (data_dir / s["image"]).read_bytes()
        work, full = _decode_pair(data)
        saliency = _cached(cache / f"{s['id']}.npy", lambda: model(work))
        gt = np.asarray(Image.open(data_dir / s["gt"]).convert("L"))
        fg = np.asarray(Image.open(data_dir / s["fg"]).convert("RGB"))
        shadow = None
        if s["shadow"] != "none":
            shadow = np.asarray(Image.open(data_dir / s["shadow_map"]).convert("L"))
        item = Item(s, saliency, work, full, gt, fg, shadow)
        if passes:
            add_passes(item, cache, model, zoom, aspect_scale)
        items.append(item)
    return items


# A pipeline: (saliency, work_rgb, full_rgb) -> (alpha, rgb for the cut-out)
Pipeline = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def default_pipeline(saliency: np.ndarray, work: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the engine does: alpha, then the foreground colour of its soft pixels."""
    from segmentation.alpha import refine_alpha
    from segmentation.matting import estimate_foreground

    alpha, work_alpha = refine_alpha(saliency, work, full)
    return alpha, estimate_foreground(full, alpha, work, work_alpha)


def _score(args):  # type: ignore[no-untyped-def]
    alpha, rgb, gt, fg, shadow, image = args
    return score_image(alpha, gt, rgb, fg, shadow, image)


def evaluate(items: list[Item], pipeline: Pipeline = default_pipeline, workers: int = 2, quiet: bool = False):  # type: ignore[no-untyped-def]
    outputs, seconds = [], []
    for it in items:
        started = time.perf_counter()
        alpha, rgb = pipeline(it.saliency, it.work, it.full)
        seconds.append(time.perf_counter() - started)
        outputs.append((alpha, rgb, it.gt, it.fg, it.shadow, it.full))
    # Spawned, not forked: the model's threads may hold allocator locks at fork time.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        scores = list(pool.map(_score, outputs, chunksize=2))
    result = aggregate(scores)
    if not quiet:
        print("  ".join(f"{m}={result[m]:.4f}" for m in METRICS), f"| {np.median(seconds) * 1000:.0f} ms")
    return result, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.tune")
    parser.add_argument("--data", type=Path, default=Path(".bench/quality"))
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="tune")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="int8: what a CPU server runs")
    parser.add_argument(
        "--extra-passes", default="", help="as ARCLIP_EXTRA_PASSES, e.g. flip-uncertain,aspect-uncertain (model runs cached too)"
    )
    args = parser.parse_args(argv)
    from segmentation.passes import parse_passes

    passes = parse_passes(args.extra_passes)
    items = load(args.data, args.split, args.limit, passes=bool(passes), precision=args.precision)
    if any(p.endswith("-uncertain") for p in passes):
        from segmentation.passes import is_unsure

        unsure = sum(is_unsure(item.extra.get("aspect", item.saliency)) for item in items)  # the first view's map
        print(f"-uncertain passes: extra views on {unsure}/{len(items)} images ({unsure / max(len(items), 1):.0%})")
    for item in items:
        if passes:
            item.saliency = merged_saliency(item, passes)
    result, _ = evaluate(items)
    for m in METRICS:
        print(f"  {LABELS[m]:<20} {result[m]:.4f}")


if __name__ == "__main__":
    main()
