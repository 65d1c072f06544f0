"""The input normalization inside the exported ONNX graph.

The networks are trained on ``(x - 0.5) / 0.25`` of the gray image x in [0, 1].
:func:`bake_normalization` prepends exactly that (``Sub``, ``Div``) to an
existing ``model.onnx``, so every back end (ONNX Runtime in process, Triton's
Python backend) feeds the plain gray tiles and nothing repeats the constants.
Idempotent: the model's metadata (``semforge.input_normalization``) and its
``training.json`` (``input.normalization_in_graph``) record that it was done.
Usage: ``python -m semforge.inference.onnx_graph VERSION_DIR...``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["MEAN", "STD", "METADATA_KEY", "bake_normalization", "normalization_in_graph", "legacy_normalize"]

MEAN, STD = 0.5, 0.25
METADATA_KEY = "semforge.input_normalization"


def normalization_in_graph(meta: dict) -> bool:
    """From a model's ``training.json``: does ``model.onnx`` take the plain gray image?"""
    return bool(meta.get("input", {}).get("normalization_in_graph", False))


def legacy_normalize(batch: np.ndarray) -> np.ndarray:
    """For model files exported before the normalization was baked in (``training.json`` without the flag)."""
    return ((batch - MEAN) / STD).astype(np.float32)


def bake_normalization(version_dir: str | os.PathLike) -> bool:
    """Prepend ``(x - 0.5) / 0.25`` to ``version_dir/model.onnx``; False if it is there already."""
    import onnx
    from onnx import helper, numpy_helper

    d = Path(version_dir)
    path = d / "model.onnx"
    model = onnx.load(str(path))
    meta_path = d / "training.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    changed = False
    if not any(p.key == METADATA_KEY for p in model.metadata_props):
        g = model.graph
        name = g.input[0].name
        inner = f"{name}_normalized"
        for node in g.node:
            node.input[:] = [inner if x == name else x for x in node.input]
        g.initializer.extend([numpy_helper.from_array(np.array(MEAN, np.float32), "semforge_input_mean"),
                              numpy_helper.from_array(np.array(STD, np.float32), "semforge_input_std")])
        g.node.insert(0, helper.make_node("Div", [f"{name}_centered", "semforge_input_std"], [inner],
                                          name="semforge_normalize_div"))
        g.node.insert(0, helper.make_node("Sub", [name, "semforge_input_mean"], [f"{name}_centered"],
                                          name="semforge_normalize_sub"))
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, f"(x - {MEAN}) / {STD}, x gray in [0, 1]"
        onnx.checker.check_model(model)
        tmp = path.with_name("model.onnx.part")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
        changed = True
    if meta and not normalization_in_graph(meta):
        meta.setdefault("input", {})["normalization_in_graph"] = True
        meta_path.write_text(json.dumps(meta, indent=1))
        changed = True
    return changed


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {'normalization baked in' if bake_normalization(arg) else 'already normalized'}")
