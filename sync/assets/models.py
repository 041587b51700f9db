"""What the asset package hands out: plain frozen records, JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class BBox:
    """The object's box inside the asset image, in its pixels."""

    left: int
    top: int
    width: int
    height: int

    def to_json(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Asset:
    id: str
    pairing_id: str
    storage_key: str
    content_type: str
    width: int
    height: int
    bbox: BBox
    size_bytes: int
    created_at: datetime
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"asset_id": self.id, "width": self.width, "height": self.height, "bbox": self.bbox.to_json()}


@dataclass(frozen=True)
class ScreenInfo:
    """The latest screen picture of a pairing, and what the locator can do with it."""

    pairing_id: str
    version: str
    width: int
    height: int
    updated_at: datetime
    features: int = 0
    markers: int = 0
    locatable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "pairing_id": self.pairing_id,
            "version": self.version,
            "width": self.width,
            "height": self.height,
            "features": self.features,
            "markers": self.markers,
            "locatable": self.locatable,
        }
