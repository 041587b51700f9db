"""``python -m benchmarks.topology``: one `arclip serve` replica against two, on the same servers.

    python -m benchmarks.topology                     # 32 clips at concurrency 8, 12 captures
    python -m benchmarks.topology --clips 16 --captures 6

PostgreSQL, Redis (AOF), SeaweedFS S3 and Triton (the model, behind its dynamic
batcher) are started once on loopback (tests/topology/servers.py); then one replica,
then two, serve the same images. Prints, for each:

- /v1/clip images/s and p50/p95 latency, requests spread round-robin over the replicas;
- capture → ``asset.created``: the phone's POST sent until the desktop's socket has the
  message, with the desktop on replica A and the phone on the last replica (B when
  there are two: the message crosses Redis), p50/p95;
- the batch sizes Triton formed.

On one machine every server shares its cores: a second replica adds no CPU, so the
figures say what the topology costs, not what a second machine would add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _key(topology: Any) -> str:
    from api.offline import with_accounts
    from api.settings import Settings
    from billing import to_milli

    settings = Settings(_env_file=None, database_url=topology.database_url, plans=json.loads(topology.env["ARCLIP_PLANS"]))
    async with with_accounts(settings) as (keys, _):
        return (await keys.create("benchmark", "free", credits=to_milli(100_000)))[1]


async def _clips(topology: Any, replicas: list[Any], images: list[bytes], count: int, concurrency: int) -> dict[str, float]:
    key = await _key(topology)
    clients = [httpx.AsyncClient(base_url=r.base, headers={"X-Api-Key": key}, timeout=300) for r in replicas]
    try:
        async def one(index: int) -> float:
            started = time.perf_counter()
            reply = await clients[index % len(clients)].post(
                "/v1/clip", files={"image_file": ("p.jpg", images[index % len(images)], "image/jpeg")}
            )
            reply.raise_for_status()
            return time.perf_counter() - started

        await asyncio.gather(*(one(i) for i in range(len(clients))))  # warm-up: one per replica
        slots = asyncio.Semaphore(concurrency)

        async def limited(index: int) -> float:
            async with slots:
                return await one(index)

        started = time.perf_counter()
        latencies = await asyncio.gather(*(limited(i) for i in range(count)))
        wall = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return {"images_s": count / wall, "p50": statistics.median(latencies), "p95": _pct(latencies, 0.95)}


async def _captures(desktop_side: Any, phone_side: Any, photos: list[bytes]) -> dict[str, float]:
    from websockets.asyncio.client import connect

    async with httpx.AsyncClient(timeout=300) as http:
        opened = (await http.post(f"{desktop_side.base}/v1/pairings")).raise_for_status().json()
        claimed = (await http.post(f"{phone_side.base}/v1/pairings/claim", json={"code": opened["code"]})).raise_for_status().json()
        phone = {"Authorization": f"Bearer {claimed['phone_token']}"}
        async with connect(f"{desktop_side.ws_base}/v1/sync?token={opened['desktop_token']}") as ws:
            assert json.loads(await ws.recv())["type"] == "hello"

            async def created() -> float:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                    if frame.get("id") is not None:
                        await ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
                    if frame["type"] == "asset.created":
                        return time.perf_counter()

            latencies = []
            for photo in photos:  # one at a time: the latency a user waits, not a queue's
                waiting = asyncio.create_task(created())
                started = time.perf_counter()
                reply = await http.post(f"{phone_side.base}/v1/captures", headers=phone,
                                        files={"image_file": ("c.jpg", photo, "image/jpeg")})
                reply.raise_for_status()
                latencies.append(await asyncio.wait_for(waiting, 60) - started)
    return {"p50": statistics.median(latencies), "p95": _pct(latencies, 0.95)}


def _run(replicas: int, args: argparse.Namespace, clip_images: list[bytes], photos: list[bytes]) -> dict[str, Any]:
    from tests.topology.servers import running_topology, triton_statistics

    # The replicas as a deployment runs them: several requests in flight to Triton each.
    env = {"ARCLIP_INFERENCE_MAX_IN_FLIGHT": "8", "ARCLIP_MAX_BATCH_SIZE": "4", "ARCLIP_WORKERS": "2"}
    with tempfile.TemporaryDirectory(prefix="arclip-topology-") as root:
        with running_topology(Path(root), Path(root) / "models", replicas=replicas, env=env) as topology:
            serving = [topology.a] if replicas == 1 else [topology.a, topology.b]

            async def measure() -> dict[str, Any]:
                clips = await _clips(topology, serving, clip_images, args.clips, args.concurrency)
                captures = await _captures(topology.a, serving[-1], photos)
                return {"clips": clips, "captures": captures, "batches": (await triton_statistics(topology))["batches"]}

            return asyncio.run(measure())


def main() -> None:
    from benchmarks.sync.scene import object_photo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="clips per topology")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--captures", type=int, default=12, help="captures per topology, one at a time")
    args = parser.parse_args()

    clip_images = [object_photo(seed=s) for s in range(4)]  # 1280x960 phone-like JPEGs
    photos = [object_photo(seed=10 + s) for s in range(args.captures)]
    print(f"{args.clips} clips of 1280x960 JPEGs at concurrency {args.concurrency}; {args.captures} captures "
          "(desktop on A, phone on the last replica); PostgreSQL, Redis, SeaweedFS S3, Triton on loopback")
    for replicas in (1, 2):
        result = _run(replicas, args, clip_images, photos)
        clips, captures = result["clips"], result["captures"]
        where = "phone on A too" if replicas == 1 else "phone on B: through Redis"
        print(
            f"{replicas} replica{'s' if replicas > 1 else ' '}: clip {clips['images_s']:.2f} images/s "
            f"(p50 {clips['p50'] * 1000:.0f} ms, p95 {clips['p95'] * 1000:.0f} ms); "
            f"capture -> asset.created p50 {captures['p50'] * 1000:.0f} ms, p95 {captures['p95'] * 1000:.0f} ms "
            f"({where}); Triton batches {dict(sorted(result['batches'].items()))}"
        )


if __name__ == "__main__":
    main()
