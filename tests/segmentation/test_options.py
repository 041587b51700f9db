"""Clip options parsed from user strings: defaults, accepted spellings, refusals."""

from __future__ import annotations

import math

import pytest

from segmentation.errors import InvalidOption
from segmentation.options import (
    AUTO_MAX_PIXELS,
    PREVIEW_PIXELS,
    ClipOptions,
    Margin,
    parse_bool,
    parse_color,
    parse_margin,
)


def test_defaults() -> None:
    options = ClipOptions.parse()
    assert options == ClipOptions()
    assert (options.format, options.channels, options.crop, options.size, options.bg_color) == (
        "png", "rgba", False, "full", None,
    )
    assert options.crop_margin == Margin(0, percent=False)
    # empty strings (an empty form field) mean "default"
    assert ClipOptions.parse(format="", channels="", crop="", crop_margin="", size="", bg_color="") == options


def test_choices_are_case_and_space_insensitive() -> None:
    options = ClipOptions.parse(format=" WebP ", channels="ALPHA", size="Preview")
    assert (options.format, options.channels, options.size) == ("webp", "alpha", "preview")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("format", "gif"),
        ("format", "jpeg"),
        ("channels", "rgb"),
        ("size", "huge"),
        ("size", "4k"),
        ("crop", "maybe"),
        ("crop_margin", "abc"),
        ("crop_margin", "-5"),
        ("crop_margin", "10em"),
        ("bg_color", "zzz"),
        ("bg_color", "#12345"),
        ("bg_color", "red"),
    ],
)
def test_bad_values_raise_invalid_option_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(InvalidOption) as info:
        ClipOptions.parse(**{name: value})
    assert name in info.value.detail
    assert info.value.code == "invalid_option"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " True ", True])
def test_bool_true(value) -> None:
    assert parse_bool("crop", value) is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "", None, False])
def test_bool_false(value) -> None:
    assert parse_bool("crop", value) is False


@pytest.mark.parametrize(
    ("text", "margin"),
    [
        ("20", Margin(20, percent=False)),
        ("20px", Margin(20, percent=False)),
        (" 7.5 px ", Margin(7.5, percent=False)),
        ("10%", Margin(10, percent=True)),
        ("50%", Margin(50, percent=True)),
        ("500", Margin(500, percent=False)),
        ("0", Margin(0, percent=False)),
    ],
)
def test_margin_parsing(text: str, margin: Margin) -> None:
    assert parse_margin(text) == margin


@pytest.mark.parametrize("text", ["51%", "501", "501px", "1e3", "%", "px"])
def test_margin_out_of_range_or_malformed(text: str) -> None:
    with pytest.raises(InvalidOption):
        parse_margin(text)


def test_margin_pixels() -> None:
    assert Margin(12, percent=False).pixels(100, 40) == 12
    assert Margin(10, percent=True).pixels(200, 80) == 20  # of the longer side
    assert Margin(10, percent=True).pixels(80, 300) == 30


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("#ffffff", (255, 255, 255, 255)),
        ("00ff00", (0, 255, 0, 255)),
        ("#0f0", (0, 255, 0, 255)),
        ("#0f08", (0, 255, 0, 0x88)),
        ("#12345678", (0x12, 0x34, 0x56, 0x78)),
        (" #ABCDEF ", (0xAB, 0xCD, 0xEF, 255)),
        ("", None),
        (None, None),
    ],
)
def test_colours(text, rgba) -> None:
    assert parse_color(text) == rgba


def test_output_size_full_keeps_input_size() -> None:
    assert ClipOptions(size="full").output_size(4032, 3024) == (4032, 3024)


@pytest.mark.parametrize(("width", "height"), [(4032, 3024), (3024, 4032), (1000, 800), (5000, 500)])
def test_output_size_preview_is_about_a_quarter_megapixel(width: int, height: int) -> None:
    w, h = ClipOptions(size="preview").output_size(width, height)
    assert abs(w * h - PREVIEW_PIXELS) / PREVIEW_PIXELS < 0.02
    assert math.isclose(w / h, width / height, rel_tol=0.02)


def test_output_size_preview_never_upscales() -> None:
    assert ClipOptions(size="preview").output_size(400, 300) == (400, 300)


def test_output_size_auto() -> None:
    auto = ClipOptions(size="auto")
    assert auto.output_size(4032, 3024) == (4032, 3024)
    w, h = auto.output_size(8000, 6000)  # 48 MP
    assert w * h <= AUTO_MAX_PIXELS * 1.01 and w * h >= AUTO_MAX_PIXELS * 0.98
    assert math.isclose(w / h, 8000 / 6000, rel_tol=0.01)
