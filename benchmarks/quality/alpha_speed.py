"""Time mask-to-alpha and the foreground-colour pass on 12 MP photos.

    python -m benchmarks.quality.alpha_speed [--data .bench/quality] [--images 8] [--threads N]

Each image of the quality set is upscaled to 4032x3024 (a phone photo; portrait
ones to 3024x4032) with a 1008x756 working copy, and the model's saliency comes
from the set's cache (``python -m benchmarks.quality.tune`` fills it) or, without
the set, a synthetic photo and map are used. Prints wall-clock and CPU time per
stage: the minimum of 5 runs per image, then the median over images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np


def _inputs(data: Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    manifest = data / "manifest.json"
    found = []
    if manifest.exists():
        from .tune import _decode_pair

        for sample in json.loads(manifest.read_text())["samples"]:
            cached = data / "cache" / f"{sample['id']}.npy"
            if not cached.exists():
                continue
            _, full = _decode_pair((data / sample["image"]).read_bytes())
            size = (4032, 3024) if full.shape[1] >= full.shape[0] else (3024, 4032)
            full = cv2.resize(full, size, interpolation=cv2.INTER_CUBIC)
            found.append((sample["id"], np.load(cached), full))
            if len(found) == count:
                break
    if not found:
        yy, xx = np.mgrid[0:3024, 0:4032].astype(np.float32)
        inside = np.clip(0.5 - (np.hypot(yy - 1500, xx - 2000) - 1100) / 3, 0, 1)[:, :, None]
        full = (inside * [200, 40, 30] + (1 - inside) * [60, 150, 80]).astype(np.uint8)
        saliency = cv2.GaussianBlur(cv2.resize(inside[:, :, 0], (320, 320), interpolation=cv2.INTER_AREA), (0, 0), 2)
        found.append(("synthetic", saliency, full))
    return [
        (name, sal, full, cv2.resize(full, (full.shape[1] // 4, full.shape[0] // 4), interpolation=cv2.INTER_AREA))
        for name, sal, full in found
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.alpha_speed")
    parser.add_argument("--data", type=Path, default=Path(".bench/quality"))
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="OpenCV threads (default: OpenCV's own)")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)

    from segmentation.alpha import refine_alpha
    from segmentation.matting import estimate_foreground

    rows = []
    for name, saliency, full, work in _inputs(args.data, args.images):
        refine_alpha(saliency, work, full)  # warm-up
        runs = []
        for _ in range(5):
            rgb = full.copy()
            c0, t0 = time.process_time(), time.perf_counter()
            alpha, work_alpha = refine_alpha(saliency, work, rgb)
            c1, t1 = time.process_time(), time.perf_counter()
            estimate_foreground(rgb, alpha, work, work_alpha, inplace=True)
            c2, t2 = time.process_time(), time.perf_counter()
            runs.append((t1 - t0, c1 - c0, t2 - t1, c2 - c1))
        best = np.min(np.array(runs), axis=0) * 1000
        rows.append(best)
        print(f"  {name}: alpha {best[0]:.1f} ms (cpu {best[1]:.1f}), foreground {best[2]:.1f} ms (cpu {best[3]:.1f})")
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(
        f"median over {len(rows)} images, {full.shape[1]}x{full.shape[0]} out, {work.shape[1]}x{work.shape[0]} work, "
        f"{cv2.getNumThreads()} OpenCV threads: saliency_to_alpha {med[0]:.1f} ms (cpu {med[1]:.1f}), "
        f"estimate_foreground {med[2]:.1f} ms (cpu {med[3]:.1f}), total {med[0] + med[2]:.1f} ms"
    )


if __name__ == "__main__":
    main()
