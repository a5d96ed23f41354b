"""The early warning on the real stack: Kafka (the session broker), `settlewatch worker` as a
subprocess, Prometheus and Alertmanager (deploy/local/monitoring.sh) evaluating
alerts/settlewatch.rules.yaml.

The scenario, in event time relative to now: two acquirers settle daily batches, T+1 by a due
time three hours from now (the policy is written for this test, with every day a business day).
For ten trade dates each books its credits about five hours before the due time. Today one of
them (SLOW) has paid nothing yet, two hours past its usual time, while the other (FINE) paid
as usual. The history is produced in order, a quarter of a day of event time at a time, so
that the worker reads it in many batches and its early warning samples the paid share as
event time passes (its silent-input ticks are held off: they would move event time to the wall
clock before the history is in). A last sale and credit at now bring the clock to the present.
Then:

- the worker learns both baselines and exports the early warning for SLOW only, with the
  sales and amount due by the deadline;
- SettlewatchSettlementBehindUsual fires in Prometheus for SLOW, its description the sentence
  ops need ("acq-ew-slow (credit) is paying ... later than its usual ...; 60 sales, ... CNY due
  by HH:MM"), and reaches Alertmanager;
- nothing fires for FINE.

Wall time: the history takes a few seconds; the alert's `for: 1m` sets the rest.
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka import KafkaProducer

from streams.ops.smtpsink import free_port

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import wait_until
    # the e2e test's fixtures: its topic set and prefix, and the monitoring stack around
    # whichever `worker` fixture the module defines (this one's)
    from test_e2e_alerting import PARTITIONS, Worker, prefix, stack, topics  # noqa: F401
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import wait_until
    from tests.integration.test_e2e_alerting import (  # noqa: F401
        PARTITIONS, Worker, prefix, stack, topics)

pytestmark = pytest.mark.integration

SLOW = "acq-ew-slow"
FINE = "acq-ew-fine"
MERCHANTS = 30  # per acquirer, one batch of two sales each per trade date
HISTORY_DAYS = 10
ALERT = "SettlewatchSettlementBehindUsual"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class Scenario:
    """The timeline: today's deadline three hours from now (to the minute), UTC."""

    def __init__(self) -> None:
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        self.now_ms = _ms(now)
        due = now + timedelta(hours=3)
        self.due_hhmm = due.strftime("%H:%M")
        self.deadline_ms = _ms(due)
        self.today_trade = (due - timedelta(days=1)).date()  # the trade date due today
        first = self.today_trade - timedelta(days=HISTORY_DAYS)
        last = due.date() + timedelta(days=1)
        self.weekend = [(first + timedelta(days=i)).isoformat()
                        for i in range((last - first).days + 1)
                        if (first + timedelta(days=i)).weekday() >= 5]

    def policy(self) -> str:
        workdays = ", ".join(f'"{d}"' for d in self.weekend)
        return f"""\
timezone = "UTC"
workdays = [{workdays}]

[fees.credit]
bps = 60

[[cycles]]
acquirer = "acq-ew-*"
mode = "batch"
due = "T+1 {self.due_hhmm}"
grace = "1h"

[[cycles]]
acquirer = "*"
mode = "per_sale"
due = "+1d"
grace = "0s"

[time]
lateness = "5s"

[early_warning]
lookback = "1d"
min_history = 3
min_due_sales = 10
min_lag = "30m"
"""

    def events(self) -> list[tuple[int, str, dict]]:
        """(event time, topic kind, record) of every trade date, in event-time order."""
        rng = random.Random(17)
        out = []
        for back in range(HISTORY_DAYS, -1, -1):
            trade = self.today_trade - timedelta(days=back)
            start = _ms(datetime(trade.year, trade.month, trade.day, tzinfo=timezone.utc))
            deadline = self.deadline_ms - back * DAY_MS
            for acquirer in (SLOW, FINE):
                for m in range(MERCHANTS):
                    merchant = f"M-{acquirer[-4:]}-{m}"
                    batch = f"B-{merchant}-{trade.isoformat()}"
                    net = 0
                    for k in range(2):
                        at = start + rng.randrange(12 * HOUR_MS)
                        amount = rng.randrange(10_000, 200_000)
                        net += amount - (amount * 60 + 5_000) // 10_000
                        auth = f"A-{batch}-{k}"
                        out.append((at, "auth", {
                            "type": "authorisation", "event_id": f"ev-{auth}",
                            "auth_id": auth, "merchant_id": merchant,
                            "terminal_id": f"T-{merchant}", "acquirer": acquirer,
                            "channel": "credit", "amount_minor": amount, "currency": "CNY",
                            "event_time": rfc3339(at), "status": "approved",
                            "batch_id": batch}))
                    if back == 0 and acquirer == SLOW:
                        continue  # today SLOW has not paid (yet)
                    at = deadline - 5 * HOUR_MS + rng.randrange(-20, 20) * 60_000
                    out.append((min(at, self.now_ms - 60_000), "credit", {
                        "type": "settlement_credit", "credit_id": f"C-{batch}",
                        "merchant_id": merchant, "acquirer": acquirer, "amount_minor": net,
                        "currency": "CNY", "event_time": rfc3339(at), "batch_id": batch}))
        return sorted(out, key=lambda e: e[0])


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, topics, prefix, scenario, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ew-worker")
    policy = workdir / "settlewatch.toml"
    policy.write_text(scenario.policy())
    port = free_port()
    w = Worker(workdir, [
        "--config", str(policy), "--bootstrap", kafka_bootstrap,
        "--metrics-port", str(port), "--app-id", f"sw-{prefix.rstrip('.')}",
        "--topic-prefix", prefix, "--partitions", str(PARTITIONS),
        "--data-dir", str(workdir / "faust-data"),
        # no silent-input ticks while the history is produced: event time comes from the data
        "--tick-interval", "1s", "--tick-idle", "1h",
    ], port)
    with w.running(log_tail=3000):
        yield w


