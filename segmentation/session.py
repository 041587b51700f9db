"""Inference sessions: one onnxruntime session per process, batch and image size made dynamic.

``SegmentationModel`` is the seam the batcher and engine depend on;
``OnnxModel`` is the real adapter, ``FunctionModel`` an in-memory one for tests.
On a CPU ``OnnxModel`` can run an int8 version of the graph (``quantize``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .errors import ModelError
from .models import ModelSpec, Preset

log = logging.getLogger("arclip.segmentation")

_PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

# "auto": int8 on a CPU where the model has a recipe tested on the quality
# benchmark (the shipped u2netp), fp32 everywhere else (GPUs included).
Precision = Literal["auto", "fp32", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "int8")


class SegmentationModel(Protocol):
    preset: Preset
    provider: str
    max_batch: int
    # Takes inputs of any (h, w), not only the preset's square (the "aspect" pass).
    any_size: bool

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 normalised input -> (N, H, W) float32 saliency in [0, 1].

        (H, W) is the preset's square unless ``any_size``.
        """
        ...


def make_dims_dynamic(model_bytes: bytes) -> tuple[bytes, bool]:
    """Rewrite the graph's batch (and, for images, height and width) dimensions as symbolic.

    The shipped u2netp has a fixed batch of 1 and a fixed 320x320 size; its ops are
    batch- and size-agnostic (its resizes take their sizes from the tensors), so freeing
    the outer dims (and dropping stale inferred shapes) is enough. Returns whether the
    batch dimension changed. The caller proves the result before trusting it (batching
    exactness; a run at another size).
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    changed = rewritten = False
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        names = ("batch", None, "height", "width") if len(dims) == 4 else ("batch",)
        for dim, name in zip(dims, names):
            if name is not None and dim.HasField("dim_value"):
                dim.ClearField("dim_value")
                dim.dim_param = name
                rewritten = True
                changed |= name == "batch"
    if rewritten:
        del model.graph.value_info[:]
    return model.SerializeToString(), changed


def choose_precision(requested: str, on_cpu: bool, tested_int8: bool) -> Literal["fp32", "int8"]:
    """What to run: int8 only on the CPU (GPU runs stay fp32), by default only where tested."""
    if requested not in PRECISIONS:
        raise ModelError(f"Unknown model precision {requested!r}: use one of {list(PRECISIONS)}.")
    if requested == "int8" and not on_cpu:
        raise ModelError("int8 models run on the CPU only; use ARCLIP_MODEL_PRECISION=fp32 (or auto) on a GPU.")
    if requested == "auto":
        return "int8" if on_cpu and tested_int8 else "fp32"
    return "int8" if requested == "int8" else "fp32"


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


ProviderSpec = str | tuple[str, dict[str, str]]


def provider_options(
    providers: list[str], input_name: str, preset: Preset, max_batch: int, engine_cache: Path | None
) -> list[ProviderSpec]:
    """The providers with their options: TensorRT gets shape profiles and an engine cache.

    TensorRT builds an engine per input shape range and rebuilds it (tens of seconds)
    whenever an input falls outside; the profile covers everything the engine sends
    (batches up to ``max_batch``; the square input, the aspect views up to 2:1 and the
    64-pixel start-up probe), so it is built once, and cached across restarts.
    """
    if "TensorrtExecutionProvider" not in providers:
        return list(providers)
    side = preset.input_size
    shape = "{}:{}x3x{}x{}".format
    trt: dict[str, str] = {
        "trt_profile_min_shapes": shape(input_name, 1, 64, 64),
        "trt_profile_opt_shapes": shape(input_name, max_batch, side, side),
        "trt_profile_max_shapes": shape(input_name, max_batch, 2 * side, 2 * side),
    }
    if engine_cache is not None:
        trt |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(engine_cache / "tensorrt")}
    return [("TensorrtExecutionProvider", trt) if p == "TensorrtExecutionProvider" else p for p in providers]


class OnnxModel:
    """The real adapter over onnxruntime."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        providers: str | None = None,
        intra_op_threads: int | None = None,
        max_batch: int = 8,
        precision: Precision | str = "fp32",
        derived_dir: Path | None = None,
    ) -> None:
        """``derived_dir``: where derived graphs (the int8 one) are cached; int8 needs it."""
        import onnxruntime as ort

        self.spec = spec
        self.preset = spec.preset
        try:
            raw = spec.path.read_bytes()
        except OSError as exc:
            raise ModelError(f"Cannot read model file {spec.path}: {exc}") from exc

        threads = intra_op_threads or os.cpu_count() or 1
        self._providers = choose_providers(ort.get_available_providers(), providers)
        on_cpu = self._providers[0] == "CPUExecutionProvider"
        graph, self.precision = self._graph_for(raw, precision, on_cpu, derived_dir)
        try:
            dynamic, changed = make_dims_dynamic(graph)
        except Exception as exc:
            raise ModelError(f"{spec.path} is not a valid ONNX model: {exc}") from exc
        # onnxruntime's CPU arena keeps each session's peak activations (~250 MB
        # for u2netp) to itself. Once glibc is tuned to reuse freed blocks (see
        # engine.tune_malloc, which the engine applies anyway) plain malloc is as
        # fast, and both sessions below and the image pipeline share one heap.
        self._cpu_arena = True
        if on_cpu:
            from .engine import (
                tune_malloc,  # here, not at import: engine imports this module
            )

            self._cpu_arena = not tune_malloc()
        options = _session_options(ort, threads, on_cpu, self._cpu_arena)
        try:
            self._session = self._open_session(ort, dynamic, options, max_batch, derived_dir)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {spec.path}: {exc}") from exc
        self.provider = self._session.get_providers()[0]
        # On CPU a second, single-threaded session serves busy periods: while
        # other requests keep the other cores busy decoding and encoding, one
        # inference thread does the same work for ~10% less CPU than several
        # (no cross-core hand-offs), so more images fit per second; an idle
        # server still runs one request's inference on every core (lowest latency).
        self._lean_session = None
        if self.provider == "CPUExecutionProvider" and threads > 1:
            self._lean_session = ort.InferenceSession(
                dynamic, sess_options=_session_options(ort, 1, True, self._cpu_arena), providers=["CPUExecutionProvider"]
            )
        self.can_run_lean = self._lean_session is not None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{spec.path} does not look like a salient-object model (one NCHW image input).")
        self._input_name = inputs[0].name
        self._output_name = self._session.get_outputs()[0].name
        self.max_batch = max(1, max_batch) if changed or _dim_is_dynamic(inputs[0].shape[0]) else 1
        if self.max_batch > 1 and not self._batching_is_exact():
            log.warning("batching changes %s outputs; running one image at a time", spec.name)
            self.max_batch = 1
        self.any_size = self._takes_any_size()
        log.info(
            "model %s (%s, %s) on %s, %d intra-op threads, max batch %d%s",
            spec.name, self.preset.family, self.precision, self.provider, threads, self.max_batch,
            "" if self.any_size else ", square inputs only",
        )

    def _open_session(self, ort, graph: bytes, options, max_batch: int, derived_dir: Path | None):  # type: ignore[no-untyped-def]
        """The serving session; without TensorRT when TensorRT refuses the graph or its options."""
        if "TensorrtExecutionProvider" not in self._providers:
            return ort.InferenceSession(graph, sess_options=options, providers=self._providers)
        import onnx

        name = onnx.load_from_string(graph).graph.input[0].name
        specs = provider_options(self._providers, name, self.preset, max(1, max_batch), derived_dir)
        try:
            return ort.InferenceSession(graph, sess_options=options, providers=specs)
        except Exception as exc:
            self._providers = [p for p in self._providers if p != "TensorrtExecutionProvider"]
            log.warning("TensorRT cannot run %s (%s); using %s", self.spec.name, exc, self._providers[0])
            return ort.InferenceSession(graph, sess_options=options, providers=self._providers)

    def _graph_for(
        self, raw: bytes, precision: str, on_cpu: bool, derived_dir: Path | None
    ) -> tuple[bytes, Literal["fp32", "int8"]]:
        """The graph to run and its precision; "auto" falls back to fp32 where int8 cannot be had."""
        from .quantize import load_or_build_int8, recipe_for

        chosen = choose_precision(precision, on_cpu, recipe_for(raw) is not None)
        if chosen == "fp32":
            return raw, "fp32"
        if derived_dir is None:
            if precision == "int8":
                raise ModelError("An int8 model needs a directory to keep its derived graph in (derived_dir).")
            return raw, "fp32"
        try:
            int8 = load_or_build_int8(self.spec, raw, derived_dir)
        except ModelError as exc:
            if precision == "int8":
                raise
            # Asked for nothing in particular: serve in fp32 rather than not at all.
            log.warning("%s; running %s in fp32", exc.detail, self.spec.name)
            return raw, "fp32"
        if not int8.built:
            origin = f"loaded from {int8.path}"
        else:
            origin = "built and cached" if int8.path else "built (not cached)"
        log.info("int8 %s %s (%s against fp32 on the probe images)", self.spec.name, origin, int8.agreement)
        return int8.data, "int8"

    def _run(self, batch: np.ndarray, run_options: object = None) -> np.ndarray:
        return self._run_on(self._session, batch, run_options)

    def _run_lean(self, batch: np.ndarray) -> np.ndarray:
        return self._run_on(self._lean_session or self._session, batch)

    def _run_on(self, session, batch: np.ndarray, run_options: object = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        return to_saliency(session.run([self._output_name], {self._input_name: batch}, run_options)[0], self.preset)

    def _probe(self, batch: np.ndarray) -> np.ndarray:
        """A start-up check's run, its memory given back to the OS afterwards.

        Without the shrink, a batch-of-two run leaves the CPU arena ~250 MB bigger for
        the process's life even where batching is then switched off (CPU).
        """
        import onnxruntime as ort

        if self._cpu_arena:
            shrink = ort.RunOptions()
            shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")  # type: ignore[attr-defined]
            try:
                return self._run(batch, shrink)
            except Exception:
                pass  # a provider set without a CPU arena to shrink: check all the same
        return self._run(batch)

    def _batching_is_exact(self) -> bool:
        """Prove that a batch of two gives what two single runs give."""
        size = self.preset.input_size
        rng = np.random.default_rng(0)
        pair = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        try:
            together = self._probe(pair)
        except Exception:
            return False
        apart = np.concatenate([self._probe(pair[i : i + 1]) for i in range(2)])
        return bool(np.allclose(together, apart, atol=1e-4))

    def _takes_any_size(self) -> bool:
        """Whether the graph runs at a size other than its square one, mapping the input's size.

        A graph with fixed reshapes inside fails here (or returns the wrong size) and
        keeps to square inputs; the "aspect" pass is then skipped. The probe is small
        (64x128, divisible by every stride of these models): a full-size one would leave
        ~150 MB of activations in the process's heap.
        """
        height, width = 64, 128
        probe = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
        try:
            out = self._probe(probe)
        except Exception:
            return False
        return out.shape[-2:] == (height, width) and bool(np.isfinite(out).all())

    def predict(self, batch: np.ndarray, *, lean: bool = False) -> np.ndarray:
        """``lean``: run on one thread (the server is busy with other requests' CPU stages)."""
        run = self._run_lean if lean and self._lean_session is not None else self._run
        if batch.shape[0] <= self.max_batch:
            return run(batch)
        return np.concatenate([run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)])


