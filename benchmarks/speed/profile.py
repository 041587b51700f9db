"""``--profile``: where our pipeline spends its time, in process (no HTTP).

Each stage runs alone, one after the other, on every test image; wall time and
process CPU time are reported (CPU time stays honest on a busy machine, and
process CPU includes onnxruntime's and OpenCV's worker threads). Then the engine end to end (stages overlapped as in production) at
concurrency 1 and 4: compare with the HTTP figures to see the web layer's share.
The model and engine are built as the server builds them (``ARCLIP_MODEL_PRECISION``,
``ARCLIP_EXTRA_PASSES``; by default int8 and the flip pass on a CPU); the int8 graph is
cached under OUT/models.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from pathlib import Path

from .images import ensure_images


def _timed(samples: dict[str, list[tuple[float, float]]], name: str, fn, *args):  # type: ignore[no-untyped-def]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fn(*args)
    samples[name].append((time.perf_counter() - wall0, time.process_time() - cpu0))
    return result


def profile(args) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from api.app import build_model, engine_config
    from api.settings import Settings
    from segmentation import ClipEngine, ClipOptions
    from segmentation.alpha import saliency_to_alpha
    from segmentation.cutout import foreground_box, rgba_zeroed
    from segmentation.decode import ImageLimits, probe
    from segmentation.encode import encode
    from segmentation.engine import _decode_resized, tune_malloc
    from segmentation.preprocess import fit_within, to_model_input

    paths = ensure_images(Path(args.out), f"jpeg_{args.width}x{args.height}", args.images, args.width, args.height)
    datas = [p.read_bytes() for p in paths]
    # The model and engine as `arclip serve` builds them (ARCLIP_* variables apply).
    settings = Settings(data_dir=Path(args.out), max_batch_size=1)
    model = build_model(settings)
    config = engine_config(settings, model)
    print(f"model: u2netp, {model.precision} on {model.provider}, extra passes: {','.join(config.extra_passes) or 'none'}")
    if config.tune_malloc:
        tune_malloc()  # as the engine does, before any image is allocated
    limits = ImageLimits()
    options = ClipOptions()
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    model.predict(np.zeros((1, 3, 320, 320), np.float32))  # warm-up
    for data in datas * 2:
        info = _timed(samples, "probe (header, EXIF)", probe, data, limits)
        work_size = fit_within(info.width, info.height, config.work_side)
        work = _timed(samples, "decode work (DCT-scaled)", _decode_resized, data, info, work_size)
        tensor = _timed(samples, "to_model_input", to_model_input, work.rgb, model.preset)
        saliency = _timed(samples, "inference", model.predict, tensor[None])[0]
        full = _timed(samples, "decode full + orient", _decode_resized, data, info, (info.width, info.height))
        alpha = _timed(samples, "alpha (saliency_to_alpha)", saliency_to_alpha, saliency, work.rgb, full.rgb, config.alpha)
        _timed(samples, "foreground box", foreground_box, alpha)
        pixels = _timed(samples, "compose RGBA", rgba_zeroed, full.rgb, alpha)
        _timed(samples, "encode PNG", encode, pixels, "png")

    print(f"stages, median over {len(datas) * 2} runs of {len(datas)} images {args.width}x{args.height}:")
    print(f"  {'stage':<28}{'wall ms':>9}{'CPU ms':>9}")
    total_wall = total_cpu = 0.0
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values) * 1000
        cpu = statistics.median(v[1] for v in values) * 1000
        total_wall += wall
        total_cpu += cpu
        print(f"  {name:<28}{wall:>9.1f}{cpu:>9.1f}")
    print(f"  {'sum (sequential)':<28}{total_wall:>9.1f}{total_cpu:>9.1f}")

    async def engine_run(concurrency: int, count: int) -> tuple[float, float, float]:
        engine = ClipEngine(model, config)
        await engine.start()
        try:
            await engine.clip(datas[0], options)
            latencies: list[float] = []
            queue = list(range(count))

            async def worker() -> None:
                while queue:
                    i = queue.pop()
                    started = time.perf_counter()
                    await engine.clip(datas[i % len(datas)], options)
                    latencies.append(time.perf_counter() - started)

            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - wall0
            return statistics.median(latencies), count / wall, (time.process_time() - cpu0) / count
        finally:
            await engine.close()

    for concurrency, count in ((1, len(datas) * 2), (4, len(datas) * 3)):
        median, rate, cpu = asyncio.run(engine_run(concurrency, count))
        print(
            f"engine in-process c={concurrency}: median {median:.3f} s, {rate:.2f} img/s, "
            f"{cpu:.3f} process CPU s/img"
        )
