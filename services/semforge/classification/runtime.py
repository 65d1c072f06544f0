"""Shape classifiers behind one interface: ``classify(gray, labels, particles, modality) -> [(shape, confidence)]``.

* ``cnn`` (the default, chosen by the figures in ``docs/classification.md``): the
  shipped CNN for the image's modality (``models_repo/semforge_classifier_se`` for
  SE/HIM, ``..._transmission`` for STEM/TEM), ONNX Runtime in process;
* ``cnn-triton``: the same model served by Triton (``TRITON_URL``), crops sent in batches;
* ``rules-v1``: the rule-based classes from outline features (:func:`semforge.analysis.classify_shape`).

A class whose probability is below the confidence limit (75 %, Bals & Epple
2023) is ``unknown``.  ``covered`` and ``agglomerate`` particles are excluded
from the size statistics by :func:`apply_classes` (kept in the table with the reason).
"""

from __future__ import annotations

import abc
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from ..analysis import CONFIDENCE_LIMIT, classify_shape, shape_dimensions
from .classes import UNMEASURED, modality_set
from .crops import CROP_MARGIN, CROP_SIZE, extract_crops

__all__ = ["Classifier", "RulesClassifier", "CnnClassifier", "create_classifier", "classifier_names",
           "register_classifier", "apply_classes", "DEFAULT_CLASSIFIER", "SHIPPED_CLASSIFIERS"]

DEFAULT_CLASSIFIER = "cnn"
SHIPPED_CLASSIFIERS = {"se": "semforge_classifier_se", "transmission": "semforge_classifier_transmission"}
_REGISTRY: dict[str, Callable[..., "Classifier"]] = {}


class Classifier(abc.ABC):
    """Shape class and confidence of every particle of one image."""

    name: str = "classifier"

    @abc.abstractmethod
    def classify(self, gray: np.ndarray, labels: np.ndarray, particles: Sequence[dict[str, Any]], *,
                 modality: str = "se", unit: str = "nm",
                 confidence_limit: float = CONFIDENCE_LIMIT) -> list[tuple[str, float]]:
        """One ``(shape, confidence)`` per row of ``particles`` (row ``id`` = its label in ``labels``)."""

    def ready(self) -> bool:
        return True


def register_classifier(name: str, factory: Callable[..., Classifier]) -> None:
    _REGISTRY[name] = factory


def classifier_names() -> list[str]:
    return sorted(_REGISTRY)


