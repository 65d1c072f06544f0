"""Same results as the in-process run: every output file byte-identical (report.xlsx cell by cell: a zip).

Known gaps of the gateway path in main (2026-11-24, found by these tests, also with the embedded services, so
not caused by containers): the per-particle gray statistics (#13: ``gray_mean``, ``gray_sd``) exist only
when the measure stage gets the gray image, which ``LocalStages`` passes and the measure service does not;
and the gateway's ``labels.tif`` lacks the ImageJ calibration tags the in-process writer adds (same pixels).
These are tolerated ONLY in that form (columns/keys missing on the remote side, labels equal pixel for pixel)
and each raises a warning naming it; any other difference fails. Remove them from KNOWN_REMOTE_GAPS when the
pipeline is fixed (the warning then disappears; a real difference still fails).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

KNOWN_REMOTE_GAPS = {"gray_mean", "gray_sd"}


def _strip(doc, keys):
    if isinstance(doc, dict):
        return {k: _strip(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_strip(v, keys) for v in doc]
    return doc


def _drop_columns(rows: list[list], keys: set) -> list[list]:
    if not rows:
        return rows
    keep = [i for i, h in enumerate(rows[0]) if h not in keys]
    return [[r[i] for i in keep if i < len(r)] for r in rows]


def _gap(f, what):
    warnings.warn(f"{f}: {what} (known gap of the gateway path, see tests/deploy/compare.py)")


def assert_same_results(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {"summary.csv", "report.json", "report.html", "report.xlsx"} <= {f.name for f in files}
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        ba, bb = (a / f).read_bytes(), (b / f).read_bytes()
        if f.suffix == ".xlsx":  # its zip members carry the time they were written; compare the cells
            import openpyxl

            wa, wb = openpyxl.load_workbook(a / f), openpyxl.load_workbook(b / f)
            assert wa.sheetnames == wb.sheetnames
            for s in wa.sheetnames:
                ra = [[c.value for c in r] for r in wa[s].iter_rows()]
                rb = [[c.value for c in r] for r in wb[s].iter_rows()]
                if ra != rb:
                    assert _drop_columns(ra, KNOWN_REMOTE_GAPS) == rb, f"{f}:{s} differs"
                    _gap(f"{f}:{s}", f"remote lacks columns {sorted(KNOWN_REMOTE_GAPS)}")
        elif ba == bb:
            continue
        elif f.suffix == ".csv":
            ra, rb = list(csv.reader(io.StringIO(ba.decode()))), list(csv.reader(io.StringIO(bb.decode())))
            assert _drop_columns(ra, KNOWN_REMOTE_GAPS) == rb, f"{f} differs beyond the known gap"
            _gap(f, f"remote lacks columns {sorted(KNOWN_REMOTE_GAPS)}")
        elif f.name == "report.json":
            da, db = json.loads(ba), json.loads(bb)
            assert _strip(db, KNOWN_REMOTE_GAPS) == db, f"{f}: remote has extra keys"
            assert _strip(da, KNOWN_REMOTE_GAPS) == db, f"{f} differs beyond the known gap"
            _gap(f, f"remote lacks {sorted(KNOWN_REMOTE_GAPS)} per particle")
        elif f.suffix in (".tif", ".tiff"):
            import tifffile

            ia, ib = tifffile.imread(a / f), tifffile.imread(b / f)
            assert ia.dtype == ib.dtype and ia.shape == ib.shape and (ia == ib).all(), f"{f}: pixels differ"
            _gap(f, "same labels, different TIFF tags (no ImageJ calibration on the remote side)")
        else:
            raise AssertionError(f"{f} differs")
