"""The tree keeps its shape: one sample policy, rooms with their docstrings, imports pointing down."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("core", "wire", "live", "audit", "sim", "ops", "bench")


def test_the_sample_policy_in_the_repo_root_is_the_packaged_default():
    packaged = resources.files("streams") / "data" / "settlewatch.toml"
    root = REPO / "settlewatch.toml"
    assert root.read_bytes() == packaged.read_bytes()
    # one file, not two copies that can drift: the root one is a link to the packaged one
    assert root.is_symlink() and root.resolve() == (REPO / "streams/data/settlewatch.toml")


def test_every_room_says_what_it_owns_and_what_it_may_import():
    for room in ROOMS:
        init = REPO / "streams" / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc and len(doc) > 120, f"streams/{room}/__init__.py needs its docstring"


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([lint, "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout or "broken" not in done.stdout


def test_the_core_reads_no_clock():
    clocks = ("now", "utcnow", "today", "time_ns", "monotonic", "perf_counter")
    for path in (REPO / "streams" / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in clocks, f"{path.name}:{node.lineno} reads a clock"
