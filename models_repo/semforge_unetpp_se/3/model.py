"""Triton Python-backend model: runs the version folder's ``model.onnx`` with ONNX Runtime.

This file is copied verbatim as ``models_repo/<name>/<version>/model.py`` by
``semforge train segmenter`` (the copies are build artifacts, like the weights).
It runs inside Triton's Python-backend stub with the model's own environment
(``EXECUTION_ENV_PATH``: numpy < 2 and onnxruntime, or onnxruntime-gpu on GPU
nodes), so it imports nothing of semforge. Tensors: ``image`` FP32
``[N, 1, H, W]`` (gray in [0, 1]: the normalization is in the graph; H and W multiples of 32) -> ``probabilities``
FP32 ``[N, C, H, W]``. Requests that arrive together (dynamic batching) and
share a tile size are run as one batch.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        wanted = ["CUDAExecutionProvider"] if args.get("model_instance_kind") == "GPU" else []
        providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(params.get("THREADS", "0") or 0)
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), so, providers=providers)

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        out = [None] * len(arrays)
        by_shape = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape[1:], []).append(i)
        for idx in by_shape.values():
            batch = np.concatenate([arrays[i] for i in idx]).astype(np.float32)
            probs = self.session.run(None, {"image": batch})[0]
            start = 0
            for i in idx:
                n = arrays[i].shape[0]
                out[i] = probs[start:start + n]
                start += n
        return [pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", o.astype(np.float32))]) for o in out]

    def finalize(self):
        self.session = None
