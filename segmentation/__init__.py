"""Image decode/encode, models, inference sessions, batching, mask post-processing, cut-out."""

from .engine import ClipEngine, ClipResult, Cutout, EngineConfig
from .errors import (
    EmptyImage,
    ImageTooLarge,
    InputError,
    InvalidOption,
    ModelError,
    Overloaded,
    SegmentationError,
    UnreadableImage,
    UnsupportedMediaType,
)
from .models import ModelSpec, resolve_model
from .options import ClipOptions
from .session import OnnxModel, SegmentationModel

__all__ = [
    "ClipEngine", "ClipOptions", "ClipResult", "Cutout", "EmptyImage", "EngineConfig", "ImageTooLarge",
    "InputError", "InvalidOption", "ModelError", "ModelSpec", "OnnxModel", "Overloaded", "SegmentationError",
    "SegmentationModel", "UnreadableImage", "UnsupportedMediaType", "resolve_model",
]
