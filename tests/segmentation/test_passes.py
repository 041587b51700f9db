"""Extra model passes (``segmentation.passes``): flip and aspect views, zoom second pass.

- A mirror-equivariant model gives the same map with the flip pass as without it
  (the mirrored run is mirrored back before averaging).
- The aspect view's input keeps the photo's aspect (shorter side 0.8 of the model's, multiples of 32,
  at most 2:1); a square photo gets none; maps of different grids average on the larger.
- The zoom window boxes the first pass's object, with its margin, in working pixels,
  and is skipped when nothing is salient or the object already fills the frame.
- The zoomed map lands back exactly where its crop came from.
- The engine with both passes runs the model the expected number of times and still
  cuts the object out at the right place.
- "-uncertain" passes decide from the first map alone: a crisp map gets no second run,
  an unsure one (wide soft band, faint or no object) does; the engine follows suit.
- The engine runs the aspect view at the photo's aspect (and its mirror with flip),
  cuts the same object, and skips it for a square photo or a square-only model.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from segmentation import ClipEngine, ClipOptions, EngineConfig
from segmentation.models import PRESETS
from segmentation.passes import (
    Window,
    ZoomParams,
    choose_passes,
    crop,
    View,
    is_unsure,
    merge_views,
    parse_passes,
    plan_views,
    zoom_merge,
    zoom_window,
)
from segmentation.preprocess import aspect_size, aspect_view_size, flipped_input, to_model_input
from segmentation.session import FunctionModel
from tests.conftest import alpha_box, encode_image, photo

PRESET = PRESETS["u2net"]


def _redness(x: np.ndarray) -> np.ndarray:
    """A model that finds red things: it sees where it is looking, mirror for mirror."""
    return (x[0] - x[1] > 1.5).astype(np.float32)


def _disk_map(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.float32)


# --- parsing ---------------------------------------------------------------------


def test_parse_passes_canonical_order_and_none() -> None:
    assert parse_passes("flip, zoom") == ("zoom", "flip")
    assert parse_passes("") == ()
    assert parse_passes("none") == ()
    assert parse_passes(None) == ()
    assert parse_passes(["FLIP"]) == ("flip",)
    assert parse_passes("flip-uncertain,zoom") == ("zoom", "flip-uncertain")
    assert parse_passes("flip,flip-uncertain") == ("flip",)  # flip always runs: it wins
    assert parse_passes("aspect-uncertain,aspect,flip") == ("flip", "aspect")
    assert parse_passes("aspect-flip-uncertain,flip-uncertain") == ("flip-uncertain", "aspect-flip-uncertain")
    assert parse_passes("aspect-flip,aspect-flip-uncertain") == ("aspect-flip",)
    with pytest.raises(ValueError, match="scale"):
        parse_passes("zoom,scale")


def test_auto_spends_extra_runs_where_they_share_a_batch_else_only_when_unsure() -> None:
    assert choose_passes("auto", "CUDAExecutionProvider") == ("flip", "aspect")
    assert choose_passes("auto", "TensorrtExecutionProvider") == ("flip", "aspect")
    assert choose_passes("auto", "CPUExecutionProvider") == ("flip-uncertain", "aspect-flip-uncertain")
    assert choose_passes("", "CUDAExecutionProvider") == ()  # asked for none: none
    assert choose_passes("flip,zoom", "CPUExecutionProvider") == ("zoom", "flip")


def test_a_square_only_model_gets_no_aspect_pass() -> None:
    assert choose_passes("auto", "CUDAExecutionProvider", any_size=False) == ("flip",)
    assert choose_passes("auto", "CPUExecutionProvider", any_size=False) == ("flip-uncertain",)
    assert choose_passes("aspect,zoom", "CPUExecutionProvider", any_size=False) == ("zoom",)


def test_settings_default_to_auto_and_refuse_unknown_passes() -> None:
    from pydantic import ValidationError

    from api.app import engine_config
    from api.settings import Settings

    assert Settings().extra_passes == "auto"
    assert Settings(extra_passes="flip,zoom").extra_passes == "zoom,flip"
    with pytest.raises(ValidationError):
        Settings(extra_passes="mirror")
    cpu_model = FunctionModel(PRESET, _redness)
    assert engine_config(Settings(), cpu_model).extra_passes == ("flip-uncertain", "aspect-flip-uncertain")
    assert engine_config(Settings(extra_passes=""), cpu_model).extra_passes == ()
    assert engine_config(Settings(extra_passes="flip"), cpu_model).extra_passes == ("flip",)


# --- flip ------------------------------------------------------------------------


def test_flip_of_an_equivariant_model_equals_the_single_pass() -> None:
    rgb = photo(320, 240, center=(80, 100), radius=40)  # off-centre: a mirror mix-up would show
    tensor = to_model_input(rgb, PRESET)
    plain = _redness(tensor)
    merged = merge_views([plain, _redness(flipped_input(tensor))[..., ::-1]])
    np.testing.assert_array_equal(merged, plain)


def test_flipped_input_is_the_mirrored_photos_input() -> None:
    rgb = photo(300, 200, center=(60, 90), radius=30, seed=3)
    np.testing.assert_allclose(
        flipped_input(to_model_input(rgb, PRESET)), to_model_input(np.ascontiguousarray(rgb[:, ::-1]), PRESET), atol=1e-5
    )


def test_merge_views_averages_disagreement() -> None:
    left = np.zeros((4, 4), np.float32)
    left[:, 0] = 1.0  # the plain run sees something on the left
    merged = merge_views([left, np.zeros((4, 4), np.float32)])
    assert merged[0, 0] == pytest.approx(0.5) and merged[:, 1:].max() == 0.0
    assert merge_views([left]) is left


def test_merge_views_averages_on_the_larger_grid() -> None:
    square = np.zeros((320, 320), np.float32)
    square[:, :160] = 1.0  # left half
    wide = np.zeros((320, 416), np.float32)
    wide[:, :208] = 1.0  # the same left half, on the aspect view's grid
    merged = merge_views([square, wide])
    assert merged.shape == (320, 416)
    assert merged[:, :200].min() == pytest.approx(1.0) and merged[:, 216:].max() == 0.0


# --- aspect ------------------------------------------------------------------------


def test_aspect_size_keeps_the_photos_aspect_in_multiples_of_32() -> None:
    assert aspect_size(4032, 3024, 320) == (416, 320)  # 4:3 -> 426.7 -> 416
    assert aspect_size(3024, 4032, 320) == (320, 416)  # portrait
    assert aspect_size(1920, 1080, 320) == (576, 320)  # 16:9 -> 568.9 -> 576
    assert aspect_size(1000, 1000, 320) == (320, 320)  # square: the square input itself
    assert aspect_size(1030, 1000, 320) == (320, 320)
    assert aspect_size(6000, 1000, 320) == (640, 320)  # a panorama: capped at 2:1


def test_the_aspect_views_are_smaller_than_the_square_one_and_skip_a_square_photo() -> None:
    assert aspect_view_size(4032, 3024, 320) == (352, 256)  # shorter side 0.8 x 320
    assert aspect_view_size(3024, 4032, 320) == (256, 352)
    assert aspect_view_size(4032, 3024, 320, scale=1.0) == (416, 320)
    assert aspect_view_size(6000, 1000, 320) == (512, 256)  # capped at 2:1
    assert aspect_view_size(1000, 1000, 320) is None  # about square: the square view is its aspect
    assert aspect_view_size(1030, 1000, 320) is None
    assert aspect_view_size(1024, 1024, 1024) is None
    assert aspect_view_size(1365, 1024, 1024) == (1120, 832)  # another model's side: multiples of 32


def test_plan_views_runs_unconditional_views_first_and_the_rest_when_unsure() -> None:
    mirrored, wide, wide_mirrored = View(False, True), View(True, False), View(True, True)
    assert plan_views(()) == ([], [])
    assert plan_views(("flip",)) == ([mirrored], [])
    assert plan_views(("flip", "aspect")) == ([mirrored, wide, wide_mirrored], [])
    assert plan_views(("flip-uncertain", "aspect-uncertain")) == ([], [mirrored, wide, wide_mirrored])
    # Flip always, aspect when unsure: the wide view and its mirror come later.
    assert plan_views(("flip", "aspect-uncertain")) == ([mirrored], [wide, wide_mirrored])
    assert plan_views(("aspect",)) == ([wide], [])
    # The CPU default: where unsure, two mirrored views, one of each shape.
    assert plan_views(("flip-uncertain", "aspect-flip-uncertain")) == ([], [mirrored, wide_mirrored])
    assert plan_views(("aspect-flip",)) == ([wide_mirrored], [])
    assert plan_views(("flip", "aspect", "aspect-flip-uncertain")) == ([mirrored, wide, wide_mirrored], [])


# --- zoom window -----------------------------------------------------------------


def test_zoom_window_boxes_the_object_with_margin() -> None:
    sal = np.zeros((100, 100), np.float32)
    sal[20:40, 50:60] = 1.0  # grid cells x 50..59, y 20..39
    window = zoom_window(sal, (1000, 500), ZoomParams(margin=0.1))
    # x: 500..600 px, y: 100..200 px; margin 0.1 x the longer side (100 px) = 10 px.
    assert window == Window(left=490, top=90, right=610, bottom=210)


def test_zoom_window_stays_inside_the_image() -> None:
    sal = np.zeros((100, 100), np.float32)
    sal[0:10, 0:30] = 1.0
    assert zoom_window(sal, (400, 400), ZoomParams(margin=0.1)) == Window(left=0, top=0, right=132, bottom=52)


def test_zoom_window_skips_nothing_and_frame_filling_objects() -> None:
    assert zoom_window(np.zeros((50, 50), np.float32), (500, 500)) is None
    big = np.zeros((50, 50), np.float32)
    big[2:48, 2:48] = 1.0
    assert zoom_window(big, (500, 500)) is None


# --- zoom merge ------------------------------------------------------------------


def test_zoomed_map_lands_where_its_crop_came_from() -> None:
    work_size = (800, 400)
    window = Window(left=400, top=100, right=600, bottom=300)
    # The zoomed run sees a disk centred in its crop: (500, 200) in working pixels.
    zoomed = _disk_map(320, 320, 159.5, 159.5, 80)
    merged = zoom_merge(np.zeros((320, 320), np.float32), zoomed, window, work_size, 320, ZoomParams(blend=1.0))
    h, w = merged.shape
    assert w / h == pytest.approx(2.0, rel=0.01)  # the image's aspect, not the model's square
    ys, xs = np.nonzero(merged > 0.5)
    assert xs.mean() * 800 / w == pytest.approx(500, abs=4)
    assert ys.mean() * 400 / h == pytest.approx(200, abs=4)
    # Disk radius: 80/320 of the 200-px crop = 50 working px.
    assert (xs.max() - xs.min() + 1) * 800 / w == pytest.approx(100, abs=6)


def test_zoom_merge_keeps_the_first_map_outside_the_window_and_blends_inside() -> None:
    first = np.full((100, 100), 0.2, np.float32)
    window = Window(left=20, top=20, right=80, bottom=80)
    merged = zoom_merge(first, np.ones((50, 50), np.float32), window, (100, 100), 100, ZoomParams(blend=0.5))
    grid = merged.shape[0] / 100
    assert merged[0, 0] == pytest.approx(0.2)
    centre = merged[round(50 * grid), round(50 * grid)]
    assert centre == pytest.approx(0.6)  # half way between 0.2 and 1
    assert merged[round(21 * grid), round(50 * grid)] < centre  # faded at the window's edge


def test_crop_takes_the_window() -> None:
    rgb = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    np.testing.assert_array_equal(crop(rgb, Window(2, 3, 7, 9)), rgb[3:9, 2:7])


# --- engine ----------------------------------------------------------------------


def _cut_by(model: FunctionModel, passes: tuple[str, ...], data: bytes, aspect_first: bool = True) -> np.ndarray:
    """The engine's alpha for ``data`` with ``model`` and these extra passes."""

    async def go() -> np.ndarray:
        config = EngineConfig(
            concurrency=1, extra_passes=passes, aspect_first=aspect_first, tune_malloc=False  # type: ignore[arg-type]
        )
        engine = ClipEngine(model, config)
        await engine.start()
        try:
            return (await engine.cut(data, ClipOptions())).alpha
        finally:
            await engine.close()

    return asyncio.run(go())


