"""Score our cut-outs and rembg's on the quality set, in the same run, on the same images.

    python -m benchmarks.quality [--data .bench/quality] [--split all|tune|heldout] [--limit N]

Builds the set first when it is missing (``python -m benchmarks.quality.build``).
Ours: the real ``ClipEngine`` (u2netp, default options, full-size RGBA).
rembg: real rembg 2.x in its own virtual environment (``.bench/rembg``, created on
first use with the same onnxruntime as ours), ``remove(img, session=new_session("u2netp"))``
with default settings, reading the very same ``u2netp.onnx`` file we ship (through
``U2NET_HOME``; no network). Both apply the EXIF orientation; the ground truth is in
displayed orientation.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from . import other_sources
from .build import GRAPHIC_BACKGROUNDS
from .metrics import (
    HIGHER_IS_BETTER,
    LABELS,
    METRICS,
    ImageScore,
    aggregate,
    better,
    score_files,
)

REMBG_VENV = Path(".bench/rembg")
REMBG_HOME = Path(".bench/rembg-home")
ORT_VERSION = "1.25.1"
U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"


# ---------------------------------------------------------------------------- rembg


def ensure_rembg(venv: Path) -> Path:
    """The rembg venv's python, creating the venv on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with rembg[cli] and onnxruntime=={ORT_VERSION} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "rembg[cli]", f"onnxruntime=={ORT_VERSION}"], check=True
        )
    return python


def rembg_home() -> Path:
    """A U2NET_HOME holding our packaged u2netp.onnx (same bytes rembg would download)."""
    from segmentation import resolve_model

    model = resolve_model("u2netp").path
    digest = hashlib.md5(model.read_bytes()).hexdigest()
    if digest != U2NETP_MD5:
        sys.exit(f"{model} has md5 {digest}, not rembg's u2netp {U2NETP_MD5}")
    REMBG_HOME.mkdir(parents=True, exist_ok=True)
    link = REMBG_HOME / "u2netp.onnx"
    if not link.exists():
        link.symlink_to(model.resolve())
    return REMBG_HOME.resolve()


def run_rembg(python: Path, jobs: list[tuple[Path, Path]], scratch: Path) -> tuple[list[float], str]:
    jobs_file = scratch / "rembg-jobs.json"
    jobs_file.write_text(json.dumps([[str(a.resolve()), str(b.resolve())] for a, b in jobs]))
    env = dict(os.environ, U2NET_HOME=str(rembg_home()), REMBG_HOME=str(rembg_home()))
    env.pop("PYTHONPATH", None)
    worker = Path(__file__).with_name("rembg_worker.py")
    proc = subprocess.Popen(
        [str(python.absolute()), str(worker), str(jobs_file.absolute())], env=env, stdout=subprocess.PIPE, text=True, cwd=scratch
    )
    seconds, version = [], "?"
    assert proc.stdout is not None
    for line in proc.stdout:
        record = json.loads(line)
        if "seconds" in record:
            seconds.append(record["seconds"])
            _progress("rembg", len(seconds), len(jobs))
        else:
            version = record.get("version", "?")
    if proc.wait() != 0:
        sys.exit("rembg failed; see its output above")
    print()
    return seconds, version


