"""Fast loop for working on ``segmentation/alpha.py``: cached saliency, no rembg.

    python -m benchmarks.quality.tune [--data .bench/quality] [--split tune|heldout|all] [--extra-passes flip,zoom]

(``--extra-passes flip-uncertain`` also prints how many images got the mirrored run.)

The model's saliency does not change while one tunes mask-to-alpha, so it is
computed once per image (``cache/NNNN.npy``) and only ``saliency_to_alpha`` (plus
the foreground colour estimate) runs again. The decode path mirrors the engine's:
a reduced decode for the working image and a full one for the output.
With ``--extra-passes`` the extra model runs (``segmentation.passes``) are cached
as well (``NNNN.flip.npy``, ``NNNN.zoom-<window>.npy``) and merged as the engine does.
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
    # Extra model passes (``segmentation.passes``), cached like the first one:
    # "flip" (the mirrored photo's map, not yet mirrored back), "zoom" (the map of
    # the crop ``window``) and "zoom-flip" (the mirrored crop's).
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    window: object | None = None  # segmentation.passes.Window


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    from segmentation.preprocess import fit_within

    return fit_within(width, height, side)


def _decode_pair(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    from segmentation.decode import ImageLimits, decode, probe

    info = probe(data, ImageLimits())
    size = (info.width, info.height)
    work_size = _fit(info.width, info.height, WORK_SIDE)
    full = decode(data, info).rgb
    if info.format == "jpeg":
        work = decode(data, info, min_size=work_size).rgb
    else:
        work = full
    if (work.shape[1], work.shape[0]) != work_size:
        work = cv2.resize(work, work_size, interpolation=cv2.INTER_AREA)
    assert (full.shape[1], full.shape[0]) == size
    return work, full


class _LazyModel:
    """The model, loaded on first use only (a warm cache never needs it)."""

    def __init__(self) -> None:
        self._model = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from segmentation.preprocess import to_model_input

        if self._model is None:
            from segmentation import OnnxModel, resolve_model

            self._model = OnnxModel(resolve_model("u2netp"))
        return self._model.predict(to_model_input(np.ascontiguousarray(rgb), self._model.preset)[None])[0]


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if path.exists():
        return np.load(path)
    value = compute()
    np.save(path, value)
    return value


def add_passes(item: Item, cache: Path, model: Callable[[np.ndarray], np.ndarray], zoom=None) -> None:  # type: ignore[no-untyped-def]
    """Cache and attach the extra passes' maps; ``zoom`` is a ``passes.ZoomParams``."""
    from segmentation.passes import ZoomParams, crop, zoom_window

    zoom = zoom or ZoomParams()
    key = item.sample["id"]
    item.extra["flip"] = _cached(cache / f"{key}.flip.npy", lambda: model(item.work[:, ::-1]))
    work_size = (item.work.shape[1], item.work.shape[0])
    item.window = zoom_window(item.saliency, work_size, zoom)
    if item.window is None:
        return
    w = item.window
    tag = f"{key}.zoom-{w.left}-{w.top}-{w.right}-{w.bottom}"
    item.extra["zoom"] = _cached(cache / f"{tag}.npy", lambda: model(crop(item.work, w)))
    item.extra["zoom-flip"] = _cached(cache / f"{tag}.flip.npy", lambda: model(crop(item.work, w)[:, ::-1]))


def merged_saliency(item: Item, passes: tuple[str, ...], zoom=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The map the engine would hand to ``refine_alpha`` with these extra passes.

    One difference: the zoom window comes from the plain first pass even with
    "flip" (the engine boxes the flip-averaged map), so the cache serves every
    combination; ``python -m benchmarks.quality --extra-passes`` gives the exact figures.
    """
    from segmentation.passes import ZoomParams, flip_merge, flip_needed, zoom_merge

    zoom = zoom or ZoomParams()

    def flip(first: np.ndarray) -> bool:  # as the engine decides, per model run
        return "flip" in passes or ("flip-uncertain" in passes and flip_needed(first))

    saliency = flip_merge(item.saliency, item.extra["flip"]) if flip(item.saliency) else item.saliency
    if "zoom" not in passes or item.window is None:
        return saliency
    zoomed = item.extra["zoom"]
    zoomed = flip_merge(zoomed, item.extra["zoom-flip"]) if flip(zoomed) else zoomed
    work_size = (item.work.shape[1], item.work.shape[0])
    return zoom_merge(saliency, zoomed, item.window, work_size, item.saliency.shape[-1], zoom)


def load(
    data_dir: Path, split: str = "tune", limit: int | None = None, passes: bool = False, zoom=None  # type: ignore[no-untyped-def]
) -> list[Item]:
    samples = json.loads((data_dir / "manifest.json").read_text())["samples"]
    if split != "all":
        samples = [s for s in samples if s["split"] == split]
    samples = samples[:limit] if limit else samples
    cache = data_dir / "cache"
    cache.mkdir(exist_ok=True)
    model = None
    extra_model = _LazyModel()
    items = []
    for s in samples:
        data = (data_dir / s["image"]).read_bytes()
        work, full = _decode_pair(data)
        path = cache / f"{s['id']}.npy"
        if path.exists():
            saliency = np.load(path)
        else:
            if model is None:
                from segmentation import OnnxModel, resolve_model

                model = OnnxModel(resolve_model("u2netp"))
            from segmentation.preprocess import to_model_input

            saliency = model.predict(to_model_input(work, model.preset)[None])[0]
            np.save(path, saliency)
        gt = np.asarray(Image.open(data_dir / s["gt"]).convert("L"))
        fg = np.asarray(Image.open(data_dir / s["fg"]).convert("RGB"))
        shadow = None
        if s["shadow"] != "none":
            shadow = np.asarray(Image.open(data_dir / s["shadow_map"]).convert("L"))
        item = Item(s, saliency, work, full, gt, fg, shadow)
        if passes:
            add_passes(item, cache, extra_model, zoom)
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
    parser.add_argument(
        "--extra-passes", default="", help="flip, flip-uncertain, zoom or e.g. flip,zoom (model runs cached too)"
    )
    args = parser.parse_args(argv)
    from segmentation.passes import parse_passes

    passes = parse_passes(args.extra_passes)
    items = load(args.data, args.split, args.limit, passes=bool(passes))
    if "flip-uncertain" in passes:
        from segmentation.passes import flip_needed

        flipped = sum(flip_needed(item.saliency) for item in items)
        print(f"flip-uncertain: mirrored run on {flipped}/{len(items)} images ({flipped / max(len(items), 1):.0%})")
    for item in items:
        if passes:
            item.saliency = merged_saliency(item, passes)
    result, _ = evaluate(items)
    for m in METRICS:
        print(f"  {LABELS[m]:<20} {result[m]:.4f}")


if __name__ == "__main__":
    main()
