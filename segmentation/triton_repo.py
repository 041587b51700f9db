"""``arclip model export``: a Triton model repository for a model the engine can run.

Writes ``NAME/1/model.onnx`` — the graph the in-process engine runs, with its batch
and image size made dynamic and the extra side outputs dropped — and
``NAME/config.pbtxt``. Whether the batch and the size may really vary is not
assumed: the graph is loaded as ``OnnxModel`` loads it, which proves batching
exact and runs a probe at another size; the config then states what was proven.

The config is built as a ``ModelConfig`` message (the protobuf schema that
``tritonclient`` ships) and written in its text format, so it parses by construction.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ModelError
from .models import ModelSpec
from .session import make_dims_dynamic, provider_options

Backend = Literal["onnxruntime", "python"]


@dataclass(frozen=True)
class ExportOptions:
    name: str = "u2netp"
    max_batch: int = 8
    # How long Triton holds a request to batch it with others arriving from any replica.
    max_queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool = True
    # TensorRT with FP16 through the onnxruntime backend, its shape profile covering the engine's views.
    tensorrt: bool = False
    # "python": served by onnxruntime inside Triton's Python backend (a Triton without the
    # onnxruntime backend, such as the CPU-only one in the nvidia-pytriton wheel).
    backend: Backend = "onnxruntime"


@dataclass(frozen=True)
class Exported:
    directory: Path  # NAME/
    graph: Path
    config: Path
    max_batch: int
    any_size: bool


def export_repository(spec: ModelSpec, repository: Path, options: ExportOptions = ExportOptions()) -> Exported:
    """Write ``options.name`` into ``repository`` (replacing an earlier export of that name)."""
    import onnx

    from .session import OnnxModel

    if options.max_batch < 1 or options.instances < 1:
        raise ModelError("max batch and instances must be at least 1.")
    if options.tensorrt and (options.backend != "onnxruntime" or not options.gpu):
        raise ModelError("TensorRT runs on a GPU through the onnxruntime backend only.")
    try:
        raw = spec.path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read model file {spec.path}: {exc}") from exc
    # Loaded (and proven) exactly as the in-process engine loads it, on the CPU in fp32.
    proven = OnnxModel(spec, providers="cpu", intra_op_threads=1, max_batch=max(2, options.max_batch), precision="fp32")
    graph, _ = make_dims_dynamic(raw)
    model = onnx.load_from_string(graph)
    del model.graph.output[1:]  # the engine reads the first output only (U²-Net's side maps are dropped)

    model_dir = repository / options.name
    version_dir = model_dir / "1"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dir.mkdir(parents=True)
    graph_path = version_dir / "model.onnx"
    graph_path.write_bytes(model.SerializeToString())
    max_batch = options.max_batch if proven.max_batch > 1 else 1
    if options.backend == "python":
        shutil.copyfile(Path(__file__).with_name("triton_python_model.py"), version_dir / "model.py")
    config_path = model_dir / "config.pbtxt"
    config_path.write_text(render_config(model, spec, options, max_batch, proven.any_size))
    return Exported(model_dir, graph_path, config_path, max_batch, proven.any_size)


def render_config(model, spec: ModelSpec, options: ExportOptions, max_batch: int, any_size: bool) -> str:  # type: ignore[no-untyped-def]
    """config.pbtxt for ``model`` (an onnx ModelProto with one image input and one output)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    side = spec.preset.input_size
    config = mc.ModelConfig(name=options.name, max_batch_size=max_batch)
    if options.backend == "python":
        config.backend = "python"
    else:
        config.platform = "onnxruntime_onnx"
    for value, into in ((model.graph.input[0], config.input), (model.graph.output[0], config.output)):
        if value.type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
            raise ModelError(f"{spec.path}: {value.name!r} is not a float32 tensor.")
        dims = []
        for index, dim in enumerate(value.type.tensor_type.shape.dim[1:], start=1):
            rank = len(value.type.tensor_type.shape.dim)
            spatial = index >= rank - 2
            if dim.HasField("dim_value") and not (spatial and any_size):
                dims.append(dim.dim_value)
            elif spatial:
                dims.append(-1 if any_size else side)
            else:
                dims.append(-1)
        into.add(name=value.name, data_type=mc.DataType.TYPE_FP32, dims=dims)
    preferred = sorted({max(1, max_batch // 2), max_batch}) if max_batch > 1 else []
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = mc.ModelInstanceGroup.Kind.KIND_GPU if options.gpu else mc.ModelInstanceGroup.Kind.KIND_CPU
    config.instance_group.add(kind=kind, count=options.instances)
    if options.tensorrt:
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16"
        trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
        # The same profile as the in-process engine's: batches up to max_batch, the square
        # input, the aspect views up to 2:1 and the small start-up probe; built once.
        (_, shapes), *_ = provider_options(
            ["TensorrtExecutionProvider"], model.graph.input[0].name, spec.preset, max_batch, None
        )
        trt.parameters.update(shapes)  # type: ignore[arg-type]
    return f"# Written by `arclip model export` for {spec.name} ({spec.preset.family} preset).\n" + text_format.MessageToString(config)
