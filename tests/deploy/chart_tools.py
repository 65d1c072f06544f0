"""Render the Helm chart and find the chart tools (helm from the npm package, kubernetes-validate, yamllint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "semforge"
KUBE_VERSION = "1.30.0"
SCENARIOS = {"default": [], **{p.stem.removesuffix("-values"): [p] for p in sorted((CHART / "ci").glob("*-values.yaml"))}}


def tool(name: str) -> str:
    """Path of a tool in the venv (make installs them there) or on PATH; skip only outside `make test`."""
    for cand in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if cand.exists():
            return str(cand)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("SEMFORGE_REQUIRE_DEPLOY_TOOLS"):
        pytest.fail(f"{name} is not installed (make test installs it: make deploy-tools)")
    pytest.skip(f"{name} not installed (make deploy-tools)")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([tool("helm"), *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def render(values_files=(), sets=(), release: str = "rel", check: bool = True):
    args = ["template", release, str(CHART), "--kube-version", KUBE_VERSION, "--namespace", "semforge"]
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return helm(*args, check=check)


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]
