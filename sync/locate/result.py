"""The answer to "where on the screen is the phone aimed?"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Hints shown to the person holding the phone (and sent with paste.failed). Short, actionable.
HINT_NOT_IN_VIEW = "screen not in view: point the phone at the canvas"
HINT_HOLD_STEADY = "photo too blurry: hold steady"
HINT_MOVE_CLOSER = "move closer to the screen"
HINT_MOVE_BACK = "move back a little so more of the canvas is in view"
HINT_AIM_AT_CANVAS = "aim the centre of the photo at the canvas"
HINT_FACE_SCREEN = "hold the phone more squarely facing the screen"
HINT_NO_MATCH = "screen not recognised: is the companion showing its latest picture?"
HINT_BLANK_CANVAS = "the canvas has too little detail to locate on: show the paste pattern"
HINT_BAD_IMAGE = "the photo is too small or empty"


@dataclass(frozen=True)
class Location:
    """Where the centre of the phone's view lands on the screen picture.

    x, y are in pixels of the SCREEN picture (pixel centres at integer coordinates); `scale` is
    screen pixels per view pixel at the view's centre (the companion can size a paste by it) and
    `rotation_deg` the view's roll relative to the screen, counter-clockwise on screen.
    When `found` is false, x/y/scale/rotation are None and `hint` says what the user should do.
    """

    found: bool
    x: float | None
    y: float | None
    confidence: float
    scale: float | None = None
    rotation_deg: float | None = None
    hint: str | None = None
    method: str = "none"  # "features", "fiducials", "features+fiducials" or "none"
    inliers: int = 0

    @classmethod
    def not_found(cls, hint: str, method: str = "none", confidence: float = 0.0, inliers: int = 0) -> "Location":
        return cls(False, None, None, round(float(confidence), 3), hint=hint, method=method, inliers=inliers)

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None, nd: int) -> float | None:
            return None if v is None else round(float(v), nd)

        return {
            "found": self.found,
            "x": r(self.x, 2),
            "y": r(self.y, 2),
            "confidence": round(float(self.confidence), 3),
            "scale": r(self.scale, 4),
            "rotation_deg": r(self.rotation_deg, 2),
            "hint": self.hint,
            "method": self.method,
            "inliers": self.inliers,
        }
