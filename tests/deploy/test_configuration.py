"""docs/configuration.md is generated from the code (streams/ops/configref.py) and the
committed copy is current; the generator refuses to paper over drift."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.ops import configref

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_configuration_reference_is_current():
    done = subprocess.run([sys.executable, "-m", "streams.ops.configref", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_it_lists_every_worker_option_and_every_stack_variable():
    text = (ROOT / "docs" / "configuration.md").read_text()
    from streams.live.command import worker_command
    for p in worker_command.params:
        if p.envvar:
            assert f"`{p.envvar}`" in text
    for name in ("SW_RUN_DIR", "SW_SMTP_PASSWORD_FILE", "SW_PROMETHEUS_PORT", "SW_PARTITIONS",
                 "SETTLEWATCH_PROMETHEUS_URL", "SW_COMPOSE_KAFKA_PORT"):
        assert f"`{name}`" in text, name
    for key in ("`timezone`", "`cycles[].due`", "`time.keep_settled`", "`fees.<channel>.bps`"):
        assert key in text


def test_a_policy_key_missing_from_policy_md_is_drift(tmp_path, monkeypatch):
    doc = (ROOT / "docs" / "policy.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `orphan_after`"))
    (tmp_path / "policy.md").write_text(doc.replace(row + "\n", ""))
    monkeypatch.setattr(configref, "POLICY_DOC", tmp_path / "policy.md")
    with pytest.raises(configref.Drift, match="orphan_after"):
        configref.generate()


def test_an_undescribed_variable_in_the_code_is_drift(tmp_path, monkeypatch):
    extra = tmp_path / "extra.py"
    extra.write_text('import os\nos.environ.get("SETTLEWATCH_SOMETHING_NEW")\n')
    files = configref._code_files()
    monkeypatch.setattr(configref, "_code_files", lambda: [*files, extra])
    with pytest.raises(configref.Drift, match="SETTLEWATCH_SOMETHING_NEW"):
        configref.generate()


def test_a_stack_variable_missing_from_the_script_headers_is_drift(tmp_path, monkeypatch):
    script = tmp_path / "stack"
    script.write_text("#!/bin/bash\n# Environment:\n#   SW_RUN_DIR   data\nset -e\n"
                      'X=${SW_UNDOCUMENTED_KNOB:-1}\n')
    monkeypatch.setattr(configref, "SCRIPTS", (script,))
    monkeypatch.setattr(configref, "_code_files", lambda: [])
    with pytest.raises(configref.Drift, match="SW_UNDOCUMENTED_KNOB"):
        configref.script_rows()
