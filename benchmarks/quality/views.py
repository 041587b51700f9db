"""Which model views to run, at what cost: each candidate on both halves, from ``tune``'s cached maps.

    python -m benchmarks.quality.views [--data .bench/quality] [--other .bench/quality-other] [--precision int8]

Candidates are plans of views (``tune.VIEW_NAMES``: the square input, "flip", "aspect",
"aspect.flip") for every photo, and more for the photos whose first map is unsure
(``passes.is_unsure``). "main" is the view that runs first (and that the unsure rule
reads): the squeezed square, or the photo's own aspect ("aspect"; a square photo has
no other, so there it is the square). The aspect views are at the engine's scale
(``preprocess.aspect_view_size``: 352x256 for 4:3) unless ``--aspect-scale`` says otherwise
(1.0: 416x320, the earlier size). Cost: mean model runs per photo, counting an aspect run
by its pixels against a 320x320 one (``view_costs``). Scores: the four measures of
``metrics`` after the engine's mask-to-alpha, per half, against rembg's figures
from ``python -m benchmarks.quality`` (README, "Results").

Three parts: the main set's tuning half (even seeds) and held-out half (odd seeds), and the
other-sources part (``other_sources.py``: other objects, other backgrounds, other seeds),
which nothing was tuned on. "unsure runs": what a photo whose main map *is* unsure costs
(a 4:3 photo), which sets the worst case's speed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation.preprocess import ASPECT_SCALE

from .metrics import HIGHER_IS_BETTER
from .tune import evaluate, load

# rembg 2.0.86 on the same images: S-measure, MAE, max F, weighted F. The halves: README,
# "Results"; "other": `python -m benchmarks.quality --data .bench/quality-other` (README,
# "The other-sources part"), the "all" row.
REMBG = {
    "tune": {"sm": 0.9145, "mae": 0.0305, "maxf": 0.8989, "wfm": 0.8632},
    "heldout": {"sm": 0.9208, "mae": 0.0422, "maxf": 0.9136, "wfm": 0.8784},
    "other": {"sm": 0.8938, "mae": 0.0479, "maxf": 0.8857, "wfm": 0.8239},
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
    Plan("square + flip if unsure", "square", unsure=("flip",)),
    Plan("square + aspect.flip if unsure", "square", unsure=("aspect.flip",)),
    Plan("square + aspect for all, flip,aspect.flip if unsure", "square", always=("aspect",), unsure=("flip", "aspect.flip")),
    Plan("square + aspect for all, aspect.flip if unsure", "square", always=("aspect",), unsure=("aspect.flip",)),
    Plan("square + flip,aspect,aspect.flip for all (gpu)", "square", always=("flip", "aspect", "aspect.flip")),
    Plan("aspect + aspect.flip,square if unsure", "aspect", unsure=("aspect.flip", "square")),
    Plan("aspect + aspect.flip,flip if unsure", "aspect", unsure=("aspect.flip", "flip")),
)


def view_costs(aspect_scale: float) -> dict[str, float]:
    """Each view's model run in square-run units, by its pixels: a 4:3 aspect view at ``aspect_scale``
    (measured int8, two threads: 416x320 1.23-1.30, 352x256 0.86-0.92)."""
    aspect = 1.3 * aspect_scale**2
    return {"square": 1.0, "flip": 1.0, "aspect": aspect, "aspect.flip": aspect}


def unsure_cost(plan: Plan, costs: dict[str, float]) -> float:
    """Model runs (square-run units) for a 4:3 photo whose main map is unsure."""
    views = {plan.main, *plan.always, *plan.unsure}
    return sum(costs[v] for v in views)


def _view(item, name: str) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    if name == "square":
        return item.saliency
    found = item.extra.get(name)
    if found is None:
        return None  # a square photo has no aspect view
    return found[..., ::-1] if name.endswith("flip") else found


def plan_saliency(item, plan: Plan, costs: dict[str, float]) -> tuple[np.ndarray, float, bool]:  # type: ignore[no-untyped-def]
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
    cost = costs[main_name] + sum(costs[n] for n, _ in maps)
    return merge_views([main, *(m for _, m in maps)]), cost, unsure


def main(argv: list[str] | None = None) -> None:
    from .other_sources import DEFAULT_OUT

    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.views")
    parser.add_argument("--data", type=Path, default=Path(".bench/quality"), help="the main set")
    parser.add_argument("--other", type=Path, default=DEFAULT_OUT, help="the other-sources part")
    parser.add_argument("--parts", default="tune,heldout,other", help="comma list of tune, heldout, other")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--plans", default="", help="comma list of plan numbers (default: all)")
    parser.add_argument(
        "--aspect-scale", type=float, default=ASPECT_SCALE,
        help=f"the aspect views' shorter side / the model's side (the engine's: {ASPECT_SCALE}; 1.0: 416x320 for 4:3)",
    )
    args = parser.parse_args(argv)
    view_cost = view_costs(args.aspect_scale)
    chosen = [PLANS[int(i)] for i in args.plans.split(",") if i.strip()] or list(PLANS)
    where = {"tune": (args.data, "tune"), "heldout": (args.data, "heldout"), "other": (args.other, "all")}
    parts = {
        part: load(where[part][0], where[part][1], passes=True, precision=args.precision, aspect_scale=args.aspect_scale)
        for part in args.parts.split(",")
    }
    originals = {part: [item.saliency for item in items] for part, items in parts.items()}
    print(
        f"{'plan':<56}{'part':<9}{'runs':>6}{'unsure':>8}{'unsure runs':>12}  "
        + "  ".join(f"{m:>8}" for m in MEASURES) + "  beats rembg"
    )
    for plan in chosen:
        for part, items in parts.items():
            planned = [plan_saliency(item, plan, view_cost) for item in items]
            costs = [cost for _, cost, _ in planned]
            unsure = sum(extra for _, _, extra in planned)
            for item, (merged, _, _) in zip(items, planned):
                item.saliency = merged
            result, _ = evaluate(items, workers=1, quiet=True)
            for item, first in zip(items, originals[part]):
                item.saliency = first
            wins = sum(
                (result[m] > REMBG[part][m]) if HIGHER_IS_BETTER[m] else (result[m] < REMBG[part][m])
                for m in MEASURES
            )
            print(
                f"{plan.name:<56}{part:<9}{np.mean(costs):>6.2f}{unsure / len(items):>8.0%}{unsure_cost(plan, view_cost):>12.1f}  "
                + "  ".join(f"{result[m]:>8.4f}" for m in MEASURES) + f"  {wins}/4",
                flush=True,
            )


if __name__ == "__main__":
    main()
