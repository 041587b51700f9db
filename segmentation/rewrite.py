"""Graph edits that make the int8 graph cheaper on onnxruntime's CPU kernels, and no further from fp32.

Both were found by profiling u2netp's int8 graph on one thread at 320x320
(onnxruntime's profiler, per node): ~213 ms in all.

* ``split_one_channel_convs`` (before quantizing; exact in fp32): a convolution with one
  output channel wastes most of an int8 GEMM, which packs outputs in blocks of 16.
  u2netp's side output at full size (3x3, 64 channels to 1) took 19.6 ms, as long as
  a 64-output one. As a 1x1 convolution to one channel per tap (k*k of them) followed by
  a k x k convolution with one-hot weights that adds the taps up, it computes the
  same sum at a fraction of the cost.
* ``read_in_float`` (after quantizing): a node named here reads its input before the
  quantize/dequantize pair instead of after it. u2netp's largest upsample (64 channels,
  160 to 320) follows the convolution the recipe keeps in float; fused into a uint8
  Resize it ran in the channels-first layout (24.7 ms, plus transposing the 128-channel
  concatenation after it). Read in float it runs channels-last (~5 ms).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def split_one_channel_convs(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Rewrite, in place, each ungrouped k x k (k > 1) Conv with one output channel. Returns their names."""
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    nodes, split = [], []
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if weight is None or len(weight.dims) != 4 or weight.dims[0] != 1 or attrs.get("group", 1) != 1:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)  # (1, C, kh, kw)
        _, channels, kh, kw = w.shape
        if kh * kw == 1:
            nodes.append(node)
            continue
        taps = kh * kw
        per_tap = np.ascontiguousarray(w[0].transpose(1, 2, 0).reshape(taps, channels, 1, 1))
        one_hot = np.zeros((1, taps, kh, kw), w.dtype)
        one_hot[0, np.arange(taps), np.arange(taps) // kw, np.arange(taps) % kw] = 1
        names = (f"{node.name}_taps_w", f"{node.name}_sum_w", f"{node.output[0]}_taps")
        model.graph.initializer.extend([numpy_helper.from_array(per_tap, names[0]), numpy_helper.from_array(one_hot, names[1])])
        nodes.append(helper.make_node("Conv", [node.input[0], names[0]], [names[2]], name=f"{node.name}_taps", kernel_shape=[1, 1]))
        # The sum keeps every attribute (pads, strides, dilations) and the bias.
        summed = helper.make_node("Conv", [names[2], names[1], *node.input[2:]], list(node.output), name=node.name)
        summed.attribute.extend(node.attribute)
        nodes.append(summed)
        split.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if split:  # the replaced weights, now read by nothing
        read = {name for node in nodes for name in node.input}
        unread = [init for init in model.graph.initializer if init.name not in read]
        for init in unread:
            model.graph.initializer.remove(init)
    return split


def read_in_float(model_bytes: bytes, names: Iterable[str]) -> bytes:
    """The QDQ graph with each named node's first input read before its QuantizeLinear/DequantizeLinear pair.

    Raises ValueError for a name the graph lacks or a node whose input is not such a pair.
    """
    import onnx

    names = set(names)
    if not names:
        return model_bytes
    model = onnx.load_from_string(model_bytes)
    producer = {out: node for node in model.graph.node for out in node.output}
    found = {node.name: node for node in model.graph.node if node.name in names}
    if missing := sorted(names - set(found)):
        raise ValueError(f"the graph has no node(s) {missing}")
    for node in found.values():
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            raise ValueError(f"{node.name} does not read a quantize/dequantize pair")
        node.input[0] = q.input[0]
    # Pairs left without a reader go (onnxruntime would otherwise still run them).
    while True:
        read = {name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}
        unread = [node for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.output[0] not in read]
        if not unread:
            break
        for node in unread:
            model.graph.node.remove(node)
    return model.SerializeToString()
