"""Composing the cut-out: foreground box, crop window, RGBA/alpha/background output."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.cutout import Box, compose, crop_window, foreground_box
from segmentation.options import ClipOptions, parse_margin


def alpha_with_rect(width: int = 100, height: int = 80, box=(30, 20, 25, 15), value: int = 255) -> np.ndarray:
    left, top, w, h = box
    alpha = np.zeros((height, width), np.uint8)
    alpha[top : top + h, left : left + w] = value
    return alpha


def test_foreground_box_is_tight() -> None:
    alpha = alpha_with_rect(box=(30, 20, 25, 15))
    assert foreground_box(alpha) == Box(30, 20, 25, 15)


def test_foreground_box_counts_faint_pixels() -> None:
    alpha = alpha_with_rect(box=(30, 20, 25, 15))
    alpha[79, 99] = 1
    assert foreground_box(alpha) == Box(30, 20, 70, 60)


def test_foreground_box_empty_and_single_pixel() -> None:
    assert foreground_box(np.zeros((10, 10), np.uint8)) == Box(0, 0, 0, 0)
    single = np.zeros((10, 10), np.uint8)
    single[3, 7] = 9
    assert foreground_box(single) == Box(7, 3, 1, 1)


def test_crop_window_adds_margin_pixels_and_percent() -> None:
    box = Box(30, 20, 25, 15)
    px = ClipOptions(crop=True, crop_margin=parse_margin("5px"))
    assert crop_window(box, px, 100, 80) == Box(25, 15, 35, 25)
    pct = ClipOptions(crop=True, crop_margin=parse_margin("20%"))  # 20% of 25 = 5
    assert crop_window(box, pct, 100, 80) == Box(25, 15, 35, 25)
    none = ClipOptions(crop=True)
    assert crop_window(box, none, 100, 80) == box


def test_crop_window_is_clamped_to_the_image() -> None:
    box = Box(2, 3, 90, 70)
    window = crop_window(box, ClipOptions(crop=True, crop_margin=parse_margin("50px")), 100, 80)
    assert window == Box(0, 0, 100, 80)


def test_crop_window_of_empty_box_is_whole_image() -> None:
    assert crop_window(Box(0, 0, 0, 0), ClipOptions(crop=True), 100, 80) == Box(0, 0, 100, 80)


def rgb_image(height: int = 80, width: int = 100) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(1, 255, (height, width, 3), dtype=np.uint8)


def test_compose_rgba_zeroes_colour_where_transparent() -> None:
    rgb = rgb_image()
    alpha = alpha_with_rect(value=255)
    alpha[0, 0] = 128
    out = compose(rgb, alpha, ClipOptions())
    assert out.shape == (80, 100, 4) and out.dtype == np.uint8
    assert (out[:, :, 3] == alpha).all()
    transparent = alpha == 0
    assert (out[transparent] == 0).all()
    assert (out[~transparent][:, :3] == rgb[~transparent]).all()


def test_compose_alpha_channel_only() -> None:
    alpha = alpha_with_rect()
    out = compose(rgb_image(), alpha, ClipOptions(channels="alpha"))
    assert out.shape == (80, 100)
    assert (out == alpha).all()


def test_compose_over_opaque_background() -> None:
    rgb = np.full((80, 100, 3), 200, np.uint8)
    alpha = alpha_with_rect(value=255)
    alpha[0, 0] = 128
    out = compose(rgb, alpha, ClipOptions(bg_color=(0, 255, 0, 255)))
    assert out.shape == (80, 100, 3), "an opaque background gives an opaque RGB image"
    assert (out[50, 90] == (0, 255, 0)).all()
    assert (out[25, 35] == (200, 200, 200)).all()
    # half-transparent pixel: halfway between object and background
    assert np.abs(out[0, 0].astype(int) - (100, 228, 100)).max() <= 1


def test_compose_over_translucent_background() -> None:
    rgb = np.full((80, 100, 3), 200, np.uint8)
    alpha = alpha_with_rect(value=255)
    out = compose(rgb, alpha, ClipOptions(bg_color=(0, 0, 255, 128)))
    assert out.shape == (80, 100, 4)
    assert tuple(out[50, 90]) == (0, 0, 255, 128)
    assert tuple(out[25, 35]) == (200, 200, 200, 255)


@pytest.mark.parametrize("channels", ["rgba", "alpha"])
def test_compose_keeps_size(channels: str) -> None:
    out = compose(rgb_image(7, 13), np.zeros((7, 13), np.uint8), ClipOptions(channels=channels))
    assert out.shape[:2] == (7, 13)


def test_whole_frame_salient_gives_solid_alpha() -> None:
    from segmentation.alpha import saliency_to_alpha

    rgb = rgb_image(80, 100)
    alpha = saliency_to_alpha(np.ones((320, 320), np.float32), rgb, rgb)
    assert alpha.min() == 255


def test_saliency_to_alpha_follows_the_mask() -> None:
    from segmentation.alpha import saliency_to_alpha

    rgb = np.full((80, 100, 3), 128, np.uint8)
    saliency = np.zeros((320, 320), np.float32)
    saliency[80:240, 80:240] = 1.0  # the middle half of each axis
    alpha = saliency_to_alpha(saliency, rgb, rgb)
    assert alpha.shape == (80, 100)
    assert alpha[40, 50] == 255
    assert alpha[2, 2] == 0 and alpha[77, 97] == 0
