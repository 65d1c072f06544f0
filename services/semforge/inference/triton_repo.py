"""The Triton model repository (``models_repo/``): writing model folders, starting a local tritonserver.

Layout of one model::

    models_repo/<name>/config.pbtxt        GPU deployment: KIND_GPU instances, dynamic batching
    models_repo/<name>/configs/cpu.pbtxt   CPU variant (tests, laptops): --model-config-name=cpu
    models_repo/<name>/<version>/model.onnx, model.py (Python backend), training.json

The Python backend needs numpy < 2 and onnxruntime in the model's environment
(``EXECUTION_ENV_PATH``, which Triton's python_backend wants inside the model
directory): the cluster image places a packed environment there, locally
``<model>/_env`` links a virtual environment (``.venv-triton`` from ``make setup``).
Usage: ``python -m semforge.inference.triton_repo [REPO]`` rewrites the configs and
links ``.venv-triton`` (what ``make setup`` runs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["write_model_config", "write_configs", "install_version", "link_environment", "tritonserver_paths", "TritonProcess",
           "local_repository", "CLUSTER_ENV", "CPU_ENV"]

_CONFIG = """\
# Triton model configuration of {name} (written by {writer}).
# {what}
name: "{name}"
backend: "python"
max_batch_size: {max_batch}

# {input_comment}
input [
  {{
    name: "image"
    data_type: TYPE_FP32
    dims: [ {input_dims} ]
  }}
]

# {output_comment}
output [
  {{
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ {output_dims} ]
  }}
]

dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
}}

instance_group [
  {{
    count: 1
    kind: {kind}
  }}
]

# The Python backend's environment (numpy < 2, onnxruntime), inside the model directory as Triton's
# python_backend requires: {env_note}
parameters {{
  key: "EXECUTION_ENV_PATH"
  value: {{ string_value: "$$TRITON_MODEL_DIRECTORY/{env}" }}
}}

