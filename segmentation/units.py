"""Sizes as people read them in error messages: MiB and megapixels, not raw counts."""

from __future__ import annotations

MIB = 1024 * 1024


def _short(value: float) -> str:
    # One decimal at most, none when whole ("25", "25.1"), never "0" for something non-zero.
    text = f"{value:.1f}".removesuffix(".0")
    return text if text != "0" or value == 0 else f"{value:.2g}"


def describe_bytes(count: int) -> str:
    """``26214400`` -> ``"25 MiB"``; under a MiB in KiB, under a KiB in bytes."""
    if count >= MIB:
        return f"{_short(count / MIB)} MiB"
    if count >= 1024:
        return f"{_short(count / 1024)} KiB"
    return f"{count} byte{'' if count == 1 else 's'}"


def describe_pixels(count: int) -> str:
    """``50_000_000`` -> ``"50 MP"`` (megapixels, 10**6 pixels)."""
    return f"{_short(count / 1_000_000)} MP"
