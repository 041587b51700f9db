"""Fast loop for working on ``segmentation/alpha.py``: cached saliency, no rembg.

    python -m benchmarks.quality.tune [--data .bench/quality] [--split tune|heldout|all]

The model's saliency does not change while one tunes mask-to-alpha, so it is
computed once per image (``cache/NNNN.npy``) and only ``saliency_to_alpha`` (plus
the foreground colour estimate) runs again. The decode path mirrors the engine's:
a reduced decode for the working image and a full one for the output.
Tune on the even seeds; look at the odd ones only to report.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
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


def load(data_dir: Path, split: str = "tune", limit: int | None = None) -> list[Item]:
    samples = json.loads((data_dir / "manifest.json").read_text())["samples"]
    if split != "all":
        samples = [s for s in samples if s["split"] == split]
    samples = samples[:limit] if limit else samples
    cache = data_dir / "cache"
    cache.mkdir(exist_ok=True)
    model = None
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
        items.append(Item(s, saliency, work, full, gt, fg, shadow))
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
    with ProcessPoolExecutor(workers) as pool:
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
    args = parser.parse_args(argv)
    items = load(args.data, args.split, args.limit)
    result, _ = evaluate(items)
    for m in METRICS:
        print(f"  {LABELS[m]:<20} {result[m]:.4f}")


if __name__ == "__main__":
    main()