# ONNX Runtime intra-op threads (0 = ONNX Runtime's default)
parameters {{
  key: "THREADS"
  value: {{ string_value: "0" }}
}}
"""


def write_configs(model_root: str | os.PathLike, name: str, *, writer: str, max_batch: int, input_comment: str,
                  input_dims: str, output_comment: str, output_dims: str, delay_us: int) -> None:
    """``config.pbtxt`` (the GPU deployment) and ``configs/cpu.pbtxt`` (CPU variant) of a Python-backend model
    whose ``model.py`` runs ``model.onnx`` (input ``image``, output ``probabilities``): one template for the
    segmenters and the classifiers, which differ only in shapes, batch and queue delay."""
    root = Path(model_root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    kw = dict(name=name, writer=writer, max_batch=max_batch, input_comment=input_comment, input_dims=input_dims,
              output_comment=output_comment, output_dims=output_dims, delay_us=delay_us)
    (root / "config.pbtxt").write_text(_CONFIG.format(
        kind="KIND_GPU", env=CLUSTER_ENV, what="GPU deployment (the cluster); configs/cpu.pbtxt is the CPU variant.",
        env_note=f"the cluster image places {CLUSTER_ENV} here.", **kw))
    (root / "configs" / "cpu.pbtxt").write_text(_CONFIG.format(
        kind="KIND_CPU", env=CPU_ENV, what="CPU variant (tests, laptops): tritonserver --model-config-name=cpu.",
        env_note=f"{CPU_ENV}/ is a link to a virtual environment (make setup: .venv-triton).", **kw))


#: the packed environment (conda-pack / venv-pack archive) the cluster image places in each model directory
CLUSTER_ENV = "semforge-onnx-gpu.tar.gz"
#: the CPU variant's environment: a directory (or link to one) in the model directory; `make setup` links
#: ``.venv-triton`` there, :func:`local_repository` links the given environment
CPU_ENV = "_env"


def write_model_config(model_root: str | os.PathLike, name: str, *, classes: int, max_batch: int = 8) -> None:
    """The configs of a segmenter: gray tiles of any size in, ``classes`` probability maps out."""
    write_configs(model_root, name, writer="semforge.inference.triton_repo.write_model_config", max_batch=max_batch,
                  input_comment="image: gray tiles in [0, 1], H and W multiples of 32 (the (x - 0.5) / 0.25 "
                                "normalization is in model.onnx)",
                  input_dims="1, -1, -1",
                  output_comment=f"probabilities: particle{' and border' if classes == 2 else ''} per pixel",
                  output_dims=f"{classes}, -1, -1", delay_us=2000)


def link_environment(model_dir: str | os.PathLike, env_path: str | os.PathLike) -> Path:
    """Make ``<model_dir>/_env`` point at ``env_path`` (the CPU config's EXECUTION_ENV_PATH)."""
    link = Path(model_dir) / CPU_ENV
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == Path(env_path):
            return link
        link.unlink()
    link.symlink_to(Path(env_path).resolve(), target_is_directory=True)
    return link


def install_version(model_root: str | os.PathLike) -> None:
    """Copy the Python-backend ``model.py`` into every version folder of a model and bake the input
    normalization into its ``model.onnx`` (idempotent)."""
    from .onnx_graph import bake_normalization

    src = Path(__file__).with_name("triton_backend.py")
    for v in Path(model_root).iterdir():
        if v.is_dir() and v.name.isdigit():
            shutil.copyfile(src, v / "model.py")
            if (v / "model.onnx").exists():
                bake_normalization(v)


def tritonserver_paths() -> dict:
    """tritonserver binary, backend pieces and libraries from the nvidia-pytriton wheel."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")  # located, not imported: the wheel is installed --no-deps
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tritonserver not installed: `make setup` installs nvidia-pytriton (--no-deps)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    base = pkg / "tritonserver"
    site = pkg.parent
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = {"bin": base / "bin" / "tritonserver", "backend": base / "backends" / "python",
             "stub": base / "python_backend_stubs" / ver / "triton_python_backend_stub",
             "libs": site / "nvidia_pytriton.libs"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"tritonserver pieces missing: {', '.join(missing)}")
    return paths


def local_repository(src: str | os.PathLike, dst: str | os.PathLike, env_path: str | os.PathLike,
                     models: list[str] | None = None) -> Path:
    """Copy models from ``src`` into ``dst``, each with ``_env`` linked to ``env_path`` (a venv) for the CPU
    config; the committed configs are used unchanged."""
    src, dst = Path(src), Path(dst)
    for m in sorted(p for p in src.iterdir() if (p / "config.pbtxt").exists()):
        if models and m.name not in models:
            continue
        shutil.copytree(m, dst / m.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CPU_ENV))
        link_environment(dst / m.name, env_path)
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonProcess:
    """A real tritonserver on 127.0.0.1 (CPU, Python backend) serving ``repo`` with the ``cpu`` configs."""

    def __init__(self, repo: str | os.PathLike, workdir: str | os.PathLike, *, config_name: str = "cpu"):
        self.repo, self.workdir, self.config_name = Path(repo), Path(workdir), config_name
        self.grpc_port, self.http_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "tritonserver.log"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 120.0) -> "TritonProcess":
        p = tritonserver_paths()
        backends = self.workdir / "backends" / "python"
        backends.mkdir(parents=True, exist_ok=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copyfile(p["backend"] / f, backends / f)
        stub = backends / "triton_python_backend_stub"
        shutil.copyfile(p["stub"], stub)
        stub.chmod(0o755)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(p["libs"]), str(Path(sys.base_prefix) / "lib"),
                                                  env.get("LD_LIBRARY_PATH", "")])
        cmd = [str(p["bin"]), f"--model-repository={self.repo}", f"--backend-directory={self.workdir / 'backends'}",
               f"--model-config-name={self.config_name}", "--http-address=127.0.0.1",
               f"--http-port={self.http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--allow-metrics=true", f"--metrics-port={self.metrics_port}", "--metrics-address=127.0.0.1",
               "--log-verbose=0", "--exit-on-error=true", "--strict-readiness=true"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s: {self.tail()}")

    def tail(self, n: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _setup_repository(repo: Path) -> None:
    """Rewrite every model's configs, install model.py + baked normalization, link .venv-triton as _env."""
    import json

    env = repo.parent / ".venv-triton"
    for m in sorted(p for p in repo.iterdir() if (p / "config.pbtxt").exists()):
        versions = sorted((v for v in m.iterdir() if v.is_dir() and v.name.isdigit()), key=lambda v: int(v.name))
        meta = json.loads((versions[-1] / "training.json").read_text()) if versions else {}
        if str(meta.get("format", "")).startswith("semforge.classifier"):  # crops in, no gray normalization
            from ..classification.train import write_triton_model

            write_triton_model(m, m.name, classes=len(meta["classes"]), size=int(meta["input"]["size"]))
        else:
            write_model_config(m, m.name, classes=len(meta.get("outputs", ["particle", "border"])))
            install_version(m)
        if env.is_dir():
            link_environment(m, env)
        print(f"{m}: configs written, normalization in graph" + (", _env -> .venv-triton" if env.is_dir() else ""))


if __name__ == "__main__":
    from . import MODELS_REPO

    _setup_repository(Path(sys.argv[1]) if len(sys.argv) > 1 else MODELS_REPO)
