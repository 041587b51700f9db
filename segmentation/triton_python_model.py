"""Triton Python-backend model: serves the exported ``model.onnx`` through onnxruntime.

Not imported by arclip: ``arclip model export --backend python`` copies this file
to ``NAME/1/model.py``, for a Triton without the onnxruntime backend (the
CPU-only ``tritonserver`` in the ``nvidia-pytriton`` wheel, which the test suite
runs). Triton's dynamic batcher hands ``execute`` several requests; those of one
image size run as one batch.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0") or 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        # Through DLPack, both ways: the stub's numpy conversions are built for numpy 1 and
        # under numpy 2 read inputs as one repeated value and lose outputs (Triton 2.51).
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input)) for r in requests]
        if not self.batched:
            arrays = [a[None] for a in arrays]
        groups = {}
        for index, array in enumerate(arrays):
            groups.setdefault(array.shape[1:], []).append(index)
        outputs = [None] * len(arrays)
        for indexes in groups.values():
            batch = np.concatenate([arrays[i] for i in indexes])
            result = self.session.run([self.output], {self.input: batch})[0]
            start = 0
            for i in indexes:
                count = len(arrays[i])
                outputs[i] = result[start : start + count]
                start += count
        responses = []
        for out in outputs:
            out = np.ascontiguousarray(out if self.batched else out[0], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output, out)]))
        return responses
