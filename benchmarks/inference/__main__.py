"""``python -m benchmarks.inference``: /v1/clip with the model in-process against the model on Triton.

    python -m benchmarks.inference                                   # 12 MP JPEGs, concurrency 1,4,16
    python -m benchmarks.inference --megapixels 2 --concurrency 1,4 --requests 8

Same images, same run: the app (``create_app``, driven through its ASGI interface)
first with the in-process model, then with ``ARCLIP_INFERENCE_URL`` pointing at a
loopback ``tritonserver`` (the nvidia-pytriton wheel's; ``scripts/test.sh`` unpacks
it) serving the same fp32 graph through its Python backend and dynamic batcher.
Prints p50/p95 latency and images/s per concurrency, the batch sizes Triton formed,
and the cost of going remote as the ratio of p50s. Both sides run fp32 (the
in-process default on a CPU is int8) so that the ratio measures the transport.
On one machine both share its cores: the figures are a floor for going remote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


async def _clip_run(settings, images: list[bytes], concurrency: int, requests: int) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    import httpx

    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        _, secret = await services.keys.create("benchmark")
        for _ in range(600):  # the model loads in the background
            if services.clipper.ready:
                break
            await asyncio.sleep(0.1)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers={"X-Api-Key": secret}, timeout=600) as client:

            async def one(index: int) -> float:
                started = time.perf_counter()
                reply = await client.post("/v1/clip", files={"image_file": ("p.jpg", images[index % len(images)], "image/jpeg")})
                reply.raise_for_status()
                return time.perf_counter() - started

            await one(0)  # warm-up
            slots = asyncio.Semaphore(concurrency)

            async def limited(index: int) -> float:
                async with slots:
                    return await one(index)

            started = time.perf_counter()
            latencies = await asyncio.gather(*(limited(i) for i in range(requests)))
            return list(latencies), requests / (time.perf_counter() - started)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _batch_sizes(url: str) -> dict[int, int]:
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(url.removeprefix("grpc://"))
    try:
        stats = (await client.get_inference_statistics("u2netp", as_json=True))["model_stats"][0]
    finally:
        await client.close()
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="ARCLIP_WORKERS (default: CPU count)")
    args = parser.parse_args()

    from api.settings import Settings
    from benchmarks.speed.images import ensure_images
    from segmentation import resolve_model
    from segmentation.triton_repo import ExportOptions, export_repository
    from segmentation.triton_testing import TritonServer

    width = int((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    work = Path(tempfile.mkdtemp(prefix="arclip-bench-inference-"))
    paths = ensure_images(Path(".bench") / "inference", f"{width}x{height}", args.images, width, height)
    images = [p.read_bytes() for p in paths]
    export_repository(resolve_model("u2netp"), work / "repo", ExportOptions(backend="python", gpu=False))
    unlimited = {"free": {"rate": 1e6, "burst": 10**6, "concurrency": 10**6, "monthly_credits": 10**9}}
    base = dict(plans=unlimited, model_precision="fp32", max_queue=max(64, 2 * max(args.concurrency)))
    if args.workers:
        base["workers"] = args.workers
    print(f"{len(images)} JPEGs of {width}x{height}, {args.requests} requests per level")
    results: dict[str, dict[int, tuple[float, float, float]]] = {}
    with TritonServer(work / "repo", work) as server:
        for mode in ("in-process", "triton"):
            extra = {"inference_url": server.grpc_url, "inference_timeout_s": 600} if mode == "triton" else {}
            results[mode] = {}
            for level in args.concurrency:
                settings = Settings(_env_file=None, data_dir=work / f"data-{mode}-{level}", **base, **extra)
                latencies, rate = asyncio.run(_clip_run(settings, images, level, args.requests))
                results[mode][level] = (_p(latencies, 0.5), _p(latencies, 0.95), rate)
                p50, p95, rate = results[mode][level]
                print(f"  {mode:>10} c={level:<3} p50 {p50 * 1000:8.0f} ms  p95 {p95 * 1000:8.0f} ms  {rate:6.2f} images/s")
        batches = asyncio.run(_batch_sizes(server.grpc_url))
    print("Triton executions by batch size:", dict(sorted(batches.items())))
    for level in args.concurrency:
        ratio = results["triton"][level][0] / results["in-process"][level][0]
        print(f"  c={level:<3} remote/in-process p50: {ratio:5.2f} ({(ratio - 1) * 100:+.0f} %)")
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(work)


if __name__ == "__main__":
    main()
