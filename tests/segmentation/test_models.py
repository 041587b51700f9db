"""The model registry, loading errors, execution providers, the dynamic batch and image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from segmentation import ModelError, OnnxModel, resolve_model
from segmentation.models import IMAGENET_MEAN, IMAGENET_STD, PRESETS, ModelSpec
from segmentation.preprocess import to_model_input
from segmentation.session import choose_providers, make_dims_dynamic, provider_options
from tests.conftest import photo

# --- registry ------------------------------------------------------------------------


def test_default_model_is_the_packaged_u2netp() -> None:
    spec = resolve_model("u2netp")
    assert spec.name == "u2netp"
    assert spec.path.name == "u2netp.onnx" and spec.path.is_file()
    assert spec.path.stat().st_size > 1_000_000
    assert spec.preset == PRESETS["u2net"]
    assert spec.preset.input_size == 320
    assert spec.preset.mean == IMAGENET_MEAN and spec.preset.std == IMAGENET_STD
    assert spec.preset.scale_by_max and not spec.preset.apply_sigmoid


def test_presets_match_their_model_families() -> None:
    isnet, birefnet = PRESETS["isnet"], PRESETS["birefnet"]
    assert (isnet.input_size, isnet.mean, isnet.std) == (1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    assert (birefnet.input_size, birefnet.mean, birefnet.std) == (1024, IMAGENET_MEAN, IMAGENET_STD)
    assert birefnet.apply_sigmoid and not isnet.apply_sigmoid


@pytest.mark.parametrize(
    ("filename", "family"),
    [
        ("isnet-general-use.onnx", "isnet"),
        ("BiRefNet-general-epoch_244.onnx", "birefnet"),
        ("u2net_human_seg.onnx", "u2net"),
        ("silueta.onnx", "u2net"),
    ],
)
def test_local_path_preset_guessed_from_file_name(tmp_path: Path, filename: str, family: str) -> None:
    path = tmp_path / filename
    path.write_bytes(b"x")
    spec = resolve_model(str(path))
    assert spec.preset.family == family
    assert spec.path == path.resolve()
    assert spec.name == path.stem


def test_local_path_with_explicit_preset(tmp_path: Path) -> None:
    path = tmp_path / "mymodel.onnx"
    path.write_bytes(b"x")
    assert resolve_model(f"birefnet:{path}").preset.family == "birefnet"
    assert resolve_model(f"isnet:{path}").preset.family == "isnet"


@pytest.mark.parametrize("ref", ["sam", "u2net", "rembg", "model.pt"])
def test_unknown_name_is_a_clear_error(ref: str) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(ref)
    assert "u2netp" in info.value.detail  # tells the user what exists


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_model(str(tmp_path / "nope.onnx"))
    assert "nope.onnx" in info.value.detail


def test_wrong_model_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError):
        OnnxModel(resolve_model(str(path)))


def test_unreadable_model_file_is_a_model_error(tmp_path: Path) -> None:
    spec = ModelSpec(name="gone", path=tmp_path / "gone.onnx", preset=PRESETS["u2net"])
    with pytest.raises(ModelError):
        OnnxModel(spec)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_image_model(tmp_path: Path, *, mixes_batch: bool) -> Path:
    """A valid (1, 3, 320, 320) -> (1, 1, 320, 320) model; optionally one that mixes the batch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 320, 320])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1, axes=[1])]
    if mixes_batch:
        # adding the mean over *everything*, batch included, makes a batch of two differ from two singles
        nodes += [
            helper.make_node("ReduceMean", ["x"], ["g"], keepdims=1, axes=[0, 1, 2, 3]),
            helper.make_node("Add", ["m", "g"], ["s"]),
        ]
    else:
        nodes += [helper.make_node("Identity", ["m"], ["s"])]
    nodes += [helper.make_node("Sigmoid", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [x], [y])
    name = "mixing.onnx" if mixes_batch else "tiny.onnx"
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / name)


