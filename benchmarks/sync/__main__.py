"""``python -m benchmarks.sync``: see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.processes import NotReady, stop_process, wait_until_ready

from . import __doc__ as DOC
from .scene import desktop_scene, object_photo

WAIT = 120.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return None


@contextlib.contextmanager
def server(data_dir: Path, extra_env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")},
        "ARCLIP_DATA_DIR": str(data_dir),
        # A benchmark opens many pairings from one address: lift the per-client throttles.
        "ARCLIP_PAIRING_OPENS_PER_MINUTE": "1000000",
        "ARCLIP_PAIRING_CLAIMS_PER_MINUTE": "1000000",
        "ARCLIP_PAIRING_FAILED_CLAIMS_PER_MINUTE": "1000000",
        **extra_env,
    }
    code = "import sys; from api.cli import main; sys.argv[0] = 'arclip'; main()"
    with open(data_dir / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"127.0.0.1:{port}"
        try:
            try:
                wait_until_ready(f"http://{base}/readyz", proc, WAIT, request_timeout=2)
            except NotReady as exc:
                raise SystemExit(f"the server {exc}; see {data_dir / 'server.log'}") from None
            yield base, proc
        finally:
            stop_process(proc, timeout=30)


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


async def pair(http: httpx.AsyncClient) -> tuple[str, str, str]:
    opened = (await http.post("/v1/pairings")).raise_for_status().json()
    claimed = (await http.post("/v1/pairings/claim", json={"code": opened["code"]})).raise_for_status().json()
    return opened["pairing_id"], opened["desktop_token"], claimed["phone_token"]


@contextlib.asynccontextmanager
async def desktop(base: str, token: str) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://{base}/v1/sync?token={token}", open_timeout=WAIT, max_queue=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        yield ws


async def wait_for(ws: ClientConnection, type_: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["id"] is None:
            if frame["type"] == "ping":
                await ws.send('{"type": "pong"}')
            continue
        await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
        if frame["type"] == type_:
            return frame


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        return 1000 * (ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo))

    return {"p50": round(pct(0.5), 1), "p95": round(pct(0.95), 1), "mean": round(1000 * statistics.fmean(ordered), 1),
            "min": round(1000 * ordered[0], 1), "max": round(1000 * ordered[-1], 1)}


async def latency(base: str, runs: int, warmup: int) -> dict[str, Any]:
    photo = object_photo()
    screen_png, view_jpeg, truth = desktop_scene()
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=WAIT) as http:
        pairing_id, desktop_token, phone_token = await pair(http)
        phone = {"Authorization": f"Bearer {phone_token}"}
        async with desktop(base, desktop_token) as ws:
            put = await http.put(
                f"/v1/pairings/{pairing_id}/screen", content=screen_png,
                headers={"Authorization": f"Bearer {desktop_token}", "Content-Type": "image/png"},
            )
            put.raise_for_status()
            created_s: list[float] = []
            placed_s: list[float] = []
            http_capture_s: list[float] = []
            errors: list[float] = []
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                response = await http.post("/v1/captures", headers=phone, files={"image_file": ("p.jpg", photo, "image/jpeg")})
                t_http = time.perf_counter() - t0
                response.raise_for_status()
                message = await wait_for(ws, "asset.created")
                t_created = time.perf_counter() - t0
                asset_id = message["data"]["asset_id"]

                t1 = time.perf_counter()
                pasted = await http.post(
                    f"/v1/captures/{asset_id}/paste", headers=phone, files={"view": ("v.jpg", view_jpeg, "image/jpeg")}
                )
                pasted.raise_for_status()
                placed = await wait_for(ws, "asset.placed")
                t_placed = time.perf_counter() - t1
                if i >= warmup:
                    created_s.append(t_created)
                    http_capture_s.append(t_http)
                    placed_s.append(t_placed)
                    errors.append(((placed["data"]["x"] - truth[0]) ** 2 + (placed["data"]["y"] - truth[1]) ** 2) ** 0.5)
    return {
        "runs": runs,
        "capture_to_asset_created_ms": _ms(created_s),
        "capture_http_201_ms": _ms(http_capture_s),
        "paste_to_asset_placed_ms": _ms(placed_s),
        "paste_error_px_max": round(max(errors), 2),
    }


async def sessions(base: str, pid: int, connections: int) -> dict[str, Any]:
    pairings = max(1, connections // 2)
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=WAIT) as http:
        tokens: list[str] = []
        sem = asyncio.Semaphore(16)
        server_errors = 0

        async def one() -> None:
            nonlocal server_errors
            async with sem:
                for _ in range(5):
                    try:
                        _, desk, phone = await pair(http)
                    except httpx.HTTPStatusError as exc:
                        if exc.response.status_code < 500:
                            raise
                        server_errors += 1  # reported, and retried
                        continue
                    except httpx.TransportError:  # uvicorn drops the connection after an unhandled error
                        server_errors += 1
                        continue
                    tokens.extend((desk, phone))
                    return
                raise SystemExit("pairing kept failing with server errors; see server.log (--keep)")

        await asyncio.gather(*(one() for _ in range(pairings)))
    tokens = tokens[:connections]
    await asyncio.sleep(1.0)
    before = rss_bytes(pid)

    async with contextlib.AsyncExitStack() as stack:
        sockets: list[ClientConnection] = []
        connect_sem = asyncio.Semaphore(64)
        t0 = time.perf_counter()

        async def open_one(token: str) -> None:
            async with connect_sem:
                ws = await stack.enter_async_context(
                    connect(f"ws://{base}/v1/sync?token={token}", open_timeout=WAIT, ping_interval=None, max_queue=None)
                )
                hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                assert hello["type"] == "hello", hello
                sockets.append(ws)

        await asyncio.gather(*(open_one(t) for t in tokens))
        connect_s = time.perf_counter() - t0
        await asyncio.sleep(2.0)  # let the server settle
        after = rss_bytes(pid)
        # every session is still alive and answering
        alive = 0
        for ws in sockets:
            await ws.send('{"type": "ping"}')
        for ws in sockets:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if frame["type"] == "pong":
                    alive += 1
                    break
    result: dict[str, Any] = {
        "connections": len(sockets),
        "pairings": pairings,
        "alive": alive,
        "connect_all_s": round(connect_s, 2),
        "pairing_server_errors": server_errors,
    }
    if before is not None and after is not None:
        result["server_rss_before_mb"] = round(before / 2**20, 1)
        result["server_rss_after_mb"] = round(after / 2**20, 1)
        result["kb_per_connection"] = round((after - before) / max(1, len(sockets)) / 1024, 1)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sync", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="measured capture+paste rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    parser.add_argument("--sessions", type=int, default=1000, help="idle websockets to hold (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (server.log) afterwards")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="arclip-bench-sync-"))
    try:
        with server(data_dir, {}) as (base, proc):
            ready = httpx.get(f"http://{base}/readyz", timeout=10).json()
            results: dict[str, Any] = {
                "model": ready.get("model"), "provider": ready.get("provider"), "cpus": os.cpu_count(),
            }
            results["latency"] = asyncio.run(latency(base, args.runs, args.warmup))
            if args.sessions > 0:
                results["idle_sessions"] = asyncio.run(sessions(base, proc.pid, args.sessions))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"arclip sync benchmark — model {results['model']} on {results['provider']}, {results['cpus']} CPUs")
    lat = results["latency"]
    print(f"\nlatency over {lat['runs']} runs (ms)       p50      p95     mean      min      max")
    for label, key in (
        ("capture → asset.created", "capture_to_asset_created_ms"),
        ("  (capture → HTTP 201)", "capture_http_201_ms"),
        ("paste → asset.placed", "paste_to_asset_placed_ms"),
    ):
        row = lat[key]
        print(f"  {label:<28}{row['p50']:>8.1f} {row['p95']:>8.1f} {row['mean']:>8.1f} {row['min']:>8.1f} {row['max']:>8.1f}")
    print(f"  paste error, worst run: {lat['paste_error_px_max']} px")
    if "idle_sessions" in results:
        s = results["idle_sessions"]
        print(f"\nidle sessions: {s['alive']}/{s['connections']} websockets alive ({s['pairings']} pairings), "
              f"all connected in {s['connect_all_s']} s")
        if s["pairing_server_errors"]:
            print(f"  ({s['pairing_server_errors']} pairing requests failed with 5xx while opening them, and were retried)")
        if "kb_per_connection" in s:
            print(f"  server RSS {s['server_rss_before_mb']} MB → {s['server_rss_after_mb']} MB: "
                  f"{s['kb_per_connection']} KB per connection")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
