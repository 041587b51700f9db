"""Screen-point localization: where on the companion's screen picture is the phone aimed?

    index = ScreenIndex(screen_bgr)            # once per screen picture (cache it)
    loc = ScreenLocator().locate(view_bgr, index)
    loc.found, loc.x, loc.y, loc.confidence, loc.hint

See `fiducials` for the paste pattern the companion shows so that blank canvases work too.
"""

from .config import LocatorConfig
from .fiducials import apply_pattern, detect_markers, pattern_layout, render_pattern
from .index import IndexCache, ScreenIndex, picture_key
from .io import read_image
from .locator import ScreenLocator, locate_images, locate_paths
from .result import Location

__all__ = [
    "IndexCache",
    "Location",
    "LocatorConfig",
    "ScreenIndex",
    "ScreenLocator",
    "apply_pattern",
    "detect_markers",
    "locate_images",
    "locate_paths",
    "pattern_layout",
    "picture_key",
    "read_image",
    "render_pattern",
]
