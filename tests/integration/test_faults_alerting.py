"""Faults on the mail path (issue 15, `make test-faults`): Alertmanager down while an alert
fires, then back while the SMTP relay refuses mail with a temporary failure, then accepts it.
The alert must still be mailed (Prometheus re-sends firing alerts to an Alertmanager that comes
back; Alertmanager retries a refused notification), and the worker, which only serves metrics to
this path, must not notice.

Real components: the session's Kafka, a `settlewatch worker` subprocess, Debian's Prometheus
and Alertmanager (deploy/local/monitoring.sh) and the SMTP sink with its `refuse` switch. The
alert is the shipped SettlewatchWorkerDown, for a second scrape target where nothing listens.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from streams.ops.smtpsink import free_port

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import MonitoringStack, is_gone, wait_until
    from test_worker import produce, scenario
    from test_worker import topics, worker  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import MonitoringStack, is_gone, wait_until
    from tests.integration.test_worker import produce, scenario
    from tests.integration.test_worker import topics, worker  # noqa: F401  (fixtures)

pytestmark = pytest.mark.faults


@pytest.mark.fault("Alertmanager stopped while an alert fires, started again while the SMTP "
                   "relay refuses every recipient (451), then the relay accepts",
                   "the alert is still mailed, once the relay accepts; the worker unaffected")
def test_an_alert_survives_alertmanager_down_and_a_refusing_relay(
        kafka_bootstrap, topics, worker, smtp_sink, tmp_path, fault_note):
    w = worker("--tick-interval", "1s")
    w.wait_ready()
    dead = f"127.0.0.1:{free_port()}"  # a target where no worker listens: SettlewatchWorkerDown
    stack = MonitoringStack(tmp_path / "run", [f"127.0.0.1:{w.port}", dead], smtp_sink,
                            smtp_user="alertmanager",
                            smtp_password_file=smtp_sink.password_file,
                            env={"SW_SCRAPE_INTERVAL": "2s"})
    stack.up()
    try:
        am = stack.pid("alertmanager")
        os.kill(am, signal.SIGTERM)
        wait_until(lambda: is_gone(am), 30, "Alertmanager to stop", 0.2)
        am_down_at = time.monotonic()
        # The worker goes on with its work meanwhile.
        events = scenario(1, merchants=10, sales_per_second=0.5, seed=71)
        sent = produce(kafka_bootstrap, topics, events).sent
        wait_until(lambda: any(a["labels"].get("alertname") == "SettlewatchWorkerDown"
                               and a["labels"].get("instance") == dead
                               and a["state"] == "firing" for a in stack.prometheus_alerts()),
                   240, "Prometheus to fire SettlewatchWorkerDown for the dead target", 2)
        time.sleep(20)  # firing, with nowhere to send it
        smtp_sink.refuse = True
        refused_before = smtp_sink.refused
        stack.up()  # starts Alertmanager again (Prometheus: config reloaded)
        am_down_s = time.monotonic() - am_down_at
        # Prometheus re-sends a firing alert every minute (resend delay): it reaches the
        # Alertmanager that came back without anyone posting it again.
        wait_until(lambda: any(a["labels"].get("instance") == dead
                               for a in stack.alertmanager_alerts()), 150,
                   "Prometheus to re-send the alert to the new Alertmanager", 2)
        wait_until(lambda: smtp_sink.refused >= refused_before + 2, 240,
                   "Alertmanager to try twice and be refused", 1)
        refused = smtp_sink.refused - refused_before
        assert not [m for m in smtp_sink.messages() if dead in m.get("Subject", "")]
        smtp_sink.refuse = False
        accepted_at = time.monotonic()
        msg = smtp_sink.wait_for(lambda m: dead in m.get("Subject", "")
                                 and "FIRING" in m.get("Subject", ""), timeout=300)
        mailed_after_s = time.monotonic() - accepted_at
    finally:
        smtp_sink.refuse = False
        stack.down()
    # The worker did not notice: same process, consuming, everything read.
    assert w.proc.poll() is None and w.starts == 1
    assert w.value("settlewatch_worker_up") == 1
    assert w.total("settlewatch_events_read_total") == sent
    fault_note(f"Alertmanager down {am_down_s:.0f} s; relay refused {refused} attempts; mail "
               f"'{msg['Subject']}' {mailed_after_s:.0f} s after the relay accepted; worker "
               f"read all {sent} records, up throughout")
