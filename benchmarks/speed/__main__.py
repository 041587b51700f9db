"""``python -m benchmarks.speed``: see the package docstring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as DOC
from .run import main


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8, help="distinct test images (default 8)")
    parser.add_argument("--size", type=_size, default=(4032, 3024), help="stored JPEG size WxH (default 4032x3024)")
    parser.add_argument("--requests", type=int, default=16, help="measured requests per server at c=1 (default 16)")
    parser.add_argument(
        "--requests-concurrent", type=int, default=24, help="measured requests per server at c>1 (default 24)"
    )
    parser.add_argument("--concurrency", type=_ints, default=[1, 4], help="comma list (default 1,4)")
    parser.add_argument("--servers", type=_names, default=["ours", "rembg"], help="comma list of ours,rembg")
    parser.add_argument(
        "--sets", type=_names, default=["unsure", "sure", "mix"],
        help="photo sets (default unsure,sure,mix: every photo, none, or the quality set's share gets the "
        "CPU default's extra views; blobs: the earlier procedural photos)",
    )
    parser.add_argument(
        "--qualities", type=_names, default=["fast", "balanced", "best"], help="our quality= settings to run"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison, alternating order, pooled")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests after each start (default 2)")
    parser.add_argument("--soak", type=int, default=0, help="memory soak: this many requests instead of the comparison")
    parser.add_argument("--soak-size", type=_size, default=(1632, 1224), help="soak JPEG size (default 1632x1224, 2 MP)")
    parser.add_argument("--soak-concurrency", type=int, default=4)
    parser.add_argument("--soak-every", type=int, default=50, help="RSS sample every N requests (default 50)")
    parser.add_argument("--soak-servers", type=_names, default=["ours"], help="servers to soak (default ours)")
    parser.add_argument("--profile", action="store_true", help="in-process stage timings of our pipeline, then exit")
    parser.add_argument("--port-ours", type=int, default=0, help="loopback port (default: a free one)")
    parser.add_argument("--port-rembg", type=int, default=0, help="loopback port (default: a free one)")
    parser.add_argument("--rembg-venv", type=Path, default=Path(".bench/rembg"))
    parser.add_argument("--out", type=Path, default=Path(".bench/speed"), help="images, logs, results")
    parser.add_argument("--json", type=Path, default=None, help="results file (default OUT/results.json)")
    args = parser.parse_args(argv)
    args.width, args.height = args.size
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
