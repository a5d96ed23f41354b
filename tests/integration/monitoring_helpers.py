"""Helpers shared by the integration tests that run the real monitoring stack
(test_monitoring_stack.py, test_e2e_alerting.py): Prometheus and Alertmanager started through
deploy/local/monitoring.sh on free ports, their HTTP APIs, polling, and the dashboards'
queries made runnable on a bare Prometheus.

    stack = MonitoringStack(run_dir, [f"127.0.0.1:{worker_metrics_port}"], sink,
                            smtp_user="alertmanager", smtp_password_file=password_file).up()
    ...
    stack.down()

Missing prometheus/alertmanager binaries are installed by monitoring_up; a failure fails the
test (integration tests never skip).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from streams.ops.smtpsink import SmtpSink, free_port

ROOT = Path(__file__).resolve().parents[2]
MONITORING_SH = ROOT / "deploy" / "local" / "monitoring.sh"
GRAFANA = ROOT / "grafana"
# Grafana's variables, replaced the way Grafana would with "All" selected.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s",
                "$acquirer": ".*", "$channel": ".*", "$topic": ".*", "$instance": ".*"}


class MonitoringStack:
    """Prometheus and Alertmanager started through deploy/local/monitoring.sh.

    `env` adds or overrides monitoring.sh's SW_* settings (e.g. SW_SCRAPE_INTERVAL).
    """

    def __init__(self, run_dir: Path, targets: list[str], sink: SmtpSink, *,
                 smtp_user: str | None = None, smtp_password_file: Path | None = None,
                 prometheus_port: int | None = None, alertmanager_port: int | None = None,
                 env: dict[str, str] | None = None):
        self.run_dir = Path(run_dir)
        self.prometheus_port = prometheus_port or free_port()
        self.alertmanager_port = alertmanager_port or free_port()
        self.env = {
            **os.environ,
            "SW_RUN_DIR": str(self.run_dir),
            "SW_PROMETHEUS_PORT": str(self.prometheus_port),
            "SW_ALERTMANAGER_PORT": str(self.alertmanager_port),
            "SW_METRICS_TARGETS": ",".join(targets),
            "SW_SMTP_HOST": sink.host, "SW_SMTP_PORT": str(sink.port),
            "SW_SMTP_FROM": "settlewatch@test.example", "SW_SMTP_TO": "ops@test.example",
            "SW_SMTP_USERNAME": smtp_user or "",
            "SW_SMTP_PASSWORD_FILE": str(smtp_password_file or ""),
            "SW_SMTP_REQUIRE_TLS": "false",
        }
        self.env.pop("SW_ACQUIRER_CONTACTS", None)
        self.env.update(env or {})

    def _sh(self, function: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f". {MONITORING_SH} && {function}"], env=self.env,
                              capture_output=True, text=True, timeout=600)

    def up(self) -> MonitoringStack:
        t0 = time.monotonic()
        out = self._sh("monitoring_up")
        assert out.returncode == 0, f"monitoring_up failed:\n{out.stdout}\n{out.stderr}"
        self.up_seconds = time.monotonic() - t0
        return self

    def down(self) -> None:
        out = self._sh("monitoring_down")
        assert out.returncode == 0, out.stderr

    def status(self) -> subprocess.CompletedProcess:
        return self._sh("monitoring_status")

    def pid(self, name: str) -> int:
        return int((self.run_dir / "monitoring" / f"{name}.pid").read_text())

    def pids(self) -> list[int]:
        """The pids of whichever of the two has a pid file (for checks after `down`)."""
        return [self.pid(n) for n in ("prometheus", "alertmanager")
                if (self.run_dir / "monitoring" / f"{n}.pid").exists()]

    def log(self, name: str) -> str:
        path = self.run_dir / "monitoring" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- HTTP APIs --

    def _get(self, port: int, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}") | {"http_status": e.code}

    def query(self, expr: str) -> dict:
        """Prometheus /api/v1/query; the whole answer (status, data or errorType, error)."""
        return self._get(self.prometheus_port, "/api/v1/query", query=expr)

    def values(self, expr: str) -> list[tuple[dict, float]]:
        """(labels, value) of each series of an instant query; fails on a query error."""
        answer = self.query(expr)
        assert answer.get("status") == "success", (expr, answer)
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def rules(self) -> list[dict]:
        groups = self._get(self.prometheus_port, "/api/v1/rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def prometheus_alerts(self) -> list[dict]:
        return self._get(self.prometheus_port, "/api/v1/alerts")["data"]["alerts"]

    def targets(self) -> list[dict]:
        return self._get(self.prometheus_port, "/api/v1/targets")["data"]["activeTargets"]

    def alertmanager_alerts(self) -> list[dict]:
        return self._get(self.alertmanager_port, "/api/v2/alerts")

    def post_alerts(self, alerts: list[dict]) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.alertmanager_port}/api/v2/alerts",
            data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"},
            method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200


def scrape_metrics(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample a worker serves on /metrics, keyed by (name, sorted labels); {} if none."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def wait_until(check, timeout: float, what: str, poll: float = 1.0):
    """Poll `check()` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def is_gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title or "variable"/"annotation", runnable PromQL) for every
    expression of every committed dashboard: Grafana's variables replaced as with "All"
    selected, label_values(expr, label) reduced to expr."""
    sys.path.insert(0, str(GRAFANA))
    try:
        import defaults
    finally:
        sys.path.remove(str(GRAFANA))
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        where = {}
        for p in d["panels"]:
            for t in p.get("targets", []):
                where.setdefault(t["expr"], p.get("title", ""))
        for expr in defaults.expressions(d):
            q = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr)
            for var, val in GRAFANA_VARS.items():
                q = q.replace(var, val)
            out.append((d["title"], where.get(expr, "variable/annotation"), q))
    return out
