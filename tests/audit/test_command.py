"""`settlewatch replay` and `settlewatch check-config` as a user runs them: every bad config,
--out or --until is one message and a non-zero exit, never a traceback (issue 14 item 12)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = (REPO / "settlewatch.toml").read_text()
AUTHS = str(REPO / "examples" / "auths.jsonl")
CREDITS = str(REPO / "examples" / "credits.jsonl")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_message(result, *words: str) -> None:
    """Exit code 1 or 2 with a message (click's), and no exception escaping click."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output


def config(tmp_path: Path, text: str | bytes, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


CATCH_ALL = '[[cycles]]\nacquirer = "*"\nmode = "per_sale"\ndue = "T+1 12:00"\n\n'
BAD_CONFIGS = [
    # (name, config text, words in the message)
    ("not-utf8", SAMPLE.encode().replace(b"Asia/Shanghai", b"Asia/\xff\xfe"), ["not UTF-8"]),
    ("nested-100k-deep", "holidays = " + "[" * 100_000 + "]" * 100_000 + "\n",
     ["nested too deeply"]),
    ("zone-is-a-directory", SAMPLE.replace('"Asia/Shanghai"', '"Asia"'),
     ["timezone: unknown time zone 'Asia'"]),
    ("zone-300-characters", SAMPLE.replace('"Asia/Shanghai"', '"' + "A" * 300 + '"'),
     ["timezone: unknown time zone", "300 characters"]),
    ("cycle-zone-is-a-directory", SAMPLE.replace('grace = "30m"', 'grace = "30m"\ntimezone = "Europe"'),
     ["cycles[1].timezone: unknown time zone 'Europe'"]),
    ("catch-all-first", SAMPLE.replace("[[cycles]]", CATCH_ALL + "[[cycles]]", 1),
     ["cycles[1]: is unreachable", "cycles[0] (acquirer '*', merchant_id '*')"]),
    ("duplicate-cycle", SAMPLE.replace("[[cycles]]\nacquirer = \"acq-d0\"",
                                       "[[cycles]]\nacquirer = \"acq-t1\"\nmode = \"batch\"\n"
                                       "due = \"T+2 10:00\"\n\n[[cycles]]\nacquirer = \"acq-d0\""),
     ["cycles[1]: duplicates cycles[0]"]),
]


@pytest.mark.parametrize("text,words", [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_a_bad_config_is_one_message_from_check_config_and_from_replay(tmp_path, text, words):
    path = config(tmp_path, text)
    assert_message(invoke("check-config", "--config", path), *words)
    assert_message(invoke("replay", "--config", path, "--input", AUTHS,
                          "--out", str(tmp_path / "out")), *words)


def test_check_config_still_says_ok_for_the_sample():
    result = invoke("check-config", "--config", str(REPO / "settlewatch.toml"))
    assert result.exit_code == 0 and result.output.startswith("ok: 4 cycles")


def test_out_under_a_file_is_a_message(tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = invoke("replay", "--input", AUTHS, "--out", str(tmp_path / "a-file" / "out"))
    assert_message(result, "--out", "cannot write to", "Not a directory")


@pytest.mark.parametrize("out", ["/proc/settlewatch-out", "/sys/settlewatch-out", "/sys"])
def test_out_where_nothing_may_be_written_is_a_message(out):
    # Tests run as root, so chmod cannot take write permission away: /proc and /sys are
    # kernel file systems where even root can create no file or directory.
    assert not os.path.exists(out) or out == "/sys"
    result = invoke("replay", "--input", AUTHS, "--out", out)
    assert_message(result, "--out", "cannot write to")
    assert not os.path.exists(out) or out == "/sys"


def test_until_before_every_event_is_an_error(tmp_path):
    result = invoke("replay", "--input", AUTHS, "--input", CREDITS,
                    "--until", "2020-01-01T00:00:00Z", "--out", str(tmp_path))
    assert_message(result, "--until 2020-01-01T00:00:00Z is before every event",
                   "2026-09-29T00:03:21.394Z")


def test_until_before_the_last_event_is_a_warning_in_the_output_and_the_summary(tmp_path):
    result = invoke("replay", "--input", AUTHS, "--input", CREDITS,
                    "--until", "2026-10-05T00:00:00Z", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "warning: --until 2026-10-05T00:00:00Z is before the last event" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["warnings"] and "before the last event" in summary["warnings"][0]


def test_the_readme_sample_command_runs_as_written_from_the_repo_root(tmp_path):
    out = tmp_path / "sample"
    cmd = [str(Path(sys.executable).parent / "settlewatch"), "replay", "--config",
           "settlewatch.toml", "--input", "examples/auths.jsonl", "--input",
           "examples/credits.jsonl", "--until", "2026-10-12T00:00:00Z", "--out", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    readme = (REPO / "README.md").read_text()
    counts = done.stdout.split(";")[0]  # "read 1712 events (13 rejected), 145 findings: ..."
    assert f"# {counts.split(', overpaid')[0]}" in readme, (counts, "update the README comment")
    assert not (out / "summary.json").read_text().count("warnings")