def test_not_an_image_model_is_a_model_error(tmp_path: Path) -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "flat", [a], [b])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "flat.onnx")
    with pytest.raises(ModelError):
        OnnxModel(resolve_model(str(path)))


def test_batch_agnostic_model_gets_dynamic_batch(tmp_path: Path) -> None:
    model = OnnxModel(resolve_model(str(tiny_image_model(tmp_path, mixes_batch=False))), max_batch=4)
    assert model.max_batch == 4
    batch = np.random.default_rng(0).standard_normal((3, 3, 320, 320)).astype(np.float32)
    out = model.predict(batch)
    assert out.shape == (3, 320, 320)
    expected = 1 / (1 + np.exp(-batch.max(axis=1)))
    assert np.allclose(out, expected, atol=1e-5)


def test_batching_that_changes_outputs_is_refused(tmp_path: Path) -> None:
    model = OnnxModel(resolve_model(str(tiny_image_model(tmp_path, mixes_batch=True))), max_batch=4)
    assert model.max_batch == 1, "batching changed the outputs, so the model must run one image at a time"
    batch = np.random.default_rng(1).standard_normal((3, 3, 320, 320)).astype(np.float32)
    together = model.predict(batch)  # split into singles
    apart = np.concatenate([model.predict(batch[i : i + 1]) for i in range(3)])
    assert np.allclose(together, apart, atol=1e-6)


# --- the shipped u2netp, batch made dynamic --------------------------------------------------


def test_shipped_u2netp_has_fixed_dims_and_is_rewritten() -> None:
    raw = resolve_model("u2netp").path.read_bytes()
    original = onnx.load_from_string(raw)
    assert [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 320, 320]
    rewritten, changed = make_dims_dynamic(raw)
    assert changed
    graph = onnx.load_from_string(rewritten).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        assert not any(dims[i].HasField("dim_value") for i in (0, 2, 3))


def test_u2netp_takes_the_photos_aspect(u2netp_model: OnnxModel) -> None:
    assert u2netp_model.any_size
    rgb = photo(416, 320, center=(300, 160), radius=70)
    wide = u2netp_model.predict(to_model_input(rgb, u2netp_model.preset, (416, 320))[None])[0]
    assert wide.shape == (320, 416)
    assert wide[160, 300] > 0.8 and wide[160, 60] < 0.2  # the object where it is, not stretched away


