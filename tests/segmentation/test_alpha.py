"""Mask to alpha (segmentation/alpha.py) and foreground colour (segmentation/matting.py).

Synthetic photos with a known object; the "model" is a saliency map built by hand
at the model's 320x320 resolution, as blurry as u2netp's.
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from segmentation.alpha import AlphaParams, refine_alpha, saliency_to_alpha
from segmentation.matting import estimate_foreground

RED = np.array([205, 35, 30], np.float32)
GREEN = np.array([40, 150, 70], np.float32)
BEIGE = np.array([200, 190, 170], np.float32)


def disk(height: int, width: int, cy: float, cx: float, radius: float, soft: float = 1.0) -> np.ndarray:
    """Coverage (0..1) of a disk with an anti-aliased edge ``soft`` pixels wide."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - radius
    return np.clip(0.5 - d / soft, 0.0, 1.0)


def composite(alpha: np.ndarray, fg: np.ndarray, bg: np.ndarray, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fg = fg if fg.ndim == 3 else np.broadcast_to(fg, (*alpha.shape, 3))
    bg = bg if bg.ndim == 3 else np.broadcast_to(bg, (*alpha.shape, 3))
    image = alpha[:, :, None] * fg + (1 - alpha[:, :, None]) * bg + rng.normal(0, noise, (*alpha.shape, 3))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def model_saliency(coverage: np.ndarray) -> np.ndarray:
    """What a 320x320 model would say: the coverage, reduced and blurred."""
    small = cv2.resize(coverage.astype(np.float32), (320, 320), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), 2.0)


