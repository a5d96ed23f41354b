"""The real monitoring stack: Prometheus + Alertmanager (deploy/local/monitoring.sh) on free
ports, a real SMTP sink with AUTH, and a real prometheus_client exposition of streams.live.metrics fed
the way a worker feeds it.

It checks that Prometheus scrapes the worker, that every alert, recording and dashboard
expression runs on the real Prometheus, that a missing-credit alert fires and its email (with
acquirer, amount and count) reaches the sink through an authenticated SMTP login, and that
Alertmanager's inhibition holds settlement alerts back while the pipeline is down.

Reuse (the end-to-end test with Kafka and the real worker): `SmtpSink` from streams.ops.smtpsink and
`MonitoringStack(run_dir, targets=[f"127.0.0.1:{worker_metrics_port}"], sink=sink).up()`.
Missing prometheus/alertmanager binaries are installed by monitoring_up; a failure fails the test.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streams.live.metrics import Metrics
from streams.ops.smtpsink import free_port, text_of

ROOT = Path(__file__).resolve().parents[2]
# tests/integration has no __init__.py, so pytest puts only this directory on sys.path; the
# worker-like feeding of the metrics is shared with tests/test_monitoring.py.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.test_monitoring import (aged_findings, exercise,  # noqa: E402
                                   exercise_early_warning, open_items_now)

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import GRAFANA, GRAFANA_VARS, MonitoringStack, wait_until
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import (GRAFANA, GRAFANA_VARS, MonitoringStack,
                                                      wait_until)

pytestmark = pytest.mark.integration


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_metrics():
    """A real /metrics endpoint of streams.live.metrics, fed every second like a live worker."""
    m = Metrics.create(version="test", worker="integration")
    # ACQ-A debit: an early warning (a learned baseline, nothing paid two hours before a deadline)
    exercise_early_warning(m, int(time.time() * 1000) - 11 * 60_000)
    # ACQ-A: 30 missing credits of 1,000.00 CNY, above the 1,000,000-minor-unit threshold;
    # and a reconciler with open findings in its aging book (the SLA aging panels), on ACQ-C so
    # that its critical tier does not join ACQ-A's missing-credit mail.
    aged = aged_findings(int(time.time() * 1000), acquirer="ACQ-C")
    m.watch(lambda: [open_items_now(int(time.time() * 1000), {"ACQ-A": 30}), aged])
    port = free_port()
    server, thread = m.serve(port)
    stop = threading.Event()

    def feed():
        step = 0
        while not stop.wait(1.0):
            step += 1
            exercise(m, step)

    exercise(m)
    feeder = threading.Thread(target=feed, name="metrics-feeder", daemon=True)
    feeder.start()
    yield f"127.0.0.1:{port}"
    stop.set()
    feeder.join(5)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp_sink, worker_metrics):
    s = MonitoringStack(tmp_path_factory.mktemp("run"), [worker_metrics], smtp_sink,
                        smtp_user="alertmanager", smtp_password_file=smtp_sink.password_file)
    s.up()
    try:
        yield s
    finally:
        pids = [s.pid(n) for n in ("prometheus", "alertmanager")
                if (s.run_dir / "monitoring" / f"{n}.pid").exists()]
        s.down()
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# -- the tests (in order: the alert needs a minute and a half of scraping) ------------------------


def test_both_run_on_loopback_only_and_report_ready(stack):
    out = stack.status()
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^prometheus\s+ready", out.stdout, re.M)
    assert re.search(r"^alertmanager\s+ready", out.stdout, re.M)
    listening = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True).stdout
    for name in ("prometheus", "alertmanager"):
        ours = [line for line in listening.splitlines() if f"pid={stack.pid(name)}," in line]
        assert ours, f"{name} listens nowhere"
        # Alertmanager's cluster listener (0.0.0.0:9094 by default) stays off.
        assert all(line.split()[3].startswith("127.0.0.1:") for line in ours), ours


def test_monitoring_up_again_reloads_instead_of_starting_twice(stack):
    pids = (stack.pid("prometheus"), stack.pid("alertmanager"))
    stack.up()
    assert (stack.pid("prometheus"), stack.pid("alertmanager")) == pids


def test_prometheus_scrapes_the_worker_exposition(stack, worker_metrics):
    target = wait_until(
        lambda: [t for t in stack.targets()
                 if t["labels"]["instance"] == worker_metrics and t["health"] == "up"],
        30, "the worker target to be up")
    assert target[0]["labels"]["job"] == "settlewatch"
    result = wait_until(
        lambda: stack.query('sum(settlewatch_events_read_total{topic="pos.settlements"})')
        ["data"]["result"], 30, "a scraped sample")
    assert float(result[0]["value"][1]) > 0


def test_every_rule_and_annotation_query_runs_on_prometheus(stack):
    rules = stack.rules()
    # every alert and recording rule of the rule files is loaded (counted in the files, so a
    # new rule needs no edit here)
    in_files = [m for f in (ROOT / "alerts").glob("*.rules.yaml")
                for m in re.findall(r"^\s*- (?:alert|record):", f.read_text(), re.M)]
    assert len(rules) == len(in_files) > 20
    for rule in rules:
        answer = stack.query(rule["query"])
        assert answer["status"] == "success", (rule["name"], answer)
    # Every rule has been evaluated without error (annotation templates included).
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in stack.rules()),
               30, "every rule to be evaluated")
    bad = [(r["name"], r.get("lastError")) for r in stack.rules() if r["health"] != "ok"]
    assert bad == []


def test_a_missing_credit_alert_fires_and_its_email_reaches_the_sink(stack, smtp_sink):
    t0 = time.monotonic()
    # ACQ-A's mail (ACQ-C's aged missing sale raises one of its own)
    msg = smtp_sink.wait_for(
        lambda m: "SettlewatchMissingCreditsAmountHigh" in text_of(m)
        and " ACQ-A: " in m["Subject"], timeout=240)
    elapsed = time.monotonic() - t0
    body = text_of(msg)
    assert msg["Subject"].startswith("[FIRING:1] settlewatch critical ACQ-A: Missing credits")
    assert msg["To"] == "ops@test.example" and msg["From"] == "settlewatch@test.example"
    assert "Acquirer:         ACQ-A" in body
    assert "Amount at stake:  30000.00 CNY (3000000 minor units)" in body
    assert "Count:            30" in body
    assert "What to check:    Pick the largest missing findings of ACQ-A" in body
    assert "Runbook:          alerts/runbook.md#settlewatchmissingcreditsamounthigh" in body
    html = text_of(msg, "html")
    assert "<b>30000.00 CNY (3000000 minor units)</b>" in html
    # Alertmanager logged in with the password it read from its password file.
    assert smtp_sink.authenticator.logins
    # The count warning for the same acquirer is held back by the critical amount alert.
    counts = [a for a in stack.alertmanager_alerts()
              if a["labels"]["alertname"] == "SettlewatchMissingCreditsCountHigh"]
    assert counts and counts[0]["status"]["state"] == "suppressed"
    assert counts[0]["status"]["inhibitedBy"]
    print(f"missing-credit mail after {elapsed:.0f}s of this test")


def test_every_dashboard_query_runs_and_finds_data(stack):
    sys.path.insert(0, str(GRAFANA))
    try:
        import defaults
    finally:
        sys.path.remove(str(GRAFANA))
    dashboards = [json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")]
    exprs = [e for d in dashboards for e in defaults.expressions(d)]
    assert len(exprs) > 40
    empty = []
    for expr in exprs:
        q = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr)
        for var, val in GRAFANA_VARS.items():
            q = q.replace(var, val)
        answer = stack.query(q)
        assert answer["status"] == "success", (expr, answer)
        if not answer["data"]["result"]:
            empty.append(expr)
    assert empty == [], "panels that find no data although every metric is fed"


def test_a_dead_pipeline_holds_back_the_settlement_alerts(stack):
    def missing_state():
        return [a["status"] for a in stack.alertmanager_alerts()
                if a["labels"]["alertname"] == "SettlewatchMissingCreditsAmountHigh"]

    assert missing_state()[0]["state"] == "active"
    ends = (datetime.now(timezone.utc) + timedelta(minutes=2)).isoformat()
    worker_down = {"alertname": "SettlewatchWorkerDown", "category": "pipeline",
                   "severity": "critical", "job": "settlewatch", "instance": "w9:9308"}
    # Another service's dead worker must not mute settlewatch (inhibit rules use equal).
    stack.post_alerts([{"labels": {**worker_down, "service": "other"}, "endsAt": ends}])
    time.sleep(2)
    assert missing_state()[0]["state"] == "active"
    stack.post_alerts([{"labels": {**worker_down, "service": "settlewatch"}, "endsAt": ends}])
    state = wait_until(lambda: [s for s in missing_state() if s["state"] == "suppressed"],
                       30, "the missing-credit alert to be inhibited")
    assert state[0]["inhibitedBy"]
