"""The report through the services (#13): warnings in the gRPC progress stream and the report, provenance."""

import hashlib
import io
import json

import numpy as np
import pytest
import tifffile

from semforge.client import GatewayClient, ProgressBar
from semforge.common.v1 import common_pb2




def test_warnings_in_progress_stream_client_and_report(emb, tmp_path):
    path = tmp_path / "blank.tif"  # no pixel size, nothing to find
    tifffile.imwrite(path, np.full((128, 160), 40, np.uint8))
    c = GatewayClient(emb.gateway_address)
    up = c.upload(path)
    events, printed = [], io.StringIO()
    bar = ProgressBar(printed)

    def progress(ev):
        events.append(ev)
        bar(ev)

    job = c.analyze([up.image.ref], ["blank"], common_pb2.AnalysisOptions(), progress=progress)
    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.message
    warn = [e for e in events if e.stage == "warning"]
    codes = [e.warning.code for e in warn]
    assert "uncalibrated" in codes and "no_particles" in codes
    assert all(e.warning.image in ("blank", "") and e.warning.message for e in warn)
    assert len(codes) == len(set((e.warning.code, e.warning.image, e.warning.message) for e in warn))
    assert "warning [no_particles] blank:" in printed.getvalue()
    c.download_outputs(job, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"uncalibrated", "no_particles"} <= {w["code"] for w in doc["warnings"]}
    assert "no_particles" in (tmp_path / "out" / "report.html").read_text()
    c.close()


def test_provenance_through_the_gateway(emb, sample_tiff, tmp_path):
    import semforge

    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    c.analyze_files([path], tmp_path / "gw", sample="prov")
    c.close()
    doc = json.loads((tmp_path / "gw" / "report.json").read_text())
    assert doc["schema_version"] == "semforge.report/v2"
    p = doc["provenance"]
    assert p["version"] == semforge.__version__ and p["models"]["segmenter"]
    (inp,) = p["inputs"]
    assert inp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert inp["calibration_source"] == "file:zeiss" and inp["file"]
    assert [q["label"] for q in doc["distribution"]["quantiles"]][:3] == ["x10,0", "x50,0", "x90,0"]


def _compare_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "deploy" / "compare.py"
    spec = importlib.util.spec_from_file_location("semforge_tests_compare", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gateway_report_equals_in_process_with_no_tolerated_gap(emb, sample_tiff, tmp_path):
    """labels.tif with its ImageJ calibration and gray_mean/gray_sd now come out of both paths identically:
    compare.py tolerates only the run's timestamp and the input's name (file vs object key)."""
    import tifffile
    from semforge.pipeline import analyze_paths

    cmp = _compare_module()
    assert cmp.KNOWN_REMOTE_GAPS == set()
    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    c.analyze_files([path], tmp_path / "gw", sample="same")
    c.close()
    analyze_paths([str(path)], tmp_path / "local", title="semforge report: same")
    cmp.assert_same_results(tmp_path / "local", tmp_path / "gw")
    with tifffile.TiffFile(tmp_path / "gw" / "synthetic_1" / "labels.tif") as t:
        assert t.imagej_metadata["unit"] == "nm"
        xres = t.pages[0].tags["XResolution"].value
        assert xres[1] / xres[0] == pytest.approx(2.5, rel=1e-6)  # nm per px, as Fiji reads it
    assert "gray_mean" in (tmp_path / "gw" / "synthetic_1" / "particles.csv").read_text().splitlines()[0]


def test_quiet_cli_through_the_gateway_still_prints_warnings(emb, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.full((96, 128), 40, np.uint8))
    r = subprocess.run([str(Path(sys.executable).parent / "semforge"), "client", "--server", emb.gateway_address,
                        "analyze", str(path), "--out", str(tmp_path / "out"), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning [uncalibrated] blank:" in r.stderr and "warning [no_particles] blank:" in r.stderr
    assert "[###" not in r.stderr and "few_particles" not in r.stderr  # quiet: no progress; 0 particles: no_particles
