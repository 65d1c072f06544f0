"""Package layout (the services/ tree) and proto stub generation at build time."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SERVICES = ["gateway", "segment", "measure", "classify", "render", "translate"]
DOMAINS = ["common"] + SERVICES


class BuildWithProtos(build_py):
    def run(self):
        runpy.run_path(str(ROOT / "services/semforge/rpc/codegen.py"))["generate"](ROOT)
        super().run()


packages = ["semforge", "semforge.analysis", "semforge.inference", "semforge.storage", "semforge.rpc", "semforge.security"]
packages += [f"semforge.{d}" for d in DOMAINS] + [f"semforge.{d}.v1" for d in DOMAINS]
package_dir = {"semforge": "services/semforge"}
for s in SERVICES:
    packages.append(f"semforge_{s}")
    package_dir[f"semforge_{s}"] = f"services/{s}"

setup(packages=packages, package_dir=package_dir, cmdclass={"build_py": BuildWithProtos},
      package_data={"semforge": ["py.typed"]})