def _read_total(worker) -> float:
    return sum(v for (name, _), v in worker.samples().items()
               if name == "settlewatch_events_read_total")


def produce_in_quarter_days(producer, topic: dict, worker, events: list) -> None:
    """The events a quarter day of event time at a time, each chunk read by the worker before
    the next is sent (`topic`: "auth"/"credit" to the topic name)."""
    sent = _read_total(worker)
    i = 0
    while i < len(events):
        edge = events[i][0] // (6 * HOUR_MS) * (6 * HOUR_MS) + 6 * HOUR_MS
        j = i
        while j < len(events) and events[j][0] < edge:
            _, kind, record = events[j]
            producer.send(topic[kind], key=record["merchant_id"].encode(),
                          value=orjson.dumps(record))
            j += 1
        producer.flush()
        sent += j - i
        wait_until(lambda: _read_total(worker) >= sent, 30, "the worker to read a chunk", 0.05)
        i = j


@pytest.fixture(scope="module")
def history(kafka_bootstrap, topics, worker, stack, scenario) -> list:
    """Produce the ten trade dates a quarter day of event time at a time, each read by the
    worker before the next is sent; then a heartbeat sale and credit at now."""
    wait_until(lambda: stack.values('up{job="settlewatch"} == 1'), 30,
               "Prometheus to scrape the worker")
    events = scenario.events()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    topic = {"auth": topics.authorisations, "credit": topics.settlements}
    try:
        produce_in_quarter_days(producer, topic, worker, events)
        now = rfc3339(scenario.now_ms)
        # a heartbeat on every partition: each partition's reconciler has its own clock, and
        # the early warning follows the slowest
        for p in range(PARTITIONS):
            mid = f"M-beat-{p}"
            producer.send(topics.authorisations, key=mid.encode(), partition=p,
                          value=orjson.dumps({
                              "type": "authorisation", "event_id": f"ev-beat-{p}",
                              "auth_id": f"A-beat-{p}", "merchant_id": mid,
                              "terminal_id": "T-beat", "acquirer": "acq-beat",
                              "channel": "credit", "amount_minor": 10_000, "currency": "CNY",
                              "event_time": now, "status": "approved"}))
            producer.send(topics.settlements, key=mid.encode(), partition=p,
                          value=orjson.dumps({
                              "type": "settlement_credit", "credit_id": f"C-beat-{p}",
                              "merchant_id": mid, "acquirer": "acq-beat",
                              "amount_minor": 9_940, "currency": "CNY", "event_time": now,
                              "auth_ids": [f"A-beat-{p}"]}))
        producer.flush()
    finally:
        producer.close()
    return events