def _cut(passes: tuple[str, ...], data: bytes) -> tuple[np.ndarray, FunctionModel]:
    model = FunctionModel(PRESET, _redness, max_batch=1)
    return _cut_by(model, passes, data), model


def test_engine_zoom_and_flip_run_the_model_four_times_and_cut_the_same_object() -> None:
    # A small object off centre: the zoom window is a small part of the frame.
    data = encode_image(photo(640, 480, center=(470, 150), radius=45), "PNG")
    plain, plain_model = _cut((), data)
    both, both_model = _cut(("zoom", "flip"), data)
    assert sum(plain_model.batches) == 1
    assert sum(both_model.batches) == 4  # image, mirror; crop, mirrored crop
    box = alpha_box(both)
    assert box == pytest.approx(alpha_box(plain), abs=3)
    assert box == pytest.approx((425, 105, 91, 91), abs=4)  # the disk: x 425..515, y 105..195
    assert np.abs(both.astype(int) - plain.astype(int)).mean() < 1.0


def test_engine_without_passes_runs_the_model_once() -> None:
    data = encode_image(photo(320, 240), "PNG")
    _, model = _cut((), data)
    assert model.batches == [1]


# --- the -uncertain passes -----------------------------------------------------------


def _soft_disk(h: int, w: int, r: float, rim: float) -> np.ndarray:
    """A disk of radius ``r`` whose edge ramps 1 -> 0 over ``rim`` pixels."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    return np.clip((r + rim / 2 - d) / rim, 0, 1).astype(np.float32)


def test_a_crisp_map_needs_no_mirrored_run() -> None:
    assert not is_unsure(_disk_map(320, 320, 160, 160, 60))  # hard edge: no mid values
    assert not is_unsure(_soft_disk(320, 320, 60, rim=3))  # a thin anti-aliased rim


def test_an_unsure_map_gets_the_mirrored_run() -> None:
    assert is_unsure(_soft_disk(320, 320, 60, rim=30))  # a wide soft band around the object
    assert is_unsure(np.full((320, 320), 0.3, np.float32))  # faint everywhere, nothing solid
    assert is_unsure(np.zeros((320, 320), np.float32) + 0.15)
    # A solid object plus a blob the model is unsure about.
    two = np.maximum(_disk_map(320, 320, 100, 160, 40), 0.5 * _disk_map(320, 320, 240, 160, 40))
    assert is_unsure(two)


def test_is_unsure_is_deterministic_and_grid_independent() -> None:
    soft = _soft_disk(320, 320, 60, rim=30)
    assert is_unsure(soft) == is_unsure(soft.copy())
    assert is_unsure(soft[::2, ::2]) and not is_unsure(_soft_disk(320, 320, 60, rim=3)[::2, ::2])


def _uncertain_redness(x: np.ndarray) -> np.ndarray:
    """Finds red things, half sure of them only: every red pixel is at 0.6."""
    return 0.6 * _redness(x)


def _cut_with(fn, passes: tuple[str, ...], data: bytes) -> FunctionModel:  # type: ignore[no-untyped-def]
    model = FunctionModel(PRESET, fn, max_batch=1)
    _cut_by(model, passes, data)
    return model


def test_engine_flip_uncertain_runs_the_model_again_only_when_unsure() -> None:
    data = encode_image(photo(320, 240), "PNG")
    assert sum(_cut_with(_redness, ("flip-uncertain",), data).batches) == 1  # crisp: one run
    assert sum(_cut_with(_uncertain_redness, ("flip-uncertain",), data).batches) == 2  # unsure: mirrored too
    assert sum(_cut_with(_redness, ("flip",), data).batches) == 2  # flip: always both


def test_engine_uncertain_passes_add_every_view_only_when_unsure() -> None:
    data = encode_image(photo(320, 240), "PNG")  # 4:3: an aspect view of 352x256
    passes = ("flip-uncertain", "aspect-uncertain")
    assert sum(_cut_with(_redness, passes, data).batches) == 1
    assert sum(_cut_with(_uncertain_redness, passes, data).batches) == 4  # mirror, wide, wide mirror
    mirrors = ("flip-uncertain", "aspect-flip-uncertain")
    assert sum(_cut_with(_redness, mirrors, data).batches) == 1
    assert sum(_cut_with(_uncertain_redness, mirrors, data).batches) == 3  # mirror, wide mirror


def _recording(shapes: list[tuple[int, ...]]):  # type: ignore[no-untyped-def]
    def fn(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return _redness(x)

    return fn


def test_engine_aspect_view_runs_at_the_photos_aspect_and_cuts_the_same_object() -> None:
    data = encode_image(photo(640, 480, center=(470, 150), radius=45), "PNG")
    plain, _ = _cut((), data)
    shapes: list[tuple[int, ...]] = []
    model = _cut_with(_recording(shapes), ("flip", "aspect"), data)
    assert sum(model.batches) == 4
    assert sorted(shapes) == [(3, 256, 352)] * 2 + [(3, 320, 320)] * 2  # the aspect views at 0.8 of the side
    both, _ = _cut(("flip", "aspect"), data)
    assert alpha_box(both) == pytest.approx(alpha_box(plain), abs=3)
    assert np.abs(both.astype(int) - plain.astype(int)).mean() < 1.0


def test_engine_sees_the_photo_at_its_own_aspect_first_and_the_square_only_where_unsure() -> None:
    data = encode_image(photo(320, 240), "PNG")
    inputs: list[np.ndarray] = []

    def recording(x: np.ndarray) -> np.ndarray:
        inputs.append(x.copy())
        return _uncertain_redness(x)

    # The first map reads as unsure: the first view's mirror, then the square and its mirror.
    _cut_with(recording, ("flip-uncertain", "aspect-uncertain"), data)
    assert [x.shape for x in inputs] == [(3, 256, 352)] * 2 + [(3, 320, 320)] * 2
    assert np.array_equal(inputs[1], inputs[0][..., ::-1]) and np.array_equal(inputs[3], inputs[2][..., ::-1])
    # The CPU default: the first view's mirror, then the square's mirror (no plain square).
    inputs.clear()
    _cut_with(recording, ("flip-uncertain", "aspect-flip-uncertain"), data)
    assert [x.shape for x in inputs] == [(3, 256, 352)] * 2 + [(3, 320, 320)]
    assert np.array_equal(inputs[1], inputs[0][..., ::-1])
    assert np.allclose(inputs[2], to_model_input(photo(320, 240), PRESET)[..., ::-1])  # PNG: lossless
    # "flip" alone mirrors the first view, whichever shape it has.
    inputs.clear()
    _cut_with(recording, ("flip-uncertain",), data)
    assert [x.shape for x in inputs] == [(3, 256, 352)] * 2 and np.array_equal(inputs[1], inputs[0][..., ::-1])
    # A crisp photo is seen once, at its own aspect (what "fast" and a shedding server run).
    shapes: list[tuple[int, ...]] = []
    _cut_with(_recording(shapes), ("flip-uncertain", "aspect-uncertain"), data)
    assert shapes == [(3, 256, 352)]
    # With the square first (``aspect_first=False``) the same views run the other way round.
    inputs.clear()
    square_first = FunctionModel(PRESET, recording, max_batch=1)
    _cut_by(square_first, ("flip-uncertain", "aspect-uncertain"), data, aspect_first=False)
    assert [x.shape for x in inputs] == [(3, 320, 320)] * 2 + [(3, 256, 352)] * 2


def test_engine_skips_the_aspect_view_for_a_square_photo_or_a_square_only_model() -> None:
    square = encode_image(photo(300, 300, center=(150, 150), radius=50), "PNG")
    shapes: list[tuple[int, ...]] = []
    assert sum(_cut_with(_recording(shapes), ("aspect",), square).batches) == 1
    assert shapes == [(3, 320, 320)]

    class SquareOnly(FunctionModel):
        any_size = False

    model = SquareOnly(PRESET, _redness, max_batch=1)
    _cut_by(model, ("flip", "aspect"), encode_image(photo(640, 480), "PNG"))
    assert sum(model.batches) == 2  # the square view and its mirror only


def test_engine_aspect_view_of_a_panorama_is_capped_at_two_to_one() -> None:
    data = encode_image(photo(2000, 120, center=(1000, 60), radius=50), "PNG")
    shapes: list[tuple[int, ...]] = []
    model = _cut_with(_recording(shapes), ("flip", "aspect"), data)
    assert sum(model.batches) == 4
    assert sorted(shapes) == [(3, 256, 512)] * 2 + [(3, 320, 320)] * 2


# --- load-aware passes ----------------------------------------------------------------


def _engine(model: FunctionModel, passes: tuple[str, ...], load_aware: bool = True) -> ClipEngine:
    return ClipEngine(
        model, EngineConfig(concurrency=2, extra_passes=passes, load_aware_passes=load_aware, tune_malloc=False)  # type: ignore[arg-type]
    )


def _clip_while(others: int, quality: str, load_aware: bool = True) -> tuple[tuple[str, ...], int]:
    """Which passes a request ran, and how many model runs, with ``others`` more requests admitted.

    The request itself holds a place too, as the route's does; every map is unsure.
    """
    model = FunctionModel(PRESET, _uncertain_redness, max_batch=1)
    engine = _engine(model, ("flip-uncertain", "aspect-uncertain"), load_aware)

    async def go() -> tuple[str, ...]:
        await engine.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(others + 1):
                    await stack.enter_async_context(engine.admission())
                result = await engine.clip(encode_image(photo(320, 240), "PNG"), ClipOptions(quality=quality))  # type: ignore[arg-type]
            return result.passes
        finally:
            await engine.close()

    return asyncio.run(go()), sum(model.batches)


def test_an_idle_engine_runs_balanceds_extra_views() -> None:
    assert _clip_while(0, "balanced") == (("base", "flip", "aspect"), 4)


def test_a_busy_engine_runs_only_the_base_view_for_balanced() -> None:
    # Two requests in a two-place engine: no place is free for more runs.
    assert _clip_while(1, "balanced") == (("base",), 1)
    assert _clip_while(5, "balanced") == (("base",), 1)


def test_best_and_a_load_blind_engine_run_every_view_however_busy() -> None:
    # Four views, then the square one and its mirror on the (square) crop around the disk.
    assert _clip_while(5, "best") == (("base", "flip", "aspect", "zoom"), 6)
    assert _clip_while(5, "balanced", load_aware=False) == (("base", "flip", "aspect"), 4)
    assert _clip_while(0, "fast") == (("base",), 1)


def test_a_crisp_map_reports_the_base_view_only() -> None:
    model = FunctionModel(PRESET, _redness, max_batch=1)
    engine = _engine(model, ("flip-uncertain", "aspect-uncertain"))

    async def go() -> tuple[str, ...]:
        await engine.start()
        try:
            return (await engine.clip(encode_image(photo(320, 240), "PNG"), ClipOptions())).passes
        finally:
            await engine.close()

    assert asyncio.run(go()) == ("base",) and model.batches == [1]


def test_idle_counts_waiting_requests_and_admitted_uploads() -> None:
    engine = _engine(FunctionModel(PRESET, _redness, max_batch=1), ())

    async def go() -> list[bool]:
        seen = [engine.idle()]
        async with engine.admission():
            seen.append(engine.idle())
            async with engine.admission():
                seen.append(engine.idle())
        seen.append(engine.idle())
        return seen

    try:
        assert asyncio.run(go()) == [True, True, False, True]
    finally:
        engine._pool.shutdown()
