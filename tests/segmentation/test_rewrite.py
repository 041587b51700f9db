"""Graph edits for the int8 build: the same outputs, cheaper kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from segmentation.rewrite import split_one_channel_convs


def _model(nodes, inits, outputs: list[tuple[str, list[int]]]):  # type: ignore[no-untyped-def]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 24, 20])
    ys = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], ys, inits), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model, x: np.ndarray) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _convs():  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 8, 3, 3)).astype(np.float32), "w_side"),
        numpy_helper.from_array(np.array([0.7], np.float32), "b_side"),
        numpy_helper.from_array(rng.normal(size=(1, 8, 5, 3)).astype(np.float32), "w_wide"),
        numpy_helper.from_array(rng.normal(size=(2, 8, 3, 3)).astype(np.float32), "w_two"),
        numpy_helper.from_array(rng.normal(size=(1, 8, 1, 1)).astype(np.float32), "w_point"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_side", "b_side"], ["side"], name="side", pads=[1, 1, 1, 1]),
        # Dilated, strided, not square, no bias: every attribute carries over to the sum.
        helper.make_node("Conv", ["x", "w_wide"], ["wide"], name="wide", pads=[4, 2, 4, 2], dilations=[2, 1], strides=[2, 2]),
        helper.make_node("Conv", ["x", "w_two"], ["two"], name="two", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w_point"], ["point"], name="point"),
    ]
    return _model(nodes, inits, [("side", [1, 1, 24, 20]), ("wide", [1, 1, 12, 10]), ("two", [1, 2, 24, 20]), ("point", [1, 1, 24, 20])])


def test_one_channel_convolutions_are_split_into_taps_with_the_same_outputs() -> None:
    model = _convs()
    x = np.random.default_rng(0).normal(size=(1, 8, 24, 20)).astype(np.float32)
    before = _run(model, x)
    assert split_one_channel_convs(model) == ["side", "wide"]  # not two outputs, not 1x1
    onnx.checker.check_model(model)
    kinds = [(n.name, n.op_type) for n in model.graph.node]
    assert ("side_taps", "Conv") in kinds and ("wide_taps", "Conv") in kinds
    taps = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert taps["side_taps_w"].shape == (9, 8, 1, 1) and taps["wide_taps_w"].shape == (15, 8, 1, 1)
    assert "w_side" not in taps and "w_wide" not in taps and "w_two" in taps  # replaced weights go
    after = _run(model, x)
    for old, new in zip(before, after):
        assert new.shape == old.shape
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-4)
