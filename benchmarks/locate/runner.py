"""Score arclip's locator against the screenpoint baseline on simulated phone photos.

    python -m benchmarks.locate [--quick] [--per-kind N] [--negatives N] [--workers W]
    python -m benchmarks.locate --kind sparse[,text...] [--profile 30]   # some kinds; where our time goes
    python -m benchmarks.locate --write-jsonl DIR [--quick]      # files + pairs.jsonl for the CLI
    python -m benchmarks.locate --check DIR/results.jsonl        # score `arclip locate --pairs` output

Rendering runs in worker processes, in chunks; both locators then run one after the other in this
process on the same decoded images, so their timings are comparable (decoding excluded for both).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import multiprocessing as mp
import os
import pstats
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from sync.locate import ScreenIndex, ScreenLocator

from . import screenpoint_baseline
from .dataset import FEATURE_KINDS, FIDUCIAL_KINDS, KINDS, NEGATIVE_KINDS, ROBUSTNESS_KINDS, Case, Sample, build, cases, encode_view_with_exif, tolerance


@dataclass
class Outcome:
    found: bool
    err: float | None  # px, positives only
    ok: bool  # right answer: within tolerance, or "not found" when that is right
    wrong: bool  # found, but off (or found at all, when it should not be)
    ms: float


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.outcomes.append(o)

    @property
    def n(self) -> int:
        return len(self.outcomes)

    def rate(self, attr: str) -> float:
        return 100.0 * sum(getattr(o, attr) for o in self.outcomes) / max(1, self.n)

    def median_err(self) -> float:
        errs = [o.err for o in self.outcomes if o.ok and o.err is not None]
        return statistics.median(errs) if errs else math.nan

    def mean_ms(self) -> float:
        return statistics.fmean(o.ms for o in self.outcomes) if self.outcomes else math.nan


def score(sample: Sample, found: bool, x: float | None, y: float | None, ms: float) -> Outcome:
    if sample.truth is None:
        return Outcome(found, None, not found, found, ms)
    if not found or x is None or y is None:
        return Outcome(False, None, False, False, ms)
    err = float(math.hypot(x - sample.truth[0], y - sample.truth[1]))
    ok = err <= tolerance(sample.screen.shape)
    return Outcome(True, err, ok, not ok, ms)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # workers only render; one thread each keeps the machine's cores apart


def _samples(all_cases: list[Case], workers: int):
    chunk = max(4, 6 * workers)
    if workers <= 1:
        for c in all_cases:
            yield build(c)
        return
    with mp.get_context("spawn" if sys.platform == "darwin" else "fork").Pool(workers, initializer=_init_worker) as pool:
        for i in range(0, len(all_cases), chunk):
            # render a chunk in parallel, then time the locators with the pool idle
            batch = pool.map(build, all_cases[i : i + chunk])
            yield from batch


def run(per_kind: int, negatives: int, workers: int, baseline: bool = True, verbose: bool = False,
        kinds: list[str] | None = None, profile: cProfile.Profile | None = None) -> dict:
    locator = ScreenLocator()
    ours: dict[str, Tally] = defaultdict(Tally)
    base: dict[str, Tally] = defaultdict(Tally)
    index_ms: list[float] = []
    cold_ms: list[float] = []
    indexes: dict[tuple[str, int], ScreenIndex] = {}
    all_cases = [c for c in cases(per_kind, negatives) if not kinds or c.kind in kinds]
    t_start = time.perf_counter()
    for s in _samples(all_cases, workers):
        key = (s.case.kind, s.case.screen_seed)
        cold = key not in indexes
        if profile is not None:
            profile.enable()
        if cold:
            indexes.clear()  # screens are consecutive: keep only the current one
            t0 = time.perf_counter()
            indexes[key] = locator.index(s.screen)
            index_ms.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        loc = locator.locate(s.view, indexes[key])
        ms = 1000 * (time.perf_counter() - t0)
        if profile is not None:
            profile.disable()
        if cold:
            cold_ms.append(ms + index_ms[-1])
        o = score(s, loc.found, loc.x, loc.y, ms)
        ours[s.case.kind].add(o)
        if baseline:
            t0 = time.perf_counter()
            bf, bx, by = screenpoint_baseline.locate(s.view, s.screen)
            b = score(s, bf, bx, by, 1000 * (time.perf_counter() - t0))
            base[s.case.kind].add(b)
        if verbose and (not o.ok or o.wrong):
            print(f"  {s.case.name}: ours found={loc.found} err={o.err} conf={loc.confidence} hint={loc.hint!r} method={loc.method} inl={loc.inliers}", file=sys.stderr)
    return {
        "ours": ours,
        "base": base,
        "index_ms": index_ms,
        "cold_ms": cold_ms,
        "wall_s": time.perf_counter() - t_start,
    }


def _merge(tallies: dict[str, Tally], kinds: tuple[str, ...] | list[str]) -> Tally:
    t = Tally()
    for k in kinds:
        t.outcomes += tallies[k].outcomes if k in tallies else []
    return t


def _fmt(v: float, unit: str = "") -> str:
    return "   -" if math.isnan(v) else f"{v:5.1f}{unit}"


def _ratio(a: float, b: float) -> str:
    return "    -" if math.isnan(a) or math.isnan(b) or b <= 0 else f"{a / b:4.2f}x"


def report(res: dict) -> str:
    ours, base = res["ours"], res["base"]
    has_base = bool(base)
    lines = []
    head = f"{'kind':<22}{'n':>5} | {'ours ok%':>8} {'wrong%':>7} {'med px':>7} {'ms':>6}"
    if has_base:
        head += f" | {'base ok%':>8} {'wrong%':>7} {'med px':>7} {'ms':>6} | {'time':>5}"
    lines += [head, "-" * len(head)]

    def row(name: str, a: Tally, b: Tally | None) -> str:
        s = f"{name:<22}{a.n:>5} | {a.rate('ok'):8.1f} {a.rate('wrong'):7.1f} {_fmt(a.median_err()):>7} {_fmt(a.mean_ms()):>6}"
        if b is not None and has_base:
            s += f" | {b.rate('ok'):8.1f} {b.rate('wrong'):7.1f} {_fmt(b.median_err()):>7} {_fmt(b.mean_ms()):>6} | {_ratio(a.mean_ms(), b.mean_ms())}"
        return s

    for k in KINDS:
        if k in ours:
            lines.append(row(k, ours[k], base.get(k)))
    lines.append("-" * len(head))
    groups = {
        "features (no pattern)": FEATURE_KINDS,
        "fiducial pattern": FIDUCIAL_KINDS,
        "stale picture": ROBUSTNESS_KINDS,
        "negatives": NEGATIVE_KINDS,
        "all": tuple(KINDS),
    }
    for name, kinds in groups.items():
        lines.append(row(name, _merge(ours, kinds), _merge(base, kinds) if has_base else None))
    o_all, b_all = _merge(ours, tuple(KINDS)), _merge(base, tuple(KINDS))
    idx = statistics.fmean(res["index_ms"]) if res["index_ms"] else math.nan
    cold = statistics.fmean(res["cold_ms"]) if res["cold_ms"] else math.nan
    n_pairs, n_screens = o_all.n, len(res["index_ms"])
    amortised = (sum(o.ms for o in o_all.outcomes) + sum(res["index_ms"])) / max(1, n_pairs)
    lines.append("")
    lines.append("time: ours (index cached) / baseline, per pair")
    lines.append("ok: within 2% of the screen diagonal (positives) or 'not found' (negatives); wrong: found but off, or found at all on a negative")
    lines.append(f"time, ours: {o_all.mean_ms():.1f} ms/pair with the screen's index cached; index {idx:.1f} ms/screen; "
                 f"{cold:.1f} ms cold (index+locate); {amortised:.1f} ms/pair amortised over {n_pairs / max(1, n_screens):.1f} pairs/screen")
    if has_base:
        lines.append(f"time, baseline: {b_all.mean_ms():.1f} ms/pair (it re-analyses the screenshot every time)")
        f_o, f_b = _merge(ours, FEATURE_KINDS), _merge(base, FEATURE_KINDS)
        lines.append(
            "ratios ours/baseline: success (features) {:.2f}x, success (all positives) {:.2f}x, wrong (all) {}, time cached {:.2f}x, cold {:.2f}x, amortised {:.2f}x".format(
                f_o.rate("ok") / max(1e-9, f_b.rate("ok")),
                _merge(ours, FEATURE_KINDS + FIDUCIAL_KINDS).rate("ok") / max(1e-9, _merge(base, FEATURE_KINDS + FIDUCIAL_KINDS).rate("ok")),
                f"{o_all.rate('wrong') / b_all.rate('wrong'):.2f}x" if b_all.rate("wrong") > 0 else "n/a",
                o_all.mean_ms() / b_all.mean_ms(),
                cold / b_all.mean_ms(),
                amortised / b_all.mean_ms(),
            )
        )
    lines.append(f"wall time {res['wall_s']:.0f} s, {n_pairs} pairs, {n_screens} screen pictures")
    return "\n".join(lines)


def write_jsonl(out: Path, per_kind: int, negatives: int, workers: int) -> None:
    """Pairs as files: views as phone JPEGs (some stored sideways with EXIF), screens as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "views").mkdir(exist_ok=True)
    (out / "screens").mkdir(exist_ok=True)
    written: set[str] = set()
    with open(out / "pairs.jsonl", "w") as pairs, open(out / "truth.jsonl", "w") as truth:
        for s in _samples(cases(per_kind, negatives), workers):
            view_p = (out / "views" / f"{s.case.name}.jpg").resolve()
            screen_name = f"{s.case.kind.replace('+', '_')}_{s.case.screen_seed}.png"
            screen_p = (out / "screens" / screen_name).resolve()
            view_p.write_bytes(encode_view_with_exif(s.view, rotate=s.case.index % 3 == 1))
            if screen_name not in written:
                cv2.imwrite(str(screen_p), s.screen)
                written.add(screen_name)
            pairs.write(json.dumps({"view": str(view_p), "screen": str(screen_p)}) + "\n")
            truth.write(json.dumps({
                "view": str(view_p), "screen": str(screen_p), "kind": s.case.kind,
                "found": s.truth is not None,
                "x": None if s.truth is None else round(s.truth[0], 2),
                "y": None if s.truth is None else round(s.truth[1], 2),
                "tolerance": round(tolerance(s.screen.shape), 2),
            }) + "\n")
    print(f"wrote {out / 'pairs.jsonl'} (and truth.jsonl); try:\n  arclip locate --pairs {out / 'pairs.jsonl'} > {out / 'results.jsonl'}\n  python -m benchmarks.locate --check {out / 'results.jsonl'}")


