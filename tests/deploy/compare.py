"""Same results as the in-process run: every output file byte-identical (report.xlsx cell by cell: a zip)."""

from __future__ import annotations

from pathlib import Path


def assert_same_results(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {"summary.csv", "report.json", "report.html", "report.xlsx"} <= {f.name for f in files}
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        if f.suffix == ".xlsx":  # its zip members carry the time they were written; compare the cells
            import openpyxl

            wa, wb = openpyxl.load_workbook(a / f), openpyxl.load_workbook(b / f)
            assert wa.sheetnames == wb.sheetnames
            for s in wa.sheetnames:
                assert [[c.value for c in r] for r in wa[s].iter_rows()] == \
                    [[c.value for c in r] for r in wb[s].iter_rows()], f"{f}:{s} differs"
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f"{f} differs"
