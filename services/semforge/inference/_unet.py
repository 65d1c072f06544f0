"""UNet++ segmenters: one tiled predictor, two back ends (ONNX Runtime in process, Triton over gRPC).

Models live in the Triton model repository ``models_repo/<name>/<version>/`` as
``model.onnx`` + ``training.json`` (how it was trained, what its input means).
The in-process back end loads the highest version with ONNX Runtime; the Triton
back end sends the same tiles to a Triton server that serves the same file, so
both give the same probabilities.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..modality import Modality
from ._base import Segmenter
from .onnx_graph import legacy_normalize, normalization_in_graph
from .tiling import combine, predict_tiled

__all__ = ["MODELS_REPO", "model_dir", "load_metadata", "OnnxSegmenter", "TritonSegmenter", "SHIPPED"]


def _default_models_repo() -> Path:
    """``SEMFORGE_MODELS_REPO`` if set, else the copy installed with the package, else the checkout's ``models_repo/``."""
    if os.environ.get("SEMFORGE_MODELS_REPO"):
        return Path(os.environ["SEMFORGE_MODELS_REPO"])
    installed = Path(__file__).resolve().parents[1] / "models_repo"  # wheel: package data semforge/models_repo
    return installed if installed.is_dir() else Path(__file__).resolve().parents[3] / "models_repo"


MODELS_REPO = _default_models_repo()
# modality -> shipped model name (dark-particle modalities have their own model)
SHIPPED = {m.value: "semforge_unetpp_transmission" if m.dark_particles else "semforge_unetpp_se" for m in Modality}


def model_dir(name: str, version: int | None = None, repo: str | os.PathLike | None = None) -> Path:
    """``<repo>/<name>/<version>`` (highest version when not given); FileNotFoundError says what exists."""
    root = Path(repo or MODELS_REPO) / name
    versions = sorted(int(p.name) for p in root.glob("*") if p.is_dir() and p.name.isdigit()) if root.is_dir() else []
    if not versions:
        known = sorted(p.name for p in Path(repo or MODELS_REPO).glob("*") if (p / "config.pbtxt").exists())
        raise FileNotFoundError(f"no model {name!r} in {repo or MODELS_REPO}; available: {', '.join(known) or 'none'}")
    v = versions[-1] if version is None else version
    if v not in versions:
        raise FileNotFoundError(f"model {name!r} has no version {v}; versions: {versions}")
    return root / str(v)


def load_metadata(path: Path) -> dict:
    meta_path = path / "training.json"
    if not meta_path.exists():
        return {"input": {"invert": False}, "outputs": ["particle"]}
    return json.loads(meta_path.read_text())


class _TiledSegmenter(Segmenter):
    reports_confidence = True

    def __init__(self, meta: dict, *, tile: int = 1024, overlap: int = 128):
        self.meta = meta
        self.invert = bool(meta.get("input", {}).get("invert", False))
        self.modality = meta.get("modality", "se")
        self.tile, self.overlap = tile, overlap
        # the network's input: plain gray when the normalization is in the ONNX graph (onnx_graph.py)
        self.prepare = (lambda b: b.astype(np.float32)) if normalization_in_graph(meta) else legacy_normalize

    def run(self, batch: np.ndarray) -> np.ndarray:  # (N, 1, h, w) gray in [0, 1] -> (N, C, h, w)
        raise NotImplementedError

    def predict_channels(self, gray: np.ndarray) -> np.ndarray:
        g = np.asarray(gray, np.float32)
        if self.invert:
            g = 1 - g
        return predict_tiled(self.run, g, tile=self.tile, overlap=self.overlap)

    def predict(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        return combine(self.predict_channels(gray)).astype(np.float32)

    def channels(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        return self.predict_channels(gray)


class OnnxSegmenter(_TiledSegmenter):
    """In-process back end (the embedded default): ONNX Runtime on the CPU."""

    def __init__(self, name: str = "semforge_unetpp_se", *, version: int | None = None, repo=None,
                 threads: int | None = None, **kw):
        import onnxruntime as ort

        path = model_dir(name, version, repo)
        super().__init__(load_metadata(path), **kw)
        self.name = f"{name}/{path.name}"
        self.served = self.name  # the weights this session runs
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path / "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: self.prepare(batch)})[0]


class TritonSegmenter(_TiledSegmenter):
    """Cluster back end: the same tiles, inferred by a Triton server (gRPC) that serves the model."""

    def __init__(self, name: str = "semforge_unetpp_se", *, url: str | None = None, version: int | None = None,
                 repo=None, timeout_s: float = 60.0, **kw):
        import tritonclient.grpc as tg

        self.url = url or os.environ.get("TRITON_URL", "127.0.0.1:8001")
        try:
            meta = load_metadata(model_dir(name, version, repo))
        except FileNotFoundError:
            meta = {"input": {"invert": False}}
        super().__init__(meta, **kw)
        self.model, self.version = name, "" if version is None else str(version)
        self.name = f"triton:{name}"
        self.served = f"{name}/{self.version}" if self.version else ""  # set from each response
        self.client = tg.InferenceServerClient(self.url)
        self.timeout_s = timeout_s
        self._tg = tg

    def ready(self) -> bool:
        try:
            return self.client.is_server_ready() and self.client.is_model_ready(self.model, self.version)
        except Exception:  # noqa: BLE001 - not ready is the answer to any failure
            return False

    def run(self, batch: np.ndarray) -> np.ndarray:
        tg = self._tg
        x = self.prepare(batch)
        inp = tg.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = self.client.infer(self.model, [inp], model_version=self.version,
                                outputs=[tg.InferRequestedOutput("probabilities")], client_timeout=self.timeout_s)
        served = res.get_response().model_version  # the version Triton ran (the latest unless one was asked)
        if served:
            self.served = f"{self.model}/{served}"
        return res.as_numpy("probabilities")


class ShippedSegmenter(Segmenter):
    """The shipped model for the image's modality (SE/HIM vs STEM/TEM), loaded on first use."""

    def __init__(self, backend: str = "onnx", **kw):
        if backend not in ("onnx", "triton"):
            raise ValueError(f"unknown inference back end {backend!r}; use onnx or triton")
        self.backend, self.kw = backend, kw
        self.name = "unetpp" if backend == "onnx" else "unetpp-triton"
        self._loaded: dict[str, _TiledSegmenter] = {}

    def ready(self) -> bool:
        """In process: the shipped model files exist. Triton: the server has every shipped model ready."""
        try:
            if self.backend == "onnx":
                return all((model_dir(SHIPPED[m], repo=self.kw.get("repo")) / "model.onnx").exists()
                           for m in ("se", "tem"))
            return all(self.for_modality(m).ready() for m in ("se", "tem"))
        except Exception:  # noqa: BLE001 - not ready is the answer to any failure
            return False

    def for_modality(self, modality: str) -> _TiledSegmenter:
        name = SHIPPED[Modality.parse(modality).value]
        if name not in self._loaded:
            cls = OnnxSegmenter if self.backend == "onnx" else TritonSegmenter
            self._loaded[name] = cls(name, **self.kw)
        return self._loaded[name]

    reports_confidence = True

    def predict(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        return self.for_modality(modality).predict(gray, modality=modality)

    def channels(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        return self.for_modality(modality).predict_channels(gray)

    def model_version(self, modality: str = "se") -> str:
        """``name/version`` of the weights this segmenter ran (last) for ``modality``: the model directory in
        process; on Triton the version the server answered with."""
        return getattr(self.for_modality(modality), "served", "")
