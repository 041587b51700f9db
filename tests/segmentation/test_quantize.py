"""The int8 model: built from the fp32 file, close to it, cached, proven, and refused when it strays."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segmentation import ModelError, OnnxModel, resolve_model
from segmentation.calibration import model_inputs, synthetic_photo
from segmentation.models import PRESETS
from segmentation.preprocess import to_model_input
from segmentation.quantize import (
    U2NETP_SHA256,
    QuantizationRefused,
    Tolerance,
    load_or_build_int8,
    recipe_for,
)
from segmentation.session import choose_precision
from tests.conftest import photo

# --- choosing the precision -------------------------------------------------------------


def test_auto_is_int8_only_on_a_cpu_for_a_tested_model() -> None:
    assert choose_precision("auto", on_cpu=True, tested_int8=True) == "int8"
    assert choose_precision("auto", on_cpu=False, tested_int8=True) == "fp32"  # GPUs stay fp32
    assert choose_precision("auto", on_cpu=True, tested_int8=False) == "fp32"
    assert choose_precision("fp32", on_cpu=True, tested_int8=True) == "fp32"
    assert choose_precision("int8", on_cpu=True, tested_int8=False) == "int8"  # asked for: tried, and proven


def test_int8_on_a_gpu_and_unknown_precisions_are_clear_errors() -> None:
    with pytest.raises(ModelError, match="CPU"):
        choose_precision("int8", on_cpu=False, tested_int8=True)
    with pytest.raises(ModelError, match="fp16"):
        choose_precision("fp16", on_cpu=True, tested_int8=True)


def test_only_the_shipped_u2netp_has_a_tested_recipe() -> None:
    shipped = resolve_model("u2netp").path.read_bytes()
    recipe = recipe_for(shipped)
    assert recipe is not None and "Conv_787" in recipe.keep_float
    assert recipe_for(shipped + b"\0") is None
    assert len(U2NETP_SHA256) == 64


def test_calibration_images_are_deterministic() -> None:
    a, b = model_inputs(PRESETS["u2net"], 2, seed=7), model_inputs(PRESETS["u2net"], 2, seed=7)
    assert a.shape == (2, 3, 320, 320) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, model_inputs(PRESETS["u2net"], 2, seed=8))
    image = synthetic_photo(np.random.default_rng(0), 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 10


# --- the shipped u2netp in int8 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("derived")


@pytest.fixture(scope="module")
def int8_u2netp(int8_dir: Path) -> OnnxModel:
    """Built once for the module (~10 CPU s): quantize, calibrate, prove."""
    return OnnxModel(resolve_model("u2netp"), max_batch=1, precision="int8", derived_dir=int8_dir)


@pytest.fixture(scope="module")
def fp32_u2netp() -> OnnxModel:
    return OnnxModel(resolve_model("u2netp"), max_batch=1, precision="fp32")


def test_int8_u2netp_stays_close_to_fp32(int8_u2netp: OnnxModel, fp32_u2netp: OnnxModel) -> None:
    assert int8_u2netp.precision == "int8" and fp32_u2netp.precision == "fp32"
    preset = PRESETS["u2net"]
    images = [photo(320, 240, seed=i, center=(100 + 40 * i, 120)) for i in range(3)]
    images.append(synthetic_photo(np.random.default_rng(99), 400))
    batch = np.stack([to_model_input(image, preset) for image in images])
    fp32 = np.concatenate([fp32_u2netp.predict(x[None]) for x in batch])
    int8 = np.concatenate([int8_u2netp.predict(x[None]) for x in batch])
    assert int8.shape == fp32.shape and int8.dtype == np.float32
    assert np.abs(int8 - fp32).mean() < 0.01
    assert np.mean((int8 > 0.5) != (fp32 > 0.5)) < 0.01


def test_int8_u2netp_finds_the_object(int8_u2netp: OnnxModel) -> None:
    saliency = int8_u2netp.predict(to_model_input(photo(320, 320), int8_u2netp.preset)[None])[0]
    assert saliency.min() >= 0 and saliency.max() <= 1
    assert saliency[160, 160] > 0.8
    assert saliency[10, 10] < 0.2 and saliency[300, 300] < 0.2


def test_int8_u2netp_is_cached_and_reused(int8_u2netp: OnnxModel, int8_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (graph,) = int8_dir.glob("u2netp.int8.*.onnx")
    meta = json.loads(graph.with_suffix(".json").read_text())
    assert meta["source_sha256"] == U2NETP_SHA256 and meta["agreement"]["mean_abs"] < 0.01
    before = graph.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="arclip.segmentation"):
        again = OnnxModel(resolve_model("u2netp"), max_batch=1, precision="auto", derived_dir=int8_dir)
    assert again.precision == "int8"  # auto on a CPU: int8 for the shipped model
    assert "loaded from" in caplog.text and "building" not in caplog.text
    assert graph.stat().st_mtime_ns == before


# --- the cache and the proof, on a tiny model (quick to quantize) ----------------------------


def tiny_conv_model(tmp_path: Path) -> Path:
    """(1, 3, 320, 320) -> Conv 3x3 -> Relu -> Conv 1x1 -> Sigmoid -> (1, 1, 320, 320)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (1, 8, 1, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.full(1, -0.5, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Sigmoid", ["c2"], ["y"], name="sigmoid"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 320, 320])
    model = helper.make_model(helper.make_graph(nodes, "tiny_conv", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "tinyconv.onnx"
    onnx.save(model, str(path))
    return path


LOOSE = Tolerance(mean_abs=0.05, flipped=0.1)  # a random tiny net sits near 0.5 more than u2netp


def test_a_corrupt_cached_graph_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    raw, cache = spec.path.read_bytes(), tmp_path / "derived"
    first = load_or_build_int8(spec, raw, cache, tolerance=LOOSE)
    assert first.built and first.path is not None and first.path.is_file()
    assert load_or_build_int8(spec, raw, cache, tolerance=LOOSE).built is False

    first.path.write_bytes(b"\0garbage" * 100)
    with caplog.at_level(logging.WARNING, logger="arclip.segmentation"):
        again = load_or_build_int8(spec, raw, cache, tolerance=LOOSE)
    assert "unusable" in caplog.text and "checksum" in caplog.text
    assert again.built and again.data == first.data  # deterministic: the same graph again
    assert first.path.read_bytes() == first.data


def test_an_unreadable_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    raw, cache = spec.path.read_bytes(), tmp_path / "derived"
    first = load_or_build_int8(spec, raw, cache, tolerance=LOOSE)
    assert first.path is not None
    first.path.with_suffix(".json").write_text("{not json")
    assert load_or_build_int8(spec, raw, cache, tolerance=LOOSE).built
    first.path.with_name(first.path.name.replace(".onnx", ".probes.npy")).write_bytes(b"nope")
    assert load_or_build_int8(spec, raw, cache, tolerance=LOOSE).built


def test_a_graph_that_strays_from_fp32_is_refused(tmp_path: Path) -> None:
    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    exact = Tolerance(mean_abs=0.0, flipped=0.0)
    with pytest.raises(QuantizationRefused) as info:
        load_or_build_int8(spec, spec.path.read_bytes(), tmp_path / "derived", tolerance=exact)
    assert "fp32" in info.value.detail and isinstance(info.value, ModelError)
    assert not list((tmp_path / "derived").glob("*.json"))  # nothing cached that was not proven


def test_a_cached_graph_that_no_longer_agrees_is_rebuilt(tmp_path: Path) -> None:
    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    raw, cache = spec.path.read_bytes(), tmp_path / "derived"
    first = load_or_build_int8(spec, raw, cache, tolerance=LOOSE)
    assert first.path is not None
    probes = first.path.with_name(first.path.name.replace(".onnx", ".probes.npy"))
    np.save(probes, 1.0 - np.load(probes))  # as if this machine's int8 kernels disagreed
    assert load_or_build_int8(spec, raw, cache, tolerance=LOOSE).built


def test_a_recipe_naming_missing_nodes_is_refused(tmp_path: Path) -> None:
    from segmentation.quantize import Int8Recipe

    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    with pytest.raises(QuantizationRefused, match="Conv_787"):
        load_or_build_int8(spec, spec.path.read_bytes(), tmp_path / "d", recipe=Int8Recipe(keep_float=("Conv_787",)))


def test_not_a_model_cannot_be_quantized(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError):
        OnnxModel(resolve_model(str(path)), precision="int8", derived_dir=tmp_path / "d")


# --- OnnxModel's choice, and the settings ------------------------------------------------


def test_int8_graph_takes_any_batch_and_size(tmp_path: Path) -> None:
    # Built from the graph with symbolic dims: shapes were not folded to 1x320x320.
    model = OnnxModel(resolve_model(str(tiny_conv_model(tmp_path))), max_batch=4, precision="int8", derived_dir=tmp_path / "d")
    assert model.precision == "int8" and model.max_batch == 4 and model.any_size
    batch = model_inputs(PRESETS["u2net"], 3, seed=5)
    out = model.predict(batch)
    assert out.shape == (3, 320, 320)
    assert np.allclose(out[1], model.predict(batch[1:2])[0], atol=1e-4)
    wide = model.predict(np.ascontiguousarray(np.concatenate([batch[:1], batch[:1, :, :, :96]], axis=3)))
    assert wide.shape == (1, 320, 416)
    # A convolution is local: the wide input's left part maps like the square one (bar the seam).
    assert np.abs(wide[0, :, :300] - out[0, :, :300]).max() < 0.02


def test_explicit_int8_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="directory"):
        OnnxModel(resolve_model(str(tiny_conv_model(tmp_path))), precision="int8")


def test_auto_falls_back_to_fp32_when_int8_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segmentation import quantize

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise QuantizationRefused("strays too far")

    monkeypatch.setattr(quantize, "recipe_for", lambda raw: quantize.Int8Recipe())
    monkeypatch.setattr(quantize, "load_or_build_int8", refuse)
    spec = resolve_model(str(tiny_conv_model(tmp_path)))
    assert OnnxModel(spec, max_batch=1, precision="auto", derived_dir=tmp_path / "d").precision == "fp32"
    with pytest.raises(QuantizationRefused):
        OnnxModel(spec, max_batch=1, precision="int8", derived_dir=tmp_path / "d")


def test_settings_select_the_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from api.app import build_model
    from api.settings import Settings

    assert Settings().model_precision == "auto"
    monkeypatch.delenv("ARCLIP_MODEL_CACHE_DIR")  # the default: derived graphs live in the data dir
    model_path = tiny_conv_model(tmp_path)
    monkeypatch.setenv("ARCLIP_MODEL", str(model_path))
    monkeypatch.setenv("ARCLIP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARCLIP_MODEL_PRECISION", "fp32")
    assert build_model(Settings()).precision == "fp32"
    # An untested model under "auto" stays fp32; asked for int8 it is built under the data dir.
    monkeypatch.setenv("ARCLIP_MODEL_PRECISION", "auto")
    assert build_model(Settings()).precision == "fp32"
    monkeypatch.setenv("ARCLIP_MODEL_PRECISION", "int8")
    model = build_model(Settings())
    assert model.precision == "int8"
    assert list((tmp_path / "data" / "models").glob("tinyconv.int8.*.onnx"))
    monkeypatch.setenv("ARCLIP_MODEL_CACHE_DIR", str(tmp_path / "cache"))  # shared by replicas, or by tests
    assert build_model(Settings()).precision == "int8"
    assert list((tmp_path / "cache").glob("tinyconv.int8.*.onnx"))
    monkeypatch.setenv("ARCLIP_MODEL_PRECISION", "int4")
    with pytest.raises(ValidationError):
        Settings()