def _early_warning_samples(worker) -> str:
    return "\n".join(f"{name}{dict(labels)} {v}" for (name, labels), v in
                     sorted(worker.samples().items())
                     if name.startswith(("settlewatch_early_warning", "settlewatch_events_read",
                                         "settlewatch_findings_total")))


def test_the_worker_exports_an_early_warning_for_the_slowed_acquirer_only(stack, history,
                                                                         scenario, worker):
    try:
        warned = wait_until(
            lambda: {m["acquirer"]: v for m, v in stack.values("settlewatch_early_warning")}
            .get(SLOW) == 1 and stack.values("settlewatch_early_warning"), 60,
            "settlewatch_early_warning for the slowed acquirer")
    finally:
        print(f"--- the worker's early-warning series\n{_early_warning_samples(worker)}")
    flags = {m["acquirer"]: v for m, v in warned}
    assert flags[SLOW] == 1 and flags[FINE] == 0
    assert set(flags.values()) == {0, 1} and sum(flags.values()) == 1  # acq-beat: 0
    learned = {m["acquirer"]: v for m, v in stack.values(
        "settlewatch_early_warning_learned_deadlines")}
    assert learned[SLOW] >= 3 and learned[FINE] >= 3
    (due,) = stack.values(f'settlewatch_early_warning_due_sales{{acquirer="{SLOW}"}}')
    assert due[1] == 2 * MERCHANTS
    (deadline,) = stack.values(
        f'settlewatch_early_warning_deadline_timestamp_seconds{{acquirer="{SLOW}"}}')
    assert deadline[1] == scenario.deadline_ms / 1000
    bands = {m["band"]: v for m, v in stack.values(
        f'settlewatch_early_warning_paid_ratio{{acquirer="{SLOW}"}}')}
    assert bands["today"] == 0 and bands["slow"] > 0.5 and bands["usual"] > 0.5


def test_the_early_warning_alert_fires_with_the_sentence_for_ops(stack, history, scenario):
    firing = f'ALERTS{{alertname="{ALERT}",alertstate="firing",acquirer="{SLOW}"}}'
    wait_until(lambda: stack.values(firing), 150, f"{ALERT} firing in Prometheus", 1)
    (alert,) = [a for a in stack.prometheus_alerts()
                if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]
    assert alert["labels"]["acquirer"] == SLOW and alert["labels"]["channel"] == "credit"
    text = alert["annotations"]["description"]
    assert text.startswith(f"{SLOW} (credit) is paying "), text
    assert " later than its usual " in text
    assert f"; {2 * MERCHANTS} sales, " in text and f" CNY due by {scenario.due_hhmm}." in text
    assert alert["annotations"]["items"] == str(2 * MERCHANTS)
    assert not [a for a in stack.prometheus_alerts()
                if a["labels"]["alertname"] == ALERT and a["labels"]["acquirer"] == FINE]
    wait_until(lambda: [a for a in stack.alertmanager_alerts()
                        if a["labels"]["alertname"] == ALERT], 60,
               f"{ALERT} in Alertmanager", 1)
