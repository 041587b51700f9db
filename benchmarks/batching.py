"""``python -m benchmarks.batching``: model images/s at several batch sizes, for the GPU figures.

    python -m benchmarks.batching                          # best provider, batches 1,8,32
    python -m benchmarks.batching --providers cpu --batches 1,2

The shipped u2netp, its batch dimension made dynamic at load (and proven), is run
on batches of distinct 320x320 inputs made from the speed benchmark's photos;
each batch size is timed over ``--seconds`` after a warm-up, and images/s, ms per
batch and the speed-up over batch 1 are printed. Then the whole engine (decode,
micro-batcher, alpha, PNG) at ``--concurrency`` in process, as ``arclip serve`` builds
it with ``ARCLIP_MAX_BATCH_SIZE`` set to the largest batch. Needs onnxruntime-gpu
(it replaces onnxruntime) for CUDA; nothing is fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def model_rates(model, inputs: np.ndarray, batches: list[int], seconds: float) -> dict[int, float]:  # type: ignore[no-untyped-def]
    rates: dict[int, float] = {}
    for size in batches:
        batch = np.concatenate([inputs] * (size // len(inputs) + 1))[:size]
        model.predict(batch)  # warm-up: allocations, kernel selection
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
            model.predict(batch)
            runs += 1
        rates[size] = runs * size / elapsed
        print(f"  batch {size:>3}: {rates[size]:8.1f} images/s  {1000 * elapsed / runs:8.1f} ms/batch  "
              f"{rates[size] / rates[batches[0]]:5.2f}x batch {batches[0]}")
    return rates


async def engine_rate(engine, datas: list[bytes], requests: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    from segmentation import ClipOptions

    await engine.start()
    try:
        await engine.clip(datas[0], ClipOptions())
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                await engine.clip(datas[queue.pop() % len(datas)], ClipOptions())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", default=None, help="as ARCLIP_PROVIDERS (default: best available)")
    parser.add_argument("--batches", type=_ints, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed per batch size")
    parser.add_argument("--concurrency", type=int, default=32, help="engine requests in flight")
    parser.add_argument("--requests", type=int, default=96, help="engine requests timed (0: skip the engine)")
    parser.add_argument("--out", type=Path, default=Path(".bench/speed"))
    args = parser.parse_args(argv)

    from api.app import build_engine, build_model
    from api.settings import Settings
    from segmentation.preprocess import to_model_input

    from .speed.images import ensure_images

    paths = ensure_images(args.out, "jpeg_1008x756", 8, 1008, 756)
    settings = Settings(
        data_dir=args.out / "arclip", providers=args.providers, max_batch_size=max(args.batches), model_precision="fp32"
    )
    model = build_model(settings)
    print(f"u2netp fp32 on {model.provider}, max batch {model.max_batch}")
    from PIL import Image

    inputs = np.stack([to_model_input(np.asarray(Image.open(p).convert("RGB")), model.preset) for p in paths])
    model_rates(model, inputs, [b for b in args.batches if b <= model.max_batch], args.seconds)
    if args.requests:
        datas = [p.read_bytes() for p in ensure_images(args.out, "jpeg_4032x3024", 8, 4032, 3024)]
        engine = build_engine(settings, model)
        passes = ",".join(engine.config.extra_passes) or "none"
        rate = asyncio.run(engine_rate(engine, datas, args.requests, args.concurrency))
        print(f"  engine, 12 MP JPEG -> RGBA PNG, concurrency {args.concurrency}, extra passes {passes}: {rate:.2f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