def rembg_versions(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('rembg'), m.version('onnxruntime'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return f"rembg {out[0]}, onnxruntime {out[1]}"


# ---------------------------------------------------------------------------- ours


def build_our_engine(data_dir: Path, overrides: dict[str, str]):  # type: ignore[no-untyped-def]
    """Our engine as `arclip serve` builds it: ARCLIP_* variables and ``overrides`` apply."""
    from api.app import build_engine
    from api.settings import Settings

    return build_engine(Settings(data_dir=data_dir, max_batch_size=1, **overrides))


def run_ours(jobs: list[tuple[Path, Path]], engine) -> tuple[list[float], str]:  # type: ignore[no-untyped-def]
    from segmentation import ClipOptions

    async def go() -> list[float]:
        await engine.start()
        seconds = []
        try:
            for index, (src, dst) in enumerate(jobs):
                data = src.read_bytes()
                started = time.perf_counter()
                cut = await engine.cut(data, ClipOptions())
                seconds.append(time.perf_counter() - started)
                Image.fromarray(cut.pixels, "RGBA").save(dst, compress_level=1)
                _progress("ours", index + 1, len(jobs))
        finally:
            await engine.close()
        print()
        return seconds

    import onnxruntime

    return asyncio.run(go()), f"onnxruntime {onnxruntime.__version__}"


# ---------------------------------------------------------------------------- scoring


def _progress(name: str, done: int, total: int) -> None:
    if sys.stdout.isatty():
        print(f"\r  {name}: {done}/{total}", end="", flush=True)
    elif done == total:
        print(f"  {name}: {done}/{total}", end="", flush=True)


def _fmt(metric: str, value: float) -> str:
    if np.isnan(value):
        return "-"
    return f"{value:.4f}"


def print_table(title: str, ours: dict[str, float], theirs: dict[str, float], n: int) -> None:
    print(f"\n{title} ({n} images)")
    print(f"  {'metric':<22}{'ours':>10}{'rembg':>10}   ours better?")
    for metric in METRICS:
        arrow = "↑" if HIGHER_IS_BETTER[metric] else "↓"
        verdict = "-" if np.isnan(ours[metric]) else "yes" if better(metric, ours[metric], theirs[metric]) else "NO"
        print(f"  {LABELS[metric] + ' ' + arrow:<22}{_fmt(metric, ours[metric]):>10}{_fmt(metric, theirs[metric]):>10}   {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(".bench/quality"))
    parser.add_argument("--split", choices=("all", "tune", "heldout"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (of the split)")
    parser.add_argument("--rembg-venv", type=Path, default=REMBG_VENV)
    parser.add_argument("--reuse-rembg", action="store_true", help="score rembg's outputs from an earlier run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the metrics")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--extra-passes", default=None, metavar="PASSES",
        help='our extra model passes, as ARCLIP_EXTRA_PASSES: "", flip, zoom, flip,zoom (default: the server\'s)',
    )
    parser.add_argument(
        "--precision", default=None, choices=("auto", "fp32", "int8"),
        help="our model precision, as ARCLIP_MODEL_PRECISION (default: the server's)",
    )
    args = parser.parse_args(argv)
    overrides = {
        name: value
        for name, value in (("extra_passes", args.extra_passes), ("model_precision", args.precision))
        if value is not None
    }

    manifest_path = args.data / "manifest.json"
    if not manifest_path.exists():
        if args.data == other_sources.DEFAULT_OUT:
            other_sources.build(args.data)
        else:
            from .build import build

            build(args.data, 180, 0)
    samples = json.loads(manifest_path.read_text())["samples"]
    if args.split != "all":
        samples = [s for s in samples if s["split"] == args.split]
    if args.limit:
        samples = samples[: args.limit]

    out_dirs = {name: args.data / "pred" / name for name in ("ours", "rembg")}
    for d in out_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    jobs = {name: [(args.data / s["image"], d / f"{s['id']}.png") for s in samples] for name, d in out_dirs.items()}

    python = ensure_rembg(args.rembg_venv)
    print(f"quality set: {args.data} ({len(samples)} images, split {args.split})")
    engine = build_our_engine(args.data / "arclip", overrides)
    passes = ",".join(engine.config.extra_passes) or "none"
    print(f"ours:  arclip ClipEngine, u2netp {engine.model.precision}, {run_info_ours()}, extra passes: {passes}")
    print(f"rembg: remove(img, session=new_session('u2netp')), {rembg_versions(python)}")

    times: dict[str, list[float]] = {}
    if args.reuse_rembg and all(dst.exists() for _, dst in jobs["rembg"]):
        times["rembg"] = []
    else:
        times["rembg"], _ = run_rembg(python, jobs["rembg"], args.data / "pred")
    times["ours"], _ = run_ours(jobs["ours"], engine)

    scores: dict[str, list[ImageScore]] = {}
    # Spawned, not forked: a fork of this process, whose engine and onnxruntime threads
    # may hold allocator locks, can hang its children for ever.
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        for name in ("ours", "rembg"):
            work = [
                (str(dst), str(args.data / s["gt"]), str(args.data / s["fg"]),
                 str(args.data / s["shadow_map"]) if s["shadow"] != "none" else None,
                 str(args.data / s["image"]))
                for s, (_, dst) in zip(samples, jobs[name])
            ]
            scores[name] = []
            for score in pool.map(score_files, work, chunksize=4):
                scores[name].append(score)
                _progress(f"scoring {name}", len(scores[name]), len(work))
            print()

    cases = [structure_cases_of(args.data, s) for s in samples]
    graphic = GRAPHIC_BACKGROUNDS | other_sources.GRAPHIC_BACKGROUNDS
    subsets = {
        "all": lambda s: True,
        "held-out half (odd seeds)": lambda s: s["split"] == "heldout",
        "tuning half (even seeds)": lambda s: s["split"] == "tune",
        "with cast shadow": lambda s: s["shadow"] != "none",
        "  drop shadow": lambda s: s["shadow"] == "drop",
        "  ground shadow": lambda s: s["shadow"] == "ground",
        "no shadow": lambda s: s["shadow"] == "none",
        "EXIF-rotated": lambda s: s["exif_orientation"] != 1,
        "upright": lambda s: s["exif_orientation"] == 1,
        "small object (<10% of frame)": lambda s: s["object_fraction"] < 0.10,
        "photograph backgrounds": lambda s: s["background"] not in graphic,
        "  with things of their own": lambda s: s["background"] in other_sources.BUSY_BACKGROUNDS,
        "graphic backgrounds": lambda s: s["background"] in graphic,
        "portraits (wesnoth)": lambda s: s.get("source", "").startswith("wesnoth"),
        "icons (oxygen)": lambda s: s.get("source", "").startswith("oxygen"),
    }
    # Structure cases (other_sources.structure; measured on the ground truth where the
    # manifest lacks them, as the main set's does).
    by_case = {
        "with holes": lambda c: "holes" in c,
        "with thin parts": lambda c: "thin" in c,
        "with specks (object pieces)": lambda c: "specks" in c,
        "any structure case": bool,
        "no structure case": lambda c: not c,
    }
    keeps = {label: [keep(s) for s in samples] for label, keep in subsets.items()}
    keeps |= {label: [keep(c) for c in cases] for label, keep in by_case.items()}
    results: dict[str, dict] = {}
    for label, kept in keeps.items():
        idx = [i for i, k in enumerate(kept) if k]
        if not idx:
            continue
        results[label] = {
            "n": len(idx),
            "ours": aggregate([scores["ours"][i] for i in idx]),
            "rembg": aggregate([scores["rembg"][i] for i in idx]),
        }

    print_table("ALL", results["all"]["ours"], results["all"]["rembg"], results["all"]["n"])
    if "held-out half (odd seeds)" in results and args.split == "all":
        r = results["held-out half (odd seeds)"]
        print_table("HELD-OUT (odd seeds, never tuned on)", r["ours"], r["rembg"], r["n"])

    print("\nby subset: ours / rembg (* = ours better)")
    short = {"sm": "S-measure", "mae": "MAE", "maxf": "max F", "wfm": "weighted F", "halo": "halo", "shadow_leak": "shadow leak"}
    header = "".join(f"{short[m]:>17}" for m in METRICS)
    print(f"  {'subset':<30}{'n':>4}{header}")
    for label, r in results.items():
        cells = ""
        for m in METRICS:
            if np.isnan(r["ours"][m]):
                cells += f"{'-':>17}"
                continue
            mark = "*" if better(m, r["ours"][m], r["rembg"][m]) else " "
            cell = f"{_fmt(m, r['ours'][m])}/{_fmt(m, r['rembg'][m])}{mark}"
            cells += f"{cell:>17}"
        print(f"  {label:<30}{r['n']:>4}{cells}")

    for name in ("ours", "rembg"):
        if times[name]:
            print(f"\n{name}: median {statistics.median(times[name]) * 1000:.0f} ms per image "
                  f"(decode → cut-out, {len(times[name])} images, this machine, sequential)", end="")
    print()
    if args.json:
        args.json.write_text(json.dumps({"results": results, "times": times}, indent=1))
    return 0


def structure_cases_of(data: Path, sample: dict) -> set[str]:
    """The sample's structure cases, from the manifest or else measured on its ground truth."""
    if "holes" not in sample:
        gt = np.asarray(Image.open(data / sample["gt"]).convert("L"))
        sample = {**sample, **other_sources.structure(gt)}
    return other_sources.structure_cases(sample)


def run_info_ours() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
