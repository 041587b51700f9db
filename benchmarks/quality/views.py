"""Which model views to run, at what cost: each candidate on both halves, from ``tune``'s cached maps.

    python -m benchmarks.quality.views [--data .bench/quality] [--precision int8]

Candidates are plans of views (``tune.VIEW_NAMES``: the square input, "flip", "aspect",
"aspect.flip") for every photo, and more for the photos whose first map is unsure
(``passes.is_unsure``). "main" is the view that runs first (and that the unsure rule
reads): the squeezed square, or the photo's own aspect ("aspect"; a square photo has
no other, so there it is the square). Cost: mean model runs per photo, counting a
416x320 run as 1.3 of a 320x320 one (its pixels). Scores: the four measures of
``metrics`` after the engine's mask-to-alpha, per half, against rembg's figures
from ``python -m benchmarks.quality`` (README, "Results").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import HIGHER_IS_BETTER
from .tune import evaluate, load

# rembg 2.0.86 on the same set (README): S-measure, MAE, max F, weighted F.
REMBG = {
    "tune": {"sm": 0.9145, "mae": 0.0305, "maxf": 0.8989, "wfm": 0.8632},
    "heldout": {"sm": 0.9208, "mae": 0.0422, "maxf": 0.9136, "wfm": 0.8784},
}
MEASURES = ("sm", "mae", "maxf", "wfm")


@dataclass(frozen=True)
class Plan:
    name: str
    main: str  # "square" or "aspect"
    always: tuple[str, ...] = ()  # more views for every photo
    unsure: tuple[str, ...] = ()  # more views where the main map is unsure


PLANS = (
    Plan("square only (fast)", "square"),
    Plan("default: square + flip,aspect,aspect.flip if unsure", "square", unsure=("flip", "aspect", "aspect.flip")),
    Plan("square + aspect if unsure", "square", unsure=("aspect",)),
    Plan("square + aspect,aspect.flip if unsure", "square", unsure=("aspect", "aspect.flip")),
    Plan("square + aspect for all", "square", always=("aspect",)),
    Plan("aspect only", "aspect"),
    Plan("aspect + square if unsure", "aspect", unsure=("square",)),
    Plan("aspect + aspect.flip if unsure", "aspect", unsure=("aspect.flip",)),
    Plan("aspect + square,flip if unsure", "aspect", unsure=("square", "flip")),
    Plan("aspect + square,flip,aspect.flip if unsure", "aspect", unsure=("square", "flip", "aspect.flip")),
)
COST = {"square": 1.0, "flip": 1.0, "aspect": 1.3, "aspect.flip": 1.3}


def _view(item, name: str) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    if name == "square":
        return item.saliency
    found = item.extra.get(name)
    if found is None:
        return None  # a square photo has no aspect view
    return found[..., ::-1] if name.endswith("flip") else found


def plan_saliency(item, plan: Plan) -> tuple[np.ndarray, float, bool]:  # type: ignore[no-untyped-def]
    """The merged map, its cost in square-run units, and whether the unsure views ran."""
    from segmentation.passes import is_unsure, merge_views

    main = _view(item, plan.main)
    main_name = plan.main if main is not None else "square"
    main = main if main is not None else item.saliency
    names = [n for n in plan.always if n != main_name]
    unsure = bool(plan.unsure) and is_unsure(main)
    if unsure:
        names += [n for n in plan.unsure if n != main_name and n not in names]
    maps = [(n, _view(item, n)) for n in names]
    maps = [(n, m) for n, m in maps if m is not None]
    cost = COST[main_name] + sum(COST[n] for n, _ in maps)
    return merge_views([main, *(m for _, m in maps)]), cost, unsure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.views")
    parser.add_argument("--data", type=Path, default=Path(".bench/quality"))
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--plans", default="", help="comma list of plan numbers (default: all)")
    args = parser.parse_args(argv)
    chosen = [PLANS[int(i)] for i in args.plans.split(",") if i.strip()] or list(PLANS)
    halves = {split: load(args.data, split, passes=True, precision=args.precision) for split in ("tune", "heldout")}
    originals = {split: [item.saliency for item in items] for split, items in halves.items()}
    print(f"{'plan':<52}{'half':<9}{'runs':>6}{'unsure':>8}  " + "  ".join(f"{m:>8}" for m in MEASURES) + "  beats rembg")
    for plan in chosen:
        for split, items in halves.items():
            planned = [plan_saliency(item, plan) for item in items]
            costs = [cost for _, cost, _ in planned]
            unsure = sum(extra for _, _, extra in planned)
            for item, (merged, _, _) in zip(items, planned):
                item.saliency = merged
            result, _ = evaluate(items, quiet=True)
            for item, first in zip(items, originals[split]):
                item.saliency = first
            wins = sum(
                (result[m] > REMBG[split][m]) if HIGHER_IS_BETTER[m] else (result[m] < REMBG[split][m])
                for m in MEASURES
            )
            print(
                f"{plan.name:<52}{split:<9}{np.mean(costs):>6.2f}{unsure / len(items):>8.0%}  "
                + "  ".join(f"{result[m]:>8.4f}" for m in MEASURES) + f"  {wins}/4",
                flush=True,
            )


if __name__ == "__main__":
    main()