def to_saliency(out: np.ndarray, preset: Preset) -> np.ndarray:
    """A model's first output, (N, 1, H, W) or (N, H, W), as (N, H, W) float32 saliency in [0, 1]."""
    out = out.reshape(out.shape[0], out.shape[-2], out.shape[-1]).astype(np.float32, copy=False)
    if preset.apply_sigmoid:
        out = 1.0 / (1.0 + np.exp(-out))
    return out


def _session_options(ort, threads: int, on_cpu: bool, cpu_arena: bool = True):  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = cpu_arena
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: spinning burns the
    # cores the decode/alpha/encode threads of other requests need
    # (measured: ~0.2 CPU s per 12 MP image on 2 cores, for no latency gain).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if on_cpu:
        # Memory patterns pre-plan one block per input shape on top of the
        # arena: ~190 MB more resident on CPU for u2netp, no measurable speed-up.
        options.enable_mem_pattern = False
    return options


def _dim_is_dynamic(dim: object) -> bool:
    return not isinstance(dim, int)


class FunctionModel:
    """In-memory model for tests: saliency computed by a plain function."""

    provider = "FunctionModel"
    precision = "fp32"
    any_size = True

    def __init__(self, preset: Preset, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 8) -> None:
        self.preset = preset
        self.max_batch = max_batch
        self._fn = fn
        self.batches: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        return np.stack([self._fn(x) for x in batch]).astype(np.float32)
