"""The remote model's parts that need no server: URLs, the model check, and the exported repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from segmentation.errors import InferenceUnavailable, ModelError
from segmentation.models import PRESETS, ModelSpec, resolve_model
from segmentation.remote import Endpoint, check_model, parse_model_ref, unavailable
from segmentation.triton_repo import ExportOptions, export_repository

U2NET = PRESETS["u2net"]


def _metadata(in_dtype="FP32", in_shape=("-1", "3", "-1", "-1"), out_shape=("-1", "1", "-1", "-1"), out_dtype="FP32"):
    return {
        "name": "u2netp",
        "versions": ["1"],
        "inputs": [{"name": "input.1", "datatype": in_dtype, "shape": list(in_shape)}],
        "outputs": [{"name": "1959", "datatype": out_dtype, "shape": list(out_shape)}],
    }


def test_endpoints_and_model_refs() -> None:
    assert Endpoint.parse("grpc://triton:8001") == Endpoint("grpc", "triton:8001")
    assert Endpoint.parse("http://127.0.0.1:8000") == Endpoint("http", "127.0.0.1:8000")
    assert Endpoint.parse("https://triton") == Endpoint("http", "triton:8000", ssl=True)
    assert str(Endpoint.parse("grpc://triton")) == "grpc://triton:8001"
    with pytest.raises(ModelError, match="grpc://host:port"):
        Endpoint.parse("triton:8001")
    assert parse_model_ref("u2netp") == ("u2netp", "")
    assert parse_model_ref("isnet:3") == ("isnet", "3")
    with pytest.raises(ModelError, match="NAME:VERSION"):
        parse_model_ref("u2netp:latest")


def test_the_check_reads_a_fitting_model() -> None:
    found = check_model(_metadata(), {"max_batch_size": 8}, U2NET)
    assert (found.input_name, found.output_name, found.max_batch, found.any_size, found.batched) == (
        "input.1", "1959", 8, True, True,
    )
    square = check_model(
        _metadata(in_shape=("-1", "3", "320", "320"), out_shape=("-1", "320", "320")), {"max_batch_size": 4}, U2NET
    )
    assert (square.any_size, square.max_batch) == (False, 4)
    unbatched = check_model(_metadata(in_shape=("1", "3", "320", "320"), out_shape=("1", "1", "320", "320")), {}, U2NET)
    assert (unbatched.batched, unbatched.max_batch) == (False, 1)


def test_the_check_names_every_difference() -> None:
    with pytest.raises(ModelError) as caught:
        check_model(_metadata(in_dtype="FP16", in_shape=("-1", "1", "512", "512"), out_dtype="INT8"), {"max_batch_size": 8}, U2NET)
    detail = caught.value.detail
    assert "'input.1' has datatype FP16, expected FP32" in detail
    assert "'input.1' has 1 channels, expected 3" in detail
    assert "expected 320x320 or dynamic" in detail
    assert "'1959' has datatype INT8, expected FP32" in detail
    with pytest.raises(ModelError, match="shape"):
        check_model(_metadata(in_shape=("-1", "-1")), {"max_batch_size": 8}, U2NET)
    with pytest.raises(ModelError, match="2 inputs"):
        meta = _metadata()
        meta["inputs"].append(meta["inputs"][0])
        check_model(meta, {"max_batch_size": 8}, U2NET)


def test_server_errors_become_inference_unavailable() -> None:
    full = unavailable(InferenceServerException("queue full", status="StatusCode.RESOURCE_EXHAUSTED"), "an inference")
    assert isinstance(full, InferenceUnavailable) and full.code == "inference_unavailable" and full.retry_after == 1
    assert unavailable(TimeoutError(), "an inference").retry_after == 2
    gone = unavailable(InferenceServerException("Request for unknown model", status="StatusCode.NOT_FOUND"), "x")
    assert "unknown model" in gone.detail
    assert "ConnectionRefusedError" in unavailable(ConnectionRefusedError(), "x").detail


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def test_export_writes_a_repository_whose_config_matches_its_graph(tmp_path: Path) -> None:
    exported = export_repository(resolve_model("u2netp"), tmp_path, ExportOptions(max_batch=8, tensorrt=True))
    assert exported.graph == tmp_path / "u2netp" / "1" / "model.onnx"
    config = _config(tmp_path / "u2netp" / "config.pbtxt")
    graph = onnx.load(str(exported.graph))
    onnx.checker.check_model(graph)
    assert config.name == "u2netp" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    # One input, one output, named and shaped as in the graph (the batch dimension is Triton's).
    assert [(t.name, list(t.dims)) for t in config.input] == [(v.name, _dims(v)[1:]) for v in graph.graph.input]
    assert [(t.name, list(t.dims)) for t in config.output] == [(v.name, _dims(v)[1:]) for v in graph.graph.output]
    assert list(config.input[0].dims) == [3, -1, -1] and list(config.output[0].dims) == [1, -1, -1]
    assert all(t.data_type == mc.DataType.TYPE_FP32 for t in [*config.input, *config.output])
    assert all(_dims(v)[0] == -1 for v in [*graph.graph.input, *graph.graph.output])  # dynamic batch
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.Kind.KIND_GPU, 1)]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    # The profile covers the engine's views: up to max_batch, the 64-px probe to 2:1 aspect views.
    assert trt.parameters["trt_profile_min_shapes"] == "input.1:1x3x64x64"
    assert trt.parameters["trt_profile_opt_shapes"] == "input.1:8x3x320x320"
    assert trt.parameters["trt_profile_max_shapes"] == "input.1:8x3x640x640"
    # The served graph gives what the in-process one gives.
    import onnxruntime as ort

    from segmentation.session import OnnxModel

    x = np.random.default_rng(1).standard_normal((2, 3, 320, 256)).astype(np.float32)
    served = ort.InferenceSession(str(exported.graph), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})[0]
    local = OnnxModel(resolve_model("u2netp"), max_batch=2, precision="fp32").predict(x)
    assert np.abs(served[:, 0] - local).max() < 1e-5


def _tiny_model(path: Path, side: int, logits: bool) -> Path:
    """A stand-in IS-Net/BiRefNet: one 1x1 convolution at the preset's fixed size (sigmoid unless logits)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [0.3, 0.3, 0.3])
    nodes = [helper.make_node("Conv", ["image", "w"], ["conv"])]
    nodes.append(helper.make_node("Identity" if logits else "Sigmoid", ["conv"], ["mask"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, side, side])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("preset", ["isnet", "birefnet"])
def test_export_a_user_model_by_path(tmp_path: Path, preset: str) -> None:
    path = _tiny_model(tmp_path / f"{preset}-tiny.onnx", PRESETS[preset].input_size, logits=preset == "birefnet")
    spec = resolve_model(f"{preset}:{path}")
    options = ExportOptions(name=preset, max_batch=4, gpu=False, max_queue_delay_us=500, instances=2)
    exported = export_repository(spec, tmp_path / "repo", options)
    config = _config(exported.config)
    assert (config.name, config.max_batch_size) == (preset, 4)
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [3, -1, -1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("mask", [1, -1, -1])]
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.Kind.KIND_CPU, 2)]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert f"({preset} preset)" in exported.config.read_text().splitlines()[0]


def test_export_python_backend_and_refusals(tmp_path: Path) -> None:
    spec = resolve_model("u2netp")
    exported = export_repository(spec, tmp_path, ExportOptions(backend="python", gpu=False))
    config = _config(exported.config)
    assert config.backend == "python" and not config.platform
    assert (exported.graph.parent / "model.py").read_text().startswith('"""Triton Python-backend model')
    with pytest.raises(ModelError, match="TensorRT"):
        export_repository(spec, tmp_path, ExportOptions(backend="python", tensorrt=True))
    with pytest.raises(ModelError, match="Cannot read"):
        export_repository(ModelSpec("gone", tmp_path / "gone.onnx", U2NET), tmp_path)
