"""Graph edits that make the int8 graph cheaper on onnxruntime's CPU kernels.

Found by profiling u2netp's int8 graph per node (onnxruntime's profiler, one thread,
320x320: ~213 ms in all). ``split_one_channel_convs`` (before quantizing; exact in fp32):
a convolution with one output channel wastes most of an int8 GEMM, which packs outputs in
blocks of 16. u2netp's side output at full size (3x3, 64 channels to 1) took 19.6 ms, as
long as a 64-output one. As a 1x1 convolution to one channel per tap (k*k of them)
followed by a k x k convolution with one-hot weights that adds the taps up, it computes
the same sum at a fraction of the cost.

Tried and dropped: feeding the largest upsample (after the convolution the recipe keeps in
float) its float input, so that it runs channels-last (24.7 -> ~10 ms). It cost quality on
the quality benchmark's other-sources part (benchmarks/quality/README.md, "Two mirrored
views and a faster graph").
"""

from __future__ import annotations

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
