"""Fuzz run over the image decoders and the header probe (a few minutes; `pytest -m slow`)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_fuzz_decoders_and_probe(tmp_path):
    seconds = float(os.environ.get("SEMFORGE_FUZZ_SECONDS", "180"))
    out = tmp_path / "fuzz.json"

    def limit_memory():  # a decoder that allocates a bomb fails with MemoryError instead of taking the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    r = subprocess.run([sys.executable, str(HERE / "fuzz_images.py"), "--seconds", str(seconds), "--json", str(out)],
                       capture_output=True, text=True, timeout=seconds + 300, preexec_fn=limit_memory)
    rep = json.loads(out.read_text())
    print(json.dumps(rep["stats"]))
    assert rep["stats"]["inputs"] > 1000
    assert rep["crashes"] == {}, json.dumps(rep["crashes"], indent=1)[:4000]
    assert rep["probe_mismatches"] == [], rep["probe_mismatches"][:3]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