def test_a_model_with_fixed_reshapes_keeps_to_square_inputs(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 320, 320])
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 1, 320, 320])
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=1, axes=[1]),
        helper.make_node("Reshape", ["m", "shape"], ["r"]),  # its target size is baked in
        helper.make_node("Sigmoid", ["r"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "fixed", [x], [y], [shape])
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fixed.onnx")
    model = OnnxModel(resolve_model(str(path)), max_batch=1)
    assert not model.any_size
    assert model.predict(np.zeros((1, 3, 320, 320), np.float32)).shape == (1, 320, 320)


@pytest.fixture(scope="module")
def batched_u2netp() -> OnnxModel:
    return OnnxModel(resolve_model("u2netp"), max_batch=4)


def _inputs(count: int) -> np.ndarray:
    preset = PRESETS["u2net"]
    return np.stack(
        [to_model_input(photo(320, 240, seed=i, center=(100 + 40 * i, 120)), preset) for i in range(count)]
    )


def test_dynamic_batch_gives_the_same_outputs_as_single_runs(batched_u2netp: OnnxModel) -> None:
    assert batched_u2netp.max_batch == 4
    batch = _inputs(3)
    together = batched_u2netp.predict(batch)
    apart = np.concatenate([batched_u2netp.predict(batch[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 320, 320) and together.dtype == np.float32
    assert np.allclose(together, apart, atol=1e-4)


def test_batches_over_max_batch_are_split(tmp_path: Path) -> None:
    model = OnnxModel(resolve_model(str(tiny_image_model(tmp_path, mixes_batch=False))), max_batch=2)
    calls: list[int] = []
    run = model._run
    model._run = lambda batch: (calls.append(len(batch)), run(batch))[1]  # type: ignore[method-assign]
    batch = np.random.default_rng(2).standard_normal((5, 3, 320, 320)).astype(np.float32)
    out = model.predict(batch)
    assert calls == [2, 2, 1]
    assert out.shape == (5, 320, 320)
    assert np.allclose(out, 1 / (1 + np.exp(-batch.max(axis=1))), atol=1e-5)


def test_u2netp_finds_the_object(u2netp_model: OnnxModel) -> None:
    x = to_model_input(photo(320, 320), u2netp_model.preset)
    saliency = u2netp_model.predict(x[None])[0]
    assert saliency.min() >= 0 and saliency.max() <= 1
    assert saliency[160, 160] > 0.8  # inside the disk
    assert saliency[10, 10] < 0.2 and saliency[300, 300] < 0.2  # background corners


def test_provider_is_reported(u2netp_model: OnnxModel) -> None:
    import onnxruntime as ort

    assert u2netp_model.provider in ort.get_available_providers()


# --- execution providers ------------------------------------------------------------------


def test_choose_providers_prefers_gpu_and_keeps_cpu_fallback() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(available, None) == available
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], None) == [
        "CUDAExecutionProvider", "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"], None) == ["CPUExecutionProvider"]
    assert choose_providers(available, "cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(available, "cpu") == ["CPUExecutionProvider"]


def test_choose_providers_refuses_what_is_missing() -> None:
    with pytest.raises(ModelError):
        choose_providers(["CPUExecutionProvider"], "cuda")


# --- TensorRT's shape profiles ------------------------------------------------------------


def test_tensorrt_gets_one_profile_for_every_input_the_engine_sends(tmp_path: Path) -> None:
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    specs = provider_options(providers, "input.1", PRESETS["u2net"], 8, tmp_path)
    assert specs[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    name, options = specs[0]  # type: ignore[misc]
    assert name == "TensorrtExecutionProvider"
    # From the 64-px start-up probe to a batch of 8 aspect views of up to 2:1.
    assert options["trt_profile_min_shapes"] == "input.1:1x3x64x64"
    assert options["trt_profile_opt_shapes"] == "input.1:8x3x320x320"
    assert options["trt_profile_max_shapes"] == "input.1:8x3x640x640"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt")


def test_other_providers_pass_through_unchanged() -> None:
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_options(providers, "x", PRESETS["u2net"], 8, None) == providers
    name, options = provider_options(["TensorrtExecutionProvider"], "x", PRESETS["isnet"], 1, None)[0]  # type: ignore[misc]
    assert options["trt_profile_max_shapes"] == "x:1x3x2048x2048" and "trt_engine_cache_path" not in options


def test_a_tensorrt_that_refuses_the_model_leaves_the_next_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    real_session = ort.InferenceSession
    attempts: list[list[object]] = []

    def session(graph, sess_options=None, providers=None):  # type: ignore[no-untyped-def]
        attempts.append(list(providers))
        if any(isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider" for p in providers):
            raise RuntimeError("TensorRT: unsupported node")  # as a real TensorRT may
        return real_session(graph, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    model = OnnxModel(resolve_model(str(tiny_image_model(tmp_path, mixes_batch=False))), max_batch=1, derived_dir=tmp_path)
    name, options = attempts[0][0]  # type: ignore[misc]
    assert name == "TensorrtExecutionProvider" and options["trt_profile_opt_shapes"] == "x:1x3x320x320"
    assert attempts[1] == ["CPUExecutionProvider"]
    assert model.provider == "CPUExecutionProvider"
    assert model.predict(np.zeros((1, 3, 320, 320), np.float32)).shape == (1, 320, 320)
