"""The input normalization baked into the ONNX graph: same output as normalizing outside, idempotent."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from semforge.inference import MODELS_REPO, model_dir
from semforge.inference.onnx_graph import METADATA_KEY, bake_normalization, legacy_normalize, normalization_in_graph


def _tiny_model(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[[[0.3, -0.2], [0.5, 0.1]]]], np.float32), "w")
    node = helper.make_node("Conv", ["image", "w"], ["probabilities"], pads=[0, 0, 1, 1])
    graph = helper.make_graph([node], "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, None, None])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 1, None, None])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path / "model.onnx"))
    (path / "training.json").write_text(json.dumps({"input": {"invert": False}}))


def _run(path, x):
    return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def test_baked_normalization_equals_the_old_preprocessing_and_is_idempotent(tmp_path):
    _tiny_model(tmp_path)
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    before = _run(tmp_path, legacy_normalize(x))
    assert not normalization_in_graph(json.loads((tmp_path / "training.json").read_text()))
    assert bake_normalization(tmp_path) is True
    np.testing.assert_allclose(_run(tmp_path, x), before, rtol=1e-6, atol=1e-6)
    assert normalization_in_graph(json.loads((tmp_path / "training.json").read_text()))
    data = (tmp_path / "model.onnx").read_bytes()
    assert bake_normalization(tmp_path) is False
    assert (tmp_path / "model.onnx").read_bytes() == data


@pytest.mark.parametrize("name", ["semforge_unetpp_se", "semforge_unetpp_transmission"])
def test_shipped_models_carry_the_normalization(name):
    d = model_dir(name, repo=MODELS_REPO)
    meta = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert METADATA_KEY in meta.custom_metadata_map
    assert normalization_in_graph(json.loads((d / "training.json").read_text()))
