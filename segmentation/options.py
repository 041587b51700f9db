"""Clip options, parsed from the strings users send (form fields, query, CLI flags)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidOption, echo

OutputFormat = Literal["png", "webp"]
Channels = Literal["rgba", "alpha"]
SizePreset = Literal["preview", "full", "auto"]
Quality = Literal["fast", "balanced", "best"]  # the engine's extra passes; the same price

PREVIEW_PIXELS = 250_000  # "preview" ≈ 0.25 MP, as remove.bg
AUTO_MAX_PIXELS = 25_000_000  # "auto": full size up to 25 MP, scaled down above

# The names ``ClipOptions.parse`` takes: what a request may set, and nothing else.
OPTION_NAMES = ("format", "channels", "crop", "crop_margin", "size", "bg_color", "quality")


@dataclass(frozen=True)
class Margin:
    value: float
    percent: bool

    def pixels(self, box_w: int, box_h: int) -> int:
        if self.percent:
            return round(max(box_w, box_h) * self.value / 100.0)
        return round(self.value)


@dataclass(frozen=True)
class ClipOptions:
    format: OutputFormat = "png"
    channels: Channels = "rgba"
    crop: bool = False
    crop_margin: Margin = Margin(0, percent=False)
    size: SizePreset = "full"
    bg_color: tuple[int, int, int, int] | None = None
    quality: Quality = "balanced"

    @classmethod
    def parse(
        cls,
        *,
        format: str | None = None,
        channels: str | None = None,
        crop: str | bool | None = None,
        crop_margin: str | None = None,
        size: str | None = None,
        bg_color: str | None = None,
        quality: str | None = None,
    ) -> ClipOptions:
        return cls(
            format=_choice("format", format, ("png", "webp"), "png"),  # type: ignore[arg-type]
            channels=_choice("channels", channels, ("rgba", "alpha"), "rgba"),  # type: ignore[arg-type]
            crop=parse_bool("crop", crop),
            crop_margin=parse_margin(crop_margin),
            size=_choice("size", size, ("preview", "full", "auto"), "full"),  # type: ignore[arg-type]
            bg_color=parse_color(bg_color),
            quality=_choice("quality", quality, ("fast", "balanced", "best"), "balanced"),  # type: ignore[arg-type]
        )

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The cut-out's size before cropping, for an input of width x height."""
        pixels = width * height
        limit = {"preview": PREVIEW_PIXELS, "auto": AUTO_MAX_PIXELS, "full": None}[self.size]
        if limit is None or pixels <= limit:
            return width, height
        scale = math.sqrt(limit / pixels)
        return max(1, round(width * scale)), max(1, round(height * scale))


def _choice(name: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered not in allowed:
        raise InvalidOption(f"{name} must be one of {', '.join(allowed)}; got {echo(value)!r}.")
    return lowered


def parse_bool(name: str, value: str | bool | None) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidOption(f"{name} must be true or false; got {echo(value)!r}.")


# Patterns as strings too: the API's OpenAPI document publishes them.
MARGIN_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(px|%)?\s*$"
_MARGIN = re.compile(MARGIN_PATTERN)


def parse_margin(value: str | None) -> Margin:
    """``"20"``, ``"20px"`` or ``"10%"`` (of the object's longer side, at most 50%)."""
    if value is None or value == "":
        return Margin(0, percent=False)
    match = _MARGIN.match(value)
    if not match:
        raise InvalidOption(f"crop_margin must be pixels (e.g. 20px) or a percentage (e.g. 10%); got {echo(value)!r}.")
    amount, unit = float(match.group(1)), match.group(2)
    if unit == "%":
        if amount > 50:
            raise InvalidOption("crop_margin may be at most 50%.")
        return Margin(amount, percent=True)
    if amount > 500:
        raise InvalidOption("crop_margin may be at most 500px.")
    return Margin(amount, percent=False)


COLOR_PATTERN = r"^#?([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$"
_HEX = re.compile(COLOR_PATTERN)


def parse_color(value: str | None) -> tuple[int, int, int, int] | None:
    """Hex colour ``#rgb``, ``#rgba``, ``#rrggbb`` or ``#rrggbbaa`` (the # is optional)."""
    if value is None or value == "":
        return None
    match = _HEX.match(value.strip())
    if not match:
        raise InvalidOption(f"bg_color must be a hex colour such as #ffffff; got {echo(value)!r}.")
    digits = match.group(1)
    if len(digits) in (3, 4):
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a