def check(results: Path) -> int:
    """Score a results file (one JSON object per pair, in order) against truth.jsonl beside it."""
    truth = [json.loads(l) for l in open(results.parent / "truth.jsonl")]
    got = [json.loads(l) for l in open(results) if l.strip()]
    if len(got) != len(truth):
        print(f"{len(got)} results for {len(truth)} pairs", file=sys.stderr)
        return 1
    per: dict[str, Tally] = defaultdict(Tally)
    for t, g in zip(truth, got):
        found = bool(g.get("found"))
        if not t["found"]:
            per[t["kind"]].add(Outcome(found, None, not found, found, 0.0))
            continue
        if not found:
            per[t["kind"]].add(Outcome(False, None, False, False, 0.0))
            continue
        err = math.hypot(g["x"] - t["x"], g["y"] - t["y"])
        per[t["kind"]].add(Outcome(True, err, err <= t["tolerance"], err > t["tolerance"], 0.0))
    for k, tl in per.items():
        print(f"{k:<14} n={tl.n:4d} ok={tl.rate('ok'):5.1f}% wrong={tl.rate('wrong'):5.1f}% median err={_fmt(tl.median_err())} px")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.locate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small run (about 30 s)")
    p.add_argument("--per-kind", type=int, default=None, help="photos per positive kind (default 50; quick 12)")
    p.add_argument("--negatives", type=int, default=None, help="photos per negative kind (default 30; quick 8)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="render processes")
    p.add_argument("--no-baseline", action="store_true", help="skip the screenpoint baseline")
    p.add_argument("--verbose", action="store_true", help="list our misses and wrong answers")
    p.add_argument("--write-jsonl", type=Path, metavar="DIR", help="write the pairs as files and pairs.jsonl, then exit")
    p.add_argument("--check", type=Path, metavar="RESULTS", help="score `arclip locate --pairs` output against DIR/truth.jsonl")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--kind", type=lambda v: [k for k in v.split(",") if k], default=None,
                   help=f"only these kinds, comma-separated ({', '.join(KINDS)})")
    p.add_argument("--profile", type=int, metavar="N", default=0, help="profile ours (index + locate) and print the top N functions")
    a = p.parse_args(argv)
    if a.kind and set(a.kind) - set(KINDS):
        p.error(f"unknown kind(s): {', '.join(sorted(set(a.kind) - set(KINDS)))}")
    per_kind = a.per_kind or (12 if a.quick else 50)
    negatives = a.negatives or (8 if a.quick else 30)
    if a.check:
        return check(a.check)
    if a.write_jsonl:
        write_jsonl(a.write_jsonl, per_kind, negatives, a.workers)
        return 0
    prof = cProfile.Profile() if a.profile else None
    res = run(per_kind, negatives, a.workers, baseline=not a.no_baseline, verbose=a.verbose, kinds=a.kind, profile=prof)
    print(report(res))
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(a.profile)
    if a.json:
        summary = {
            side: {k: {"n": t.n, "ok": t.rate("ok"), "wrong": t.rate("wrong"), "median_err": t.median_err(), "ms": t.mean_ms()} for k, t in res[side].items()}
            for side in ("ours", "base")
        }
        summary["index_ms"] = statistics.fmean(res["index_ms"]) if res["index_ms"] else None
        a.json.write_text(json.dumps(summary, indent=2))
    return 0
