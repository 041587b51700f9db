"""Limits in error messages speak MiB and megapixels, never raw byte or pixel counts."""

from __future__ import annotations

import pytest

from segmentation.decode import ImageLimits, probe
from segmentation.errors import ImageTooLarge
from segmentation.units import describe_bytes, describe_pixels
from tests.conftest import jpeg, png_bomb


@pytest.mark.parametrize(
    "count,text",
    [(25 * 1024 * 1024, "25 MiB"), (26_279_936, "25.1 MiB"), (1536, "1.5 KiB"), (1, "1 byte"), (512, "512 bytes")],
)
def test_describe_bytes(count: int, text: str) -> None:
    assert describe_bytes(count) == text


@pytest.mark.parametrize("count,text", [(50_000_000, "50 MP"), (12_192_768, "12.2 MP"), (40_000, "0.04 MP")])
def test_describe_pixels(count: int, text: str) -> None:
    assert describe_pixels(count) == text


def test_too_many_pixels_are_refused_in_megapixels() -> None:
    with pytest.raises(ImageTooLarge) as refused:
        probe(png_bomb(10_000, 10_000), ImageLimits())
    assert refused.value.detail == "The image is 10000x10000 (100 MP); the limit is 50 MP and 16384 pixels a side."


def test_a_file_over_the_limit_is_refused_in_mib() -> None:
    data = jpeg(64, 48)
    with pytest.raises(ImageTooLarge) as refused:
        probe(data, ImageLimits(max_bytes=1024))
    assert refused.value.detail.endswith("larger than the 1 KiB limit.")
    assert str(len(data)) not in refused.value.detail
