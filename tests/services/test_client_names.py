"""`semforge client analyze` with file names that have spaces and non-ASCII letters (#15)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from semforge.embedded import start_embedded
from semforge.storage import key_segment, validate_key

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("name,segment", [("Probe Nr. 3 (Ätzung)", "Probe_Nr._3_Atzung"), ("TiO₂ 粒子", "TiO2"),
                                          ("...", "image"), ("plain_name-1", "plain_name-1")])
def test_key_segment(name, segment):
    assert key_segment(name) == segment and validate_key(segment)


def test_client_analyze_accepts_spaces_and_non_ascii(tmp_path, sample_tiff):
    src, _ = sample_tiff
    odd = tmp_path / "Probe Nr 3 (Ätzung) ü.tif"
    shutil.copy(src, odd)
    emb = start_embedded(store=str(tmp_path / "store"))
    try:
        r = subprocess.run([str(BIN / "semforge"), "client", "--server", emb.gateway_address, "analyze", str(odd),
                            "--out", str(tmp_path / "report"), "--quiet"], capture_output=True, text=True, timeout=300)
    finally:
        emb.stop(0.2)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "Probe_Nr_3_Atzung_u" / "particles.csv").is_file()
