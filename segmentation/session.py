"""Inference sessions: one onnxruntime session per process, batch dimension made dynamic.

``SegmentationModel`` is the seam the batcher and engine depend on;
``OnnxModel`` is the real adapter, ``FunctionModel`` an in-memory one for tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from .errors import ModelError
from .models import ModelSpec, Preset

log = logging.getLogger("arclip.segmentation")

_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class SegmentationModel(Protocol):
    preset: Preset
    provider: str
    max_batch: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 normalised input -> (N, S, S) float32 saliency in [0, 1]."""
        ...


def _make_batch_dynamic(model_bytes: bytes) -> tuple[bytes, bool]:
    """Rewrite the graph's leading input/output dimension to a symbolic ``batch``.

    The shipped u2netp has a fixed batch of 1; ops inside are batch-agnostic, so
    freeing the outer dims (and dropping stale inferred shapes) is enough. The
    caller verifies outputs are unchanged before trusting it.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    changed = False
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
            changed = True
    if changed:
        del model.graph.value_info[:]
    return model.SerializeToString(), changed


def choose_providers(available: list[str], requested: str | None) -> list[str]:
    """Best available provider first, always ending with CPU as the fallback."""
    if requested:
        wanted = [p.strip() for p in requested.split(",") if p.strip()]
        aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
        chosen = [aliases.get(p.lower(), p) for p in wanted]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise ModelError(f"Execution provider(s) not available: {missing}; available: {available}")
    else:
        chosen = [p for p in _PROVIDER_PREFERENCE if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxModel:
    """The real adapter over onnxruntime."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        providers: str | None = None,
        intra_op_threads: int | None = None,
        max_batch: int = 8,
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.preset = spec.preset
        try:
            raw = spec.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"Cannot read model file {spec.path}: {exc}") from exc
        try:
            dynamic, changed = _make_batch_dynamic(raw)
        except Exception as exc:
            raise ModelError(f"{spec.path} is not a valid ONNX model: {exc}") from exc

        options = ort.SessionOptions()
        threads = intra_op_threads or os.cpu_count() or 1
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._providers = choose_providers(ort.get_available_providers(), providers)
        try:
            self._session = ort.InferenceSession(dynamic, sess_options=options, providers=self._providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {spec.path}: {exc}") from exc
        self.provider = self._session.get_providers()[0]
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{spec.path} does not look like a salient-object model (one NCHW image input).")
        self._input_name = inputs[0].name
        self._output_name = self._session.get_outputs()[0].name
        self.max_batch = max(1, max_batch) if changed or _dim_is_dynamic(inputs[0].shape[0]) else 1
        if self.max_batch > 1 and not self._batching_is_exact():
            log.warning("batching changes %s outputs; running one image at a time", spec.name)
            self.max_batch = 1
        log.info(
            "model %s (%s) on %s, %d intra-op threads, max batch %d",
            spec.name, self.preset.family, self.provider, threads, self.max_batch,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self._session.run([self._output_name], {self._input_name: batch})[0]
        out = out.reshape(out.shape[0], out.shape[-2], out.shape[-1]).astype(np.float32, copy=False)
        if self.preset.apply_sigmoid:
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def _batching_is_exact(self) -> bool:
        """Prove that a batch of two gives what two single runs give."""
        size = self.preset.input_size
        rng = np.random.default_rng(0)
        pair = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        try:
            together = self._run(pair)
        except Exception:
            return False
        apart = np.concatenate([self._run(pair[i : i + 1]) for i in range(2)])
        return bool(np.allclose(together, apart, atol=1e-4))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] <= self.max_batch:
            return self._run(batch)
        return np.concatenate([self._run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])


def _dim_is_dynamic(dim: object) -> bool:
    return not isinstance(dim, int)


class FunctionModel:
    """In-memory model for tests: saliency computed by a plain function."""

    provider = "FunctionModel"

    def __init__(self, preset: Preset, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 8) -> None:
        self.preset = preset
        self.max_batch = max_batch
        self._fn = fn
        self.batches: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        return np.stack([self._fn(x) for x in batch]).astype(np.float32)
