"""Every command in README.md's shell blocks runs, as written, from the repository root.

`make test` is what `.ci/run` runs; every other command of the README's ```sh blocks is run
here, word for word, against the ports the README names (the local stack's defaults: Kafka
127.0.0.1:9092, Prometheus :9090, Alertmanager :9095, the worker's metrics :9308). Long-running
commands are run until they have shown that they work, then stopped the way a person would
(Ctrl-C, SIGTERM). `test_every_readme_command_is_run` fails when README gains a command that
nobody runs.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DEFAULT_PORTS = (9092, 9093, 9090, 9095, 9308, 2525)


def readme_commands() -> list[str]:
    """The commands of README's ```sh blocks: continuation lines joined, comments dropped."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            code = re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()
            if code.endswith("\\"):
                pending += code[:-1].strip() + " "
                continue
            commands.append(" ".join((pending + code.strip()).split()))
            pending = ""
    return commands


# What runs each command as written: this module's tests, or .ci/run (make test).
RUN_BY_CI = {"make test"}


def _port_free(port: int) -> bool:
    """Free to listen on, as the servers bind it (SO_REUSEADDR: our own scrapes leave the
    port's connections in TIME_WAIT for a minute)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _sh(cmd: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _start(cmd: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen(cmd, shell=True, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _metric(name: str, port: int = 9308) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _wait(pred, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def _find(prefix: str) -> str:
    found = [c for c in readme_commands() if c.startswith(prefix)]
    assert found, f"README has no command starting {prefix!r}"
    return found[0]


def test_every_readme_command_is_run():
    runs_here = set(_WALKTHROUGH_PREFIXES) | {"make demo"}
    nobody = [c for c in readme_commands()
              if c not in RUN_BY_CI and not any(c.startswith(p) for p in runs_here)]
    assert not nobody, f"README commands no test runs: {nobody}"
    assert "make test" in (REPO / ".ci" / "run").read_text()


_WALKTHROUGH_PREFIXES = (
    "make setup",
    ".venv/bin/settlewatch replay --config settlewatch.toml --input",
    "deploy/local/stack up",
    ".venv/bin/settlewatch worker",
    "SETTLEWATCH_CONFIG=settlewatch.toml faust -A",
    ".venv/bin/settlewatch simulate --bootstrap",
    ".venv/bin/settlewatch simulate --out",
    ".venv/bin/settlewatch replay --bootstrap",
    ".venv/bin/settlewatch check-config",
    "deploy/local/stack down",
)


@pytest.fixture
def default_ports_free():
    busy = [p for p in DEFAULT_PORTS if not _port_free(p)]
    assert not busy, (f"the README's commands use the default ports; {busy} are taken "
                      "(stop the local stack: deploy/local/stack down)")


def test_the_readme_walkthrough_runs_as_written(default_ports_free, tmp_path):
    """Set-up, the sample replay, the stack, the worker (both ways), traffic, audit replay."""
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    done = _sh(_find("make setup"), 900)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _sh(_find(".venv/bin/settlewatch check-config"), 60)
    assert done.returncode == 0 and done.stdout.startswith("ok:"), done.stdout + done.stderr
    done = _sh(_find(".venv/bin/settlewatch replay --config settlewatch.toml --input"), 300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("read 1712 events (13 rejected), 145 findings"), done.stdout
    done = _sh(_find(".venv/bin/settlewatch simulate --out"), 300)
    assert done.returncode == 0, done.stdout + done.stderr
    out_dir = Path(REPO, shlex.split(_find(".venv/bin/settlewatch simulate --out"))[3])
    assert (out_dir / "auths.jsonl").stat().st_size > 0
    up = _sh(_find("deploy/local/stack up"), 600)
    assert up.returncode == 0, up.stdout + up.stderr
    worker = sim = faust_worker = None
    try:
        worker = _start(_find(".venv/bin/settlewatch worker"), tmp_path / "worker.log")
        _wait(lambda: _metric("settlewatch_worker_up") == 1, 180, "the worker's /metrics",
              tmp_path / "worker.log")
        sim = _start(_find(".venv/bin/settlewatch simulate --bootstrap"), tmp_path / "sim.log")
        _wait(lambda: (_metric("settlewatch_events_read_total") or 0) > 200, 240,
              "the worker to read the simulator's traffic", tmp_path / "worker.log")
        assert _stop(sim, signal.SIGINT) in (0, 130, -2), (tmp_path / "sim.log").read_text()
        t0 = time.monotonic()
        _stop(worker)
        assert time.monotonic() - t0 < 30, "the worker took too long to stop on SIGTERM"
        _wait(lambda: _port_free(9308), 30, "the worker's metrics port to close")
        faust_worker = _start(_find("SETTLEWATCH_CONFIG=settlewatch.toml faust -A"),
                              tmp_path / "faust.log", env=env)
        _wait(lambda: (_metric("settlewatch_events_read_total") or 0) >= 0
              and _metric("settlewatch_worker_up") == 1, 180, "the faust-started worker's /metrics",
              tmp_path / "faust.log")
        _stop(faust_worker)
        replay = _find(".venv/bin/settlewatch replay --bootstrap")
        done = _sh(replay, 600)
        assert done.returncode == 0, done.stdout + done.stderr
        out = Path(REPO, shlex.split(replay)[shlex.split(replay).index("--out") + 1])
        summary = json.loads((out / "summary.json").read_text())
        assert "kafka" in summary and (out / "report.html").exists()
    finally:
        for p in (sim, worker, faust_worker):
            if p is not None:
                _stop(p, signal.SIGKILL)
        down = _sh(_find("deploy/local/stack down"), 300)
    assert down.returncode == 0, down.stdout + down.stderr


def test_make_demo_runs_and_ctrl_c_stops_it_all(default_ports_free, tmp_path):
    log = tmp_path / "demo.log"
    demo = _start("make demo", log)
    try:
        _wait(lambda: "missing" in log.read_text(errors="replace")
              and (_metric("settlewatch_findings_total") or 0) > 0, 600,
              "the demo's first findings", log)
    finally:
        code = _stop(demo, signal.SIGINT, timeout=120)
    text = log.read_text(errors="replace")
    # make passes the interrupt on: 2, 130, or the shell killed by SIGINT itself (-2)
    assert code in (0, 2, 130, -signal.SIGINT), (code, text[-3000:])
    assert "stopped kafka" in text, text[-3000:]
    _wait(lambda: all(_port_free(p) for p in DEFAULT_PORTS), 60,
          "every port the demo opened to be closed again", log)