def create_classifier(name: str = DEFAULT_CLASSIFIER, **kwargs) -> Classifier:
    """Build a classifier by name; an unknown name raises ValueError listing the valid ones."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown classifier {name!r}; valid: {', '.join(classifier_names())}") from None
    return factory(**kwargs)


def _check(gray, labels, limit):
    g, lab = np.asarray(gray), np.asarray(labels)
    if g.ndim != 2 or lab.ndim != 2:
        raise ValueError(f"gray and labels must be 2-D, got {g.shape} and {lab.shape}")
    if lab.shape[0] > g.shape[0] or lab.shape[1] != g.shape[1]:
        raise ValueError(f"labels {lab.shape} do not fit the image {g.shape}")
    if not 0 < limit <= 1:
        raise ValueError(f"confidence_limit must be in (0, 1], got {limit}")
    return g, lab


class RulesClassifier(Classifier):
    """``rules-v1``: outline features only (cannot see covered particles or agglomerates)."""

    name = "rules-v1"

    def classify(self, gray, labels, particles, *, modality="se", unit="nm", confidence_limit=CONFIDENCE_LIMIT):
        _check(gray, labels, confidence_limit)
        return [classify_shape(r, modality=modality, unit=unit, confidence_limit=confidence_limit) for r in particles]


class CnnClassifier(Classifier):
    """The shipped CNN: crops of every particle, one batched call per image (ONNX Runtime or Triton)."""

    def __init__(self, backend: str = "onnx", *, repo=None, version: int | None = None, threads: int | None = None,
                 url: str | None = None, batch: int = 256, timeout_s: float = 60.0):
        if backend not in ("onnx", "triton"):
            raise ValueError(f"unknown classifier back end {backend!r}; use onnx or triton")
        self.backend, self.repo, self.version, self.threads = backend, repo, version, threads
        self.url = url or os.environ.get("TRITON_URL", "127.0.0.1:8001")
        self.batch, self.timeout_s = int(batch), timeout_s
        self.name = "cnn" if backend == "onnx" else "cnn-triton"
        self._models: dict[str, tuple[Callable[[np.ndarray], np.ndarray], dict]] = {}

    def _meta(self, model: str) -> dict:
        from ..inference import model_dir

        return json.loads((model_dir(model, self.version, self.repo) / "training.json").read_text())

    def _load(self, cls_set: str):
        if cls_set in self._models:
            return self._models[cls_set]
        name = SHIPPED_CLASSIFIERS[cls_set]
        meta = self._meta(name)
        if self.backend == "onnx":
            import onnxruntime as ort

            from ..inference import model_dir

            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads or os.cpu_count() or 1
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(model_dir(name, self.version, self.repo) / "model.onnx"), so,
                                        providers=["CPUExecutionProvider"])

            def run(x: np.ndarray) -> np.ndarray:
                return sess.run(None, {"image": x})[0]
        else:
            import tritonclient.grpc as tg

            client = tg.InferenceServerClient(self.url)
            version = "" if self.version is None else str(self.version)

            def run(x: np.ndarray) -> np.ndarray:
                inp = tg.InferInput("image", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                res = client.infer(name, [inp], model_version=version, client_timeout=self.timeout_s,
                                   outputs=[tg.InferRequestedOutput("probabilities")])
                return res.as_numpy("probabilities")
        self._models[cls_set] = (run, meta)
        return self._models[cls_set]

    def ready(self) -> bool:
        """In process: both shipped models load. Triton: the server has both ready."""
        try:
            if self.backend == "onnx":
                return all(self._load(s) for s in SHIPPED_CLASSIFIERS)
            import tritonclient.grpc as tg

            c = tg.InferenceServerClient(self.url)
            return c.is_server_ready() and all(c.is_model_ready(m) for m in SHIPPED_CLASSIFIERS.values())
        except Exception:  # noqa: BLE001 - not ready is the answer to any failure
            return False

    def probabilities(self, gray, labels, ids, *, modality: str = "se") -> tuple[np.ndarray, list[str]]:
        """Class probabilities ``(N, C)`` of the instances ``ids`` and the class names."""
        run, meta = self._load(modality_set(modality))
        size = int(meta["input"]["size"])
        margin = float(meta["input"].get("margin", CROP_MARGIN))
        g = np.asarray(gray, np.float32)[: labels.shape[0]]
        out = []
        for i in range(0, len(ids), self.batch):
            x = extract_crops(g, labels, ids[i:i + self.batch], size=size, margin=margin)
            out.append(np.asarray(run(x), np.float32))
        probs = np.concatenate(out) if out else np.zeros((0, len(meta["classes"])), np.float32)
        return probs, list(meta["classes"])

    def classify(self, gray, labels, particles, *, modality="se", unit="nm", confidence_limit=CONFIDENCE_LIMIT):
        g, lab = _check(gray, labels, confidence_limit)
        present = set(np.unique(lab).tolist())
        ids = [int(r["id"]) for r in particles if int(r["id"]) in present]
        probs, classes = self.probabilities(g, lab, ids, modality=modality)
        by_id = {}
        for i, p in zip(ids, probs):
            k = int(np.argmax(p))
            conf = round(float(p[k]), 4)
            by_id[i] = (classes[k] if conf >= confidence_limit else "unknown", conf)
        return [by_id.get(int(r["id"]), ("unknown", 0.0)) for r in particles]


def apply_classes(particles: list[dict[str, Any]], results: Sequence[tuple[str, float]], unit: str) -> dict[str, int]:
    """Write shape, confidence and shape dimensions into the rows; exclude covered and agglomerated particles.

    A row already excluded keeps its reason; a ``covered`` or ``agglomerate`` row
    gets ``excluded = True`` and that class as ``exclude_reason``.  Returns the counts per class.
    """
    if len(results) != len(particles):
        raise ValueError(f"{len(results)} classes for {len(particles)} particles")
    counts: dict[str, int] = {}
    for row, (shape, conf) in zip(particles, results):
        row["shape"], row["shape_confidence"] = shape, float(conf)
        row.update(shape_dimensions(row, shape, unit))
        if shape in UNMEASURED and not row.get("excluded"):
            row["excluded"], row["exclude_reason"] = True, shape
        counts[shape] = counts.get(shape, 0) + 1
    return counts


register_classifier("rules-v1", RulesClassifier)
register_classifier("cnn", lambda **kw: CnnClassifier("onnx", **kw))
register_classifier("cnn-triton", lambda **kw: CnnClassifier("triton", **kw))
