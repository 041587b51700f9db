"""The micro-batcher: concurrent requests share one model run, with in-memory models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from segmentation import ClipEngine, ClipOptions, EngineConfig
from segmentation.batching import MicroBatcher
from segmentation.models import PRESETS
from segmentation.session import FunctionModel
from tests.conftest import disk_model, encode_image, photo


def mean_model(max_batch: int = 8) -> FunctionModel:
    """Saliency = per-pixel mean over channels, so each output is traceable to its input."""
    return FunctionModel(PRESETS["u2net"], lambda x: x.mean(axis=0), max_batch=max_batch)


def tensors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 320, 320)).astype(np.float32) for _ in range(count)]


async def test_inputs_of_different_sizes_run_in_batches_of_their_own_size() -> None:
    model = mean_model(max_batch=8)
    batcher = MicroBatcher(model, max_wait=0.05)
    await batcher.start()
    try:
        rng = np.random.default_rng(1)
        inputs = [rng.standard_normal((3, 320, w)).astype(np.float32) for w in (320, 416, 320, 416, 576)]
        outputs = await asyncio.gather(*(batcher.infer(t) for t in inputs))
    finally:
        await batcher.close()
    assert sorted(model.batches) == [1, 2, 2]  # one run per size, all from one collected batch
    for t, out in zip(inputs, outputs):
        assert out.shape == t.shape[1:] and np.allclose(out, t.mean(axis=0))


async def test_concurrent_requests_share_one_batch() -> None:
    model = mean_model(max_batch=8)
    batcher = MicroBatcher(model, max_wait=0.05)
    await batcher.start()
    try:
        inputs = tensors(5)
        outputs = await asyncio.gather(*(batcher.infer(t) for t in inputs))
    finally:
        await batcher.close()
    assert model.batches == [5]
    for t, out in zip(inputs, outputs):
        assert out.shape == (320, 320)
        assert np.allclose(out, t.mean(axis=0)), "each caller must get its own input's result"


async def test_batch_size_is_capped() -> None:
    model = mean_model(max_batch=8)
    batcher = MicroBatcher(model, max_batch=3, max_wait=0.05)
    await batcher.start()
    try:
        inputs = tensors(7)
        outputs = await asyncio.gather(*(batcher.infer(t) for t in inputs))
    finally:
        await batcher.close()
    assert sum(model.batches) == 7 and max(model.batches) <= 3
    assert model.batches == [3, 3, 1]
    for t, out in zip(inputs, outputs):
        assert np.allclose(out, t.mean(axis=0))


async def test_model_max_batch_caps_the_batcher() -> None:
    model = mean_model(max_batch=1)
    batcher = MicroBatcher(model, max_batch=8, max_wait=0.05)
    assert batcher.max_batch == 1
    await batcher.start()
    try:
        await asyncio.gather(*(batcher.infer(t) for t in tensors(3)))
    finally:
        await batcher.close()
    assert model.batches == [1, 1, 1]


async def test_a_lone_request_is_not_held_longer_than_max_wait() -> None:
    model = mean_model()
    batcher = MicroBatcher(model, max_wait=0.02)
    await batcher.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.infer(tensors(1)[0])
        assert loop.time() - started < 1.0
    finally:
        await batcher.close()
    assert model.batches == [1]


async def test_a_failing_run_fails_its_jobs_and_the_batcher_survives() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        if x[0, 0, 0] > 1000:
            raise RuntimeError("boom")
        return x.mean(axis=0)

    model = FunctionModel(PRESETS["u2net"], fn, max_batch=1)
    batcher = MicroBatcher(model, max_wait=0.001)
    await batcher.start()
    try:
        bad = np.zeros((3, 320, 320), np.float32)
        bad[0, 0, 0] = 2000
        with pytest.raises(RuntimeError):
            await batcher.infer(bad)
        good = tensors(1)[0]
        assert np.allclose(await batcher.infer(good), good.mean(axis=0))
    finally:
        await batcher.close()


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    model = mean_model()
    batcher = MicroBatcher(model, max_wait=0.05)
    await batcher.start()
    try:
        inputs = tensors(3)
        doomed = asyncio.ensure_future(batcher.infer(inputs[0]))
        others = [asyncio.ensure_future(batcher.infer(t)) for t in inputs[1:]]
        await asyncio.sleep(0)
        doomed.cancel()
        results = await asyncio.gather(*others)
    finally:
        await batcher.close()
    for t, out in zip(inputs[1:], results):
        assert np.allclose(out, t.mean(axis=0))


async def test_engine_clips_share_a_batch_and_match_single_runs() -> None:
    images = [encode_image(photo(320, 240, seed=i), "PNG") for i in range(4)]

    single_model = disk_model(max_batch=8)
    engine = ClipEngine(single_model, EngineConfig(concurrency=4, max_batch_wait=0.001))
    await engine.start()
    try:
        singles = [await engine.clip(data, ClipOptions()) for data in images]
    finally:
        await engine.close()
    assert single_model.batches == [1, 1, 1, 1]

    shared_model = disk_model(max_batch=8)
    engine = ClipEngine(shared_model, EngineConfig(concurrency=4, max_batch_wait=0.3))
    await engine.start()
    try:
        together = await asyncio.gather(*(engine.clip(data, ClipOptions()) for data in images))
    finally:
        await engine.close()
    assert max(shared_model.batches) > 1, f"concurrent clips did not share a batch: {shared_model.batches}"
    assert sum(shared_model.batches) == 4
    for a, b in zip(singles, together):
        assert a.data == b.data
        assert a.foreground == b.foreground


async def test_http_requests_share_a_batch(app_factory) -> None:
    model = disk_model(max_batch=8)
    async with app_factory(model, workers=4, max_batch_size=8, max_batch_wait_ms=300) as api:
        data = encode_image(photo(320, 240), "JPEG")
        responses = await asyncio.gather(*(api.clip(data) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert max(model.batches) > 1, f"concurrent requests did not share a batch: {model.batches}"
    assert len({r.content for r in responses}) == 1
