"""Generate the protobuf/gRPC Python stubs from ``protos/`` into ``services/`` (as ``semforge.<domain>.v1``).

Run at build/install time (``make protos``, and by ``setup.py`` on every
build); the generated files are never committed or edited by hand.
Usage: ``python services/semforge/rpc/codegen.py [REPO_ROOT]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def generate(root: str | os.PathLike) -> list[Path]:
    from grpc_tools import protoc
    import grpc_tools

    root = Path(root)
    proto_dir = root / "protos"
    out_dir = root / "services"
    files = sorted(proto_dir.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {proto_dir}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}"] + [str(f.relative_to(proto_dir)) for f in files]
    cwd = os.getcwd()
    os.chdir(proto_dir)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    made = []
    for f in files:
        pkg_dir = out_dir / f.parent.relative_to(proto_dir)
        d = pkg_dir
        while d != out_dir / "semforge":
            init = d / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from protos/ at build time; do not edit."""\n')
            d = d.parent
        made.append(pkg_dir)
    return made


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[3]
    for p in generate(root):
        print(f"generated {p}")