def reduce(rgb: np.ndarray, factor: int) -> np.ndarray:
    return cv2.resize(rgb, (rgb.shape[1] // factor, rgb.shape[0] // factor), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------ shapes


def test_output_is_full_size_uint8() -> None:
    truth = disk(600, 800, 300, 400, 180)
    full = composite(truth, RED, GREEN)
    alpha = saliency_to_alpha(model_saliency(truth), reduce(full, 4), full)
    assert alpha.shape == (600, 800) and alpha.dtype == np.uint8
    same = saliency_to_alpha(model_saliency(truth), full, full)
    assert same.shape == (600, 800) and same.dtype == np.uint8


def test_refine_alpha_also_gives_the_working_resolution_alpha() -> None:
    truth = disk(600, 800, 300, 400, 180)
    full = composite(truth, RED, GREEN)
    work = reduce(full, 4)
    alpha, work_alpha = refine_alpha(model_saliency(truth), work, full)
    assert alpha.shape == (600, 800) and work_alpha.shape == work.shape[:2]
    assert np.array_equal(alpha, saliency_to_alpha(model_saliency(truth), work, full))


def test_odd_sizes_and_tiny_images() -> None:
    for height, width in ((601, 803), (33, 47), (20, 900), (5, 7)):
        truth = disk(height, width, height / 2, width / 2, min(height, width) / 3)
        full = composite(truth, RED, GREEN)
        work = cv2.resize(full, (max(1, width // 3), max(1, height // 3)), interpolation=cv2.INTER_AREA)
        alpha = saliency_to_alpha(model_saliency(truth), work, full)
        assert alpha.shape == (height, width)
    # Views that are not plain row-major pixels (a BGR flip, a crop) work too.
    full = composite(disk(300, 400, 150, 200, 100), RED, GREEN)
    flipped = saliency_to_alpha(model_saliency(disk(300, 400, 150, 200, 100)), full[:, :, ::-1], full[:, :, ::-1])
    assert np.array_equal(flipped, saliency_to_alpha(model_saliency(disk(300, 400, 150, 200, 100)), full[:, :, ::-1].copy(), full[:, :, ::-1].copy()))
    crop = full[10:290, 20:380]
    assert estimate_foreground(crop, np.full(crop.shape[:2], 128, np.uint8)).shape == crop.shape


# ------------------------------------------------------------------------ behaviour


def test_interior_is_solid_and_background_empty() -> None:
    rng = np.random.default_rng(3)
    truth = disk(600, 800, 300, 400, 200)
    # A textured object (and a textured background): solid all the same.
    texture = np.clip(RED + rng.normal(0, 25, (600, 800, 3)), 0, 255)
    full = composite(truth, texture, GREEN, noise=4)
    alpha = saliency_to_alpha(model_saliency(truth), reduce(full, 4), full)
    inside = disk(600, 800, 300, 400, 185) >= 1
    outside = disk(600, 800, 300, 400, 220) <= 0
    assert alpha[inside].min() == 255
    assert alpha[outside].max() == 0


def test_edge_is_soft_and_on_the_photo_s_edge_at_full_resolution() -> None:
    # A 5-px soft edge at full resolution; the working image is 4x smaller, the model 320².
    truth = disk(800, 1000, 400, 500, 250.3, soft=5.0)
    full = composite(truth, RED, GREEN, noise=1)
    alpha = saliency_to_alpha(model_saliency(truth), reduce(full, 4), full).astype(np.float32) / 255
    row = alpha[400, 500:]  # from the centre outwards, crossing the edge at x = 250.3
    partial = np.flatnonzero((row > 0.05) & (row < 0.95))
    assert 2 <= partial.size <= 10, partial  # soft, but not smeared over working pixels
    crossing = np.flatnonzero(row < 0.5)[0]
    assert abs(crossing - 250.3) <= 2
    assert np.all(np.diff(row[240:262]) <= 0.02)  # falls off monotonically


def test_small_disconnected_specks_are_dropped() -> None:
    truth = disk(600, 800, 300, 300, 200)
    speck = disk(600, 800, 80, 700, 14)
    full = composite(np.maximum(truth, speck), RED, GREEN)
    alpha = saliency_to_alpha(model_saliency(np.maximum(truth, speck)), reduce(full, 4), full)
    assert alpha[300, 300] == 255
    assert alpha[60:100, 680:720].max() == 0


def test_a_second_large_object_is_kept() -> None:
    a, b = disk(600, 800, 300, 220, 150), disk(600, 800, 300, 600, 120)
    both = np.maximum(a, b)
    full = composite(both, RED, GREEN)
    alpha = saliency_to_alpha(model_saliency(both), reduce(full, 4), full)
    assert alpha[300, 220] == 255 and alpha[300, 600] == 255


def test_cast_shadow_below_the_object_is_not_part_of_it() -> None:
    height, width = 600, 800
    rng = np.random.default_rng(5)
    obj = np.zeros((height, width), np.float32)
    obj[150:400, 300:500] = 1.0
    obj = cv2.GaussianBlur(obj, (0, 0), 0.7)
    # The shadow: the silhouette moved down and right, blurred, darkening the floor.
    shadow = cv2.warpAffine(obj, np.float32([[1, 0, 40], [0, 1, 60]]), (width, height))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 6) * 0.6
    floor = np.clip(BEIGE + rng.normal(0, 6, (height, width, 3)), 0, 255)
    floor = floor * (1 - shadow[:, :, None] * np.array([1.0, 0.96, 0.88], np.float32))
    full = composite(obj, RED, floor)
    # A model that takes the shadow for part of the object, though less sure of it.
    saliency = model_saliency(np.maximum(obj, 0.7 * (shadow > 0.3)))
    alpha = saliency_to_alpha(saliency, reduce(full, 4), full)
    visible_shadow = (shadow > 0.3) & (obj < 0.01)
    assert alpha[visible_shadow].mean() < 0.1 * 255
    assert alpha[170:380, 320:480].min() == 255  # the object itself is untouched

    without = saliency_to_alpha(saliency, reduce(full, 4), full, AlphaParams(shadows=False))
    assert without[visible_shadow].mean() > 0.5 * 255  # the test does exercise the suppression


def test_shadow_coloured_parts_of_the_object_are_kept() -> None:
    height, width = 600, 800
    obj = np.zeros((height, width), np.float32)
    obj[150:450, 250:550] = 1.0
    background = np.broadcast_to(BEIGE, (height, width, 3))
    # A dark-beige patch inside the object (the model unsure of it): not attached to
    # the background, so not a cast shadow.
    colour = np.broadcast_to(RED, (height, width, 3)).copy()
    colour[250:350, 320:480] = BEIGE * 0.5
    full = composite(obj, colour, background)
    unsure = obj.copy()
    unsure[250:350, 320:480] = 0.8
    alpha = saliency_to_alpha(model_saliency(unsure), reduce(full, 4), full)
    assert alpha[170:430, 270:530].min() == 255
    # A lower half that looks just like the floor in shade, but the model is sure of it.
    colour = np.broadcast_to(RED, (height, width, 3)).copy()
    colour[300:450] = BEIGE * 0.5
    full = composite(obj, colour, background)
    alpha = saliency_to_alpha(model_saliency(obj), reduce(full, 4), full)
    assert alpha[170:430, 270:530].min() == 255


def test_whole_frame_salient_is_solid_and_nothing_salient_is_empty() -> None:
    full = composite(np.ones((120, 160), np.float32), RED, GREEN)
    assert saliency_to_alpha(np.ones((320, 320), np.float32), full, full).min() == 255
    assert saliency_to_alpha(np.full((320, 320), 0.97, np.float32), full, full).min() == 255
    assert saliency_to_alpha(np.zeros((320, 320), np.float32), full, full).max() == 0
    assert saliency_to_alpha(np.full((320, 320), 0.01, np.float32), full, full).max() == 0


# ------------------------------------------------------------------------ foreground colour


def test_soft_edge_pixels_take_the_object_s_colour_not_the_background_s() -> None:
    truth = disk(800, 1000, 400, 500, 250, soft=6.0)
    full = composite(truth, RED, GREEN, noise=1)
    work = reduce(full, 4)
    alpha, work_alpha = refine_alpha(model_saliency(truth), work, full)
    rgb = estimate_foreground(full, alpha, work, work_alpha)
    soft = (alpha > 25) & (alpha < 230)
    assert soft.sum() > 500
    before = np.linalg.norm(full[soft].astype(np.float32) - RED, axis=1).mean()
    after = np.linalg.norm(rgb[soft].astype(np.float32) - RED, axis=1).mean()
    to_green = np.linalg.norm(rgb[soft].astype(np.float32) - GREEN, axis=1).mean()
    assert after < 20 and after < before / 3 and after < to_green / 5
    # Opaque and empty pixels keep their colour, and the input is left alone.
    hard = (alpha == 0) | (alpha == 255)
    assert np.array_equal(rgb[hard], full[hard])
    assert not np.shares_memory(rgb, full)


def test_foreground_estimate_without_a_working_copy_and_in_place() -> None:
    truth = disk(300, 400, 150, 200, 100, soft=4.0)
    full = composite(truth, RED, GREEN, noise=0)
    alpha = np.clip(truth * 255 + 0.5, 0, 255).astype(np.uint8)
    expected = estimate_foreground(full, alpha)
    soft = (alpha > 25) & (alpha < 230)
    assert np.abs(expected[soft].astype(np.float32) - RED).max() < 12
    buffer = full.copy()
    out = estimate_foreground(buffer, alpha, inplace=True)
    assert out is buffer and np.array_equal(out, expected)
    # A transposed view (as an EXIF-rotated decode gives) is not row-major: same colours, in a new array.
    turned = np.ascontiguousarray(full.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not turned.flags.c_contiguous
    out = estimate_foreground(turned, alpha, inplace=True)
    assert out is not turned and np.array_equal(out, expected)


def test_foreground_estimate_is_a_no_op_on_a_hard_matte() -> None:
    full = composite(disk(200, 300, 100, 150, 60), RED, GREEN)
    alpha = np.where(disk(200, 300, 100, 150, 60) > 0.5, 255, 0).astype(np.uint8)
    assert np.array_equal(estimate_foreground(full, alpha), full)


# ------------------------------------------------------------------------ end to end


@pytest.mark.asyncio
async def test_engine_cut_out_has_clean_soft_edges() -> None:
    """Through ClipEngine: RGBA whose rim carries the object's colour; transparent is zero."""
    import io

    from PIL import Image

    from segmentation import ClipEngine, ClipOptions
    from segmentation.models import PRESETS
    from segmentation.session import FunctionModel

    truth = disk(900, 1200, 450, 600, 300, soft=6.0)
    full = composite(truth, RED, GREEN, noise=1)
    # The "model" sees redness in its input tensor, blurred as a real one would be.
    def redness(x: np.ndarray) -> np.ndarray:
        score = (x[0] - x[1] > 0.5).astype(np.float32)
        return cv2.GaussianBlur(score, (0, 0), 2.0)

    engine = ClipEngine(FunctionModel(PRESETS["u2net"], redness))
    await engine.start()
    try:
        buf = io.BytesIO()
        Image.fromarray(full).save(buf, "PNG")
        cut = await engine.cut(buf.getvalue(), ClipOptions())
    finally:
        await engine.close()
    rgba = cut.pixels
    assert rgba.shape == (900, 1200, 4)
    alpha = rgba[:, :, 3]
    assert alpha[450, 600] == 255 and alpha[20, 20] == 0
    assert np.all(rgba[alpha == 0] == 0)
    soft = (alpha > 25) & (alpha < 230)
    assert soft.any()
    assert np.linalg.norm(rgba[soft][:, :3].astype(np.float32) - RED, axis=1).mean() < 25


def test_params_are_frozen() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        AlphaParams().low = 0.1  # type: ignore[misc]


def test_runs_in_a_thread_pool() -> None:
    # The engine calls saliency_to_alpha from worker threads; it keeps no global state.
    truth = disk(300, 400, 150, 200, 100)
    full = composite(truth, RED, GREEN)
    sal, work = model_saliency(truth), reduce(full, 2)

    async def many() -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(None, saliency_to_alpha, sal, work, full) for _ in range(6)))

    results = asyncio.run(many())
    assert all(np.array_equal(results[0], r) for r in results)
