"""Package layout (the services/ tree), proto stubs and shipped models, made by the build itself.

A clean checkout has no generated stubs (they are never committed): they are
generated here, when this file is loaded, i.e. before setuptools looks at any
package directory (egg_info, sdist and build_py all check them), and again in
build_py so a build from an sdist without them works too. The shipped Triton
model repository (``models_repo/``) goes into the wheel as package data
``semforge/models_repo`` so an installed semforge finds its models without
``SEMFORGE_MODELS_REPO``. The version has one source: ``semforge.__version__``.
"""

import re
import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SERVICES = ["gateway", "segment", "measure", "classify", "render", "translate"]
MODELS = ROOT / "models_repo"


def generate_stubs() -> None:
    """protoc over protos/ into services/semforge/<domain>/v1 (needs grpcio-tools: a build requirement)."""
    if (ROOT / "protos").is_dir():
        runpy.run_path(str(ROOT / "services/semforge/rpc/codegen.py"))["generate"](ROOT)


def find_packages_under(base: Path, name: str) -> list[str]:
    return sorted(name + "".join("." + part for part in d.relative_to(base).parts)
                  for d in [base, *base.rglob("*")] if d.is_dir() and (d / "__init__.py").exists()
                  and "__pycache__" not in d.parts)


def version() -> str:
    text = (ROOT / "services/semforge/__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


class BuildWithProtosAndModels(build_py):
    def run(self):
        generate_stubs()
        super().run()
        if MODELS.is_dir() and not self.editable_mode:
            dest = Path(self.build_lib) / "semforge" / "models_repo"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(MODELS, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_env"))  # _env: a local venv link


generate_stubs()
packages = find_packages_under(ROOT / "services/semforge", "semforge")
package_dir = {"semforge": "services/semforge"}
for s in SERVICES:
    packages.append(f"semforge_{s}")
    package_dir[f"semforge_{s}"] = f"services/{s}"

setup(version=version(), packages=packages, package_dir=package_dir,
      cmdclass={"build_py": BuildWithProtosAndModels}, package_data={"semforge": ["py.typed"]})
