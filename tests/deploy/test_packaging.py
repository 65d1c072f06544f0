"""Packaging from a clean checkout (issue #12): the build generates the stubs, ships the models, knows its version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import semforge
from semforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
STUB_DOMAINS = ["common", "gateway", "segment", "measure", "classify", "render", "translate"]


def _clean_checkout(dest: Path) -> Path:
    """Copy what git tracks (plus untracked, non-ignored files): no generated stubs, no venvs, no out/."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _clean_checkout(tmp_path_factory.mktemp("checkout"))
    assert not (src / "services/semforge/common").exists(), "a clean checkout must not contain generated stubs"
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the build requirements (setuptools, grpcio-tools) are those of this venv, so the
    # test runs offline in seconds; the isolated build (`pip wheel .` from PyPI) runs in `make images`.
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("semforge-*.whl")
    return whl


def test_wheel_from_clean_checkout_holds_stubs_models_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert wheel.name.startswith(f"semforge-{semforge.__version__}-")
    for d in STUB_DOMAINS:
        assert f"semforge/{d}/v1/{d}_pb2.py" in names
        assert f"semforge/{d}/v1/{d}_pb2_grpc.py" in names
    for model in ("semforge_unetpp_se", "semforge_unetpp_transmission"):
        assert f"semforge/models_repo/{model}/config.pbtxt" in names
        assert f"semforge/models_repo/{model}/1/model.onnx" in names
    assert not any("/_env" in n for n in names), "a local venv link (models_repo/*/_env) must not be packaged"
    # every package in the source tree is in the wheel (the old hand-written list missed scenes, segmentation...)
    for init in (ROOT / "services/semforge").rglob("__init__.py"):
        rel = init.relative_to(ROOT / "services").as_posix()
        if "__pycache__" not in rel and not any(rel.startswith(f"semforge/{d}/") for d in STUB_DOMAINS):
            assert rel in names, rel
    for s in ("gateway", "segment", "measure", "classify", "render", "translate"):
        assert f"semforge_{s}/server.py" in names


def test_installed_wheel_finds_its_models_without_configuration(wheel, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                        "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k != "SEMFORGE_MODELS_REPO"}
    env["PYTHONPATH"] = str(target)
    code = ("import semforge.inference as i, semforge.cli as c; print(i.MODELS_REPO); "
            "print(i.model_dir('semforge_unetpp_se')); c.main(['--version'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    repo, model, version = r.stdout.split("\n")[:3]
    assert Path(repo) == target / "semforge" / "models_repo"
    newest = max(int(d.name) for d in (ROOT / "models_repo/semforge_unetpp_se").iterdir() if d.name.isdigit())
    assert Path(model) == target / f"semforge/models_repo/semforge_unetpp_se/{newest}"  # the highest version
    assert version == f"semforge {semforge.__version__}"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"semforge {semforge.__version__}"
