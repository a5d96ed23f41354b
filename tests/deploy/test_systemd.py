"""deploy/systemd/settlewatch-worker.service: `systemd-analyze verify` accepts it (with
ExecStart pointed at this checkout's installed `settlewatch`, since /opt/settlewatch is not
here), it restarts on the worker's own exit codes (streams/live/exits.py), it is hardened, and
its environment file sets only real options of `settlewatch worker`.

systemd-analyze ships with systemd (Debian's `systemd` package, on this machine); where it
is missing the key checks below still run and the verify test fails, saying so.
"""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.live.exits import EXIT_UNSAFE

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "settlewatch-worker.service"
ENV_FILE = ROOT / "deploy" / "systemd" / "settlewatch-worker.env"
INSTALLED = "/opt/settlewatch/bin/settlewatch"


def unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat, as systemd allows)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return out


def verify(path: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: apt-get install systemd"
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=path.parent)


def copy_for_verify(tmp_path: Path, text: str) -> Path:
    settlewatch = Path(sys.executable).with_name("settlewatch")
    assert settlewatch.exists()
    path = tmp_path / "settlewatch-worker.service"
    path.write_text(text.replace(INSTALLED, str(settlewatch)))
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    done = verify(copy_for_verify(tmp_path, UNIT.read_text()))
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_systemd_analyze_verify_would_catch_a_bad_value(tmp_path):
    """The check above can fail: verify exits 0 on a bad value, but says so on stderr."""
    bad = UNIT.read_text().replace(f"RestartForceExitStatus={EXIT_UNSAFE}",
                                   "RestartForceExitStatus=seventy")
    done = verify(copy_for_verify(tmp_path, bad))
    assert "RestartForceExitStatus" in done.stderr or "Failed to parse" in done.stderr


def test_it_restarts_when_the_worker_stops_itself_to_avoid_skipping_input():
    service = unit()["Service"]
    assert service["Restart"] == ["on-failure"]
    assert str(EXIT_UNSAFE) in service["RestartForceExitStatus"][0].split()
    assert str(EXIT_UNSAFE) not in " ".join(service.get("SuccessExitStatus", []))
    assert service["ExecStart"] == [f"{INSTALLED} worker"]
    assert unit()["Unit"]["StartLimitBurst"] and unit()["Unit"]["StartLimitIntervalSec"]


@pytest.mark.parametrize("key,value", [
    ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes"),
    ("CapabilityBoundingSet", ""), ("User", "settlewatch"), ("StateDirectory", "settlewatch"),
])
def test_it_is_hardened(key, value):
    assert unit()["Service"][key] == [value]


def test_the_environment_file_sets_only_real_worker_options_and_no_secret():
    from streams.live.command import worker_command
    envvars = {p.envvar for p in worker_command.params if getattr(p, "envvar", None)}
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string("[env]\n" + ENV_FILE.read_text())
    names = set(parser["env"])
    kafka_security = {n for n in names if n.startswith("SETTLEWATCH_KAFKA_")}
    assert names - kafka_security <= envvars, sorted(names - kafka_security - envvars)
    assert not [n for n in names if "PASSWORD" in n and not n.endswith("_FILE")]
    data_dir = parser["env"]["SETTLEWATCH_DATA_DIR"]
    assert data_dir.startswith("/var/lib/" + unit()["Service"]["StateDirectory"][0])
