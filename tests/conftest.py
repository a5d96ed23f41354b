"""Session-wide hooks, loaded by every run (and by pytest-xdist's controller, which loads no
conftest below tests/): the order in which xdist hands out the test files, and the faults
table of tests/integration (its rows are made from the reports of the tests marked `fault`,
which tests/integration/conftest.py tags).

`make test` runs `pytest -n 2 --dist loadfile`: each test file runs whole on one of two worker
processes, and a worker that is done asks for the next file. The integration files (and any
test marked `integration` elsewhere, like tests/deploy/test_pictures.py) take minutes, most of
it waiting on a real service's clock (an alert's `for: 1m`, Alertmanager's group_wait); the
rest take seconds. Handed out first, the long files overlap and the short ones fill the gaps
at the end, instead of one long file starting last while the other worker idles.
"""
from __future__ import annotations

import os
from pathlib import Path

INTEGRATION = Path(__file__).parent / "integration"


def _is_long(item) -> bool:
    return INTEGRATION in item.path.parents or item.get_closest_marker("integration") is not None


def pytest_collection_modifyitems(items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a plain run keeps pytest's order
    # Stable: files keep their relative order, and tests their order within a file.
    items.sort(key=lambda item: not _is_long(item))


# ------------------------------------------------------------------ the faults table (issue 15)
_FAULT_ROWS: list[dict] = []


def pytest_runtest_logreport(report):
    fault = next((v for k, v in report.user_properties if k == "fault"), None)
    if fault is None:
        return
    rows = [r for r in _FAULT_ROWS if r["id"] == report.nodeid]
    row = rows[0] if rows else None
    if row is None:
        row = {"id": report.nodeid, "done": fault["done"], "expected": fault["expected"],
               "result": "passed", "seconds": 0.0, "long": fault["long"]}
        _FAULT_ROWS.append(row)
    row["seconds"] += report.duration
    if report.failed:
        row["result"] = "FAILED" if report.when == "call" else f"ERROR ({report.when})"
    elif report.skipped and row["result"] == "passed":
        row["result"] = "skipped"
    row["notes"] = fault["notes"]


def fault_table(rows: list[dict]) -> list[str]:
    lines = ["| fault injected | must hold | result | time | observed |",
             "|---|---|---|---|---|"]
    for r in rows:
        where = " (make test-faults)" if r["long"] else ""
        lines.append(f"| {r['done']}{where} | {r['expected']} | {r['result']} | "
                     f"{r['seconds']:.0f} s | {r.get('notes', '')} |")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not _FAULT_ROWS:
        return
    terminalreporter.section("faults tried (issue 15)")
    for line in fault_table(_FAULT_ROWS):
        terminalreporter.write_line(line)
