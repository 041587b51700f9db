"""Per-image scores with pysodmetrics, and their aggregation over any subset of images.

Standard salient-object metrics, computed exactly as pysodmetrics computes them
(ground truth binarised at 128, prediction min-max normalised):

* ``sm``  S-measure (structure), higher is better;
* ``mae`` mean absolute error, lower is better;
* ``maxf`` max F-measure (beta² = 0.3): the F-curve averaged over images, then its maximum;
* ``wfm`` weighted F-measure, higher is better.

Plus one of ours, because a cut-out is composited, not thresholded:

* ``halo`` background bleed on the object's rim: how far the cut-out's colours there
  lean from the object's true colour towards the old background's (0 none, 1 all;
  see ``background_bleed``). Lower is better.
* ``shadow_leak`` mean predicted alpha (0..1) where the object's cast shadow shows
  (shadow strength >= 15 %): how much shadow the cut-out keeps. Lower is better;
  only images with a shadow count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

METRICS = ("sm", "mae", "maxf", "wfm", "halo", "shadow_leak")
HIGHER_IS_BETTER = {"sm": True, "mae": False, "maxf": True, "wfm": True, "halo": False, "shadow_leak": False}
LABELS = {
    "sm": "S-measure",
    "mae": "MAE",
    "maxf": "max F-measure",
    "wfm": "weighted F-measure",
    "halo": "halo (bg bleed)",
    "shadow_leak": "shadow leak",
}


@dataclass
class ImageScore:
    sm: float
    mae: float
    wfm: float
    fcurve: np.ndarray  # (256,) F-measure at each threshold
    halo: float  # nan when no rim pixel is visible
    shadow_leak: float = float("nan")  # nan when the image has no cast shadow


def score_image(
    pred_alpha: np.ndarray,
    gt: np.ndarray,
    pred_rgb: np.ndarray | None,
    fg: np.ndarray | None,
    shadow: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> ImageScore:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import py_sod_metrics as sod

        sm, mae, wfm, fm = sod.Smeasure(), sod.MAE(), sod.WeightedFmeasure(), sod.Fmeasure()
        for metric in (sm, mae, wfm, fm):
            metric.step(pred=pred_alpha, gt=gt)
        curve = np.asarray(fm.get_results()["fm"]["curve"], dtype=np.float64)
        scores = ImageScore(
            sm=float(sm.get_results()["sm"]),
            mae=float(mae.get_results()["mae"]),
            wfm=float(wfm.get_results()["wfm"]),
            fcurve=curve,
            halo=float("nan"),
        )
    if pred_rgb is not None and fg is not None and image is not None:
        scores.halo = background_bleed(pred_alpha, pred_rgb, gt, fg, image)
    if shadow is not None:
        where = shadow >= 38
        if where.any():
            scores.shadow_leak = float(pred_alpha[where].mean() / 255.0)
    return scores


def background_bleed(pred_alpha: np.ndarray, pred_rgb: np.ndarray, gt: np.ndarray, fg: np.ndarray, image: np.ndarray) -> float:
    """How much of the old background's colour the cut-out's rim carries (0: none, 1: all).

    On the object's rim (within 3 px of the true edge, where the object is partly
    present), each visible cut-out colour is compared with the object's true colour F
    along the direction of the local background colour B (the photo's mean over nearby
    true-background pixels): t = (C - F)·(B - F) / |B - F|², clipped to 0..1, averaged
    with the predicted alpha as weight. Keeping the photo's mixed colour scores about
    1 - alpha there; a perfect foreground estimate scores 0.
    """
    solid = (gt > 128).astype(np.uint8)
    rim = cv2.morphologyEx(solid, cv2.MORPH_GRADIENT, np.ones((7, 7), np.uint8)) > 0
    band = rim & (pred_alpha >= 26) & (gt >= 13) & (gt <= 242)
    if not band.any():
        return float("nan")
    bg_w = (gt == 0).astype(np.float32)
    ksize = (31, 31)
    bg_sum = cv2.boxFilter(image.astype(np.float32) * bg_w[:, :, None], -1, ksize, normalize=False)
    bg_n = cv2.boxFilter(bg_w, -1, ksize, normalize=False)
    band &= bg_n > 0
    if not band.any():
        return float("nan")
    background = bg_sum[band] / bg_n[band][:, None]
    colour = pred_rgb[band].astype(np.float32)
    true = fg[band].astype(np.float32)
    d = background - true
    t = ((colour - true) * d).sum(axis=1) / np.maximum((d * d).sum(axis=1), 100.0)
    weight = pred_alpha[band].astype(np.float32)
    return float((np.clip(t, 0.0, 1.0) * weight).sum() / weight.sum())


def aggregate(scores: list[ImageScore]) -> dict[str, float]:
    if not scores:
        return {m: float("nan") for m in METRICS}
    halo = [s.halo for s in scores if not np.isnan(s.halo)]
    leak = [s.shadow_leak for s in scores if not np.isnan(s.shadow_leak)]
    return {
        "sm": float(np.mean([s.sm for s in scores])),
        "mae": float(np.mean([s.mae for s in scores])),
        "maxf": float(np.mean([s.fcurve for s in scores], axis=0).max()),
        "wfm": float(np.mean([s.wfm for s in scores])),
        "halo": float(np.mean(halo)) if halo else float("nan"),
        "shadow_leak": float(np.mean(leak)) if leak else float("nan"),
    }


def better(metric: str, ours: float, theirs: float) -> bool:
    if np.isnan(ours) or np.isnan(theirs):
        return False
    return ours > theirs if HIGHER_IS_BETTER[metric] else ours < theirs


def score_files(args: tuple[str, str, str, str | None, str]) -> ImageScore:
    """Score one cut-out file: (prediction, ground truth, true colour, shadow map or None, photo) paths."""
    pred_path, gt_path, fg_path, shadow_path, image_path = args
    gt = np.asarray(Image.open(gt_path).convert("L"))
    rgba = np.asarray(Image.open(pred_path).convert("RGBA"))
    fg = np.asarray(Image.open(fg_path).convert("RGB")) if Path(fg_path).exists() else None
    if rgba.shape[:2] != gt.shape:
        raise SystemExit(f"{pred_path}: {rgba.shape[1]}x{rgba.shape[0]}, ground truth {gt.shape[1]}x{gt.shape[0]}")
    shadow = np.asarray(Image.open(shadow_path).convert("L")) if shadow_path else None
    image = np.asarray(ImageOps.exif_transpose(Image.open(image_path)).convert("RGB"))
    return score_image(np.ascontiguousarray(rgba[:, :, 3]), gt, rgba[:, :, :3], fg, shadow, image)
