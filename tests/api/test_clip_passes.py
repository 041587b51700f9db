"""X-Clip-Passes: what the model ran for a /v1/clip request, and balanced's views shed under load."""

from __future__ import annotations

import contextlib

import numpy as np

from segmentation.models import PRESETS
from segmentation.session import FunctionModel
from tests.conftest import encode_image, photo


def _half_sure_of_red(x: np.ndarray) -> np.ndarray:
    """Every map 'unsure' (``passes.is_unsure``): the CPU default's extra views are wanted."""
    return 0.6 * (x[0] - x[1] > 1.5).astype(np.float32)


IMAGE = encode_image(photo(320, 240), "PNG")


async def test_passes_header_says_what_ran_idle_and_busy(app_factory) -> None:
    model = FunctionModel(PRESETS["u2net"], _half_sure_of_red, max_batch=1)
    async with app_factory(model, workers=2, extra_passes="flip-uncertain,aspect-uncertain") as api:
        idle = await api.clip(IMAGE, "photo.png", "image/png")
        assert idle.status_code == 200, idle.text
        assert idle.headers["X-Clip-Passes"] == "base,flip,aspect"
        assert sum(model.batches) == 4

        fast = await api.clip(IMAGE, "photo.png", "image/png", quality="fast")
        assert fast.headers["X-Clip-Passes"] == "base"

        # Another upload admitted beside this one fills the two-place engine: balanced sheds its views.
        engine = api.services.clipper.engine
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(engine.admission())
            before = sum(model.batches)
            busy = await api.clip(IMAGE, "photo.png", "image/png")
            assert busy.status_code == 200 and busy.headers["X-Credits-Charged"] == "1"
            assert busy.headers["X-Clip-Passes"] == "base"
            assert sum(model.batches) - before == 1
            best = await api.clip(IMAGE, "photo.png", "image/png", quality="best")
            assert best.headers["X-Clip-Passes"].startswith("base,flip,aspect")


async def test_passes_can_ignore_load(app_factory) -> None:
    model = FunctionModel(PRESETS["u2net"], _half_sure_of_red, max_batch=1)
    settings = dict(workers=2, extra_passes="flip-uncertain,aspect-uncertain", load_aware_passes=False)
    async with app_factory(model, **settings) as api:
        async with api.services.clipper.engine.admission():
            busy = await api.clip(IMAGE, "photo.png", "image/png")
        assert busy.headers["X-Clip-Passes"] == "base,flip,aspect"
