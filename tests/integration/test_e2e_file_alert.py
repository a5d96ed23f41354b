"""End to end, real components only: "the settlement file from acq-x for D has not arrived".

Kafka (the session broker), the live worker (`settlewatch worker` as a subprocess, the fixture
class of test_e2e_alerting.py), Prometheus and Alertmanager from Debian's packages
(deploy/local/monitoring.sh on free loopback ports) evaluating alerts/settlewatch.rules.yaml.

The policy (written for this test) expects the settlement files of two acquirers by a minute
just ahead of the test's start, on the settle date itself ("T+0 HH:MM", UTC). Each merchant has
a sale and its credit booked today, so each expects today's file. ON_TIME's merchant sends its
settlement_file_complete marker at once (contract v1.1, on pos.settlements); LATE's does not.
Then, on the real stack:

- before the expected time, no file is overdue;
- after it, the worker's settlewatch_settlement_files_overdue{acquirer=LATE, settle_date=today}
  is 1 (scraped by Prometheus), and nothing for ON_TIME;
- SettlewatchSettlementFileNotArrived fires for LATE and today (for: 1m) and reaches
  Alertmanager, with the summary "The settlement file from LATE for D has not arrived";
- LATE's marker comes, but counts two credits where the feed carried one: the series goes away,
  the alert resolves, and the worker publishes a file_incomplete finding with both counts.

Wall time: up to two minutes to the expected time plus the alert's minute, about three.
"""
from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timezone

import orjson
import pytest
from kafka import KafkaProducer

from streams.wire import Topics

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import wait_until
    from test_e2e_alerting import (create_topics, read_topic, rfc3339, running_monitoring,
                                   running_worker)
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import wait_until
    from tests.integration.test_e2e_alerting import (create_topics, read_topic, rfc3339,
                                                     running_monitoring, running_worker)

pytestmark = pytest.mark.integration

LATE = "acq-file-late"  # its settlement file does not come by the expected time
ON_TIME = "acq-file-on-time"
ALERT = "SettlewatchSettlementFileNotArrived"
CURRENCY = "CNY"


def expected_minute() -> datetime:
    """A whole minute 60-120 s ahead (UTC): the files' expected time."""
    now = time.time()
    return datetime.fromtimestamp(math.ceil((now + 60) / 60) * 60, timezone.utc)


def policy(expected: datetime) -> str:
    hhmm = expected.strftime("%H:%M")
    # If the minute ahead is tomorrow (a run just before midnight UTC), T+0 of today has passed
    # already: the files are then overdue at once, which the test accepts.
    return f"""\
timezone = "UTC"

[fees.credit]
bps = 60

[[cycles]]
acquirer = "*"
mode = "per_sale"
due = "+1h"
grace = "0s"

[[settlement_files]]
acquirer = "{LATE}"
expected = "T+0 {hhmm}"

[[settlement_files]]
acquirer = "{ON_TIME}"
expected = "T+0 {hhmm}"

[time]
lateness = "5s"
"""


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"file{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="module")
def topics(kafka_admin, prefix) -> Topics:
    return create_topics(kafka_admin, prefix)


@pytest.fixture(scope="module")
def expected() -> datetime:
    return expected_minute()


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, topics, prefix, expected, tmp_path_factory):
    with running_worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("file-worker"),
                        policy(expected)) as w:
        yield w


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp_sink, worker):
    with running_monitoring(tmp_path_factory.mktemp("file-run"), smtp_sink, worker) as s:
        yield s


def _send(producer: KafkaProducer, topic: str, record: dict) -> None:
    producer.send(topic, key=record["merchant_id"].encode(), value=orjson.dumps(record))


def _sale_and_credit(n: int, merchant: str, acquirer: str) -> tuple[dict, dict]:
    t = rfc3339(time.time_ns() // 1_000_000)
    sale = {"type": "authorisation", "event_id": f"ev-f{n}", "auth_id": f"f{n}",
            "merchant_id": merchant, "terminal_id": f"T-{merchant}", "acquirer": acquirer,
            "channel": "credit", "amount_minor": 100_000, "currency": CURRENCY,
            "event_time": t, "status": "approved"}
    credit = {"type": "settlement_credit", "credit_id": f"cr-f{n}", "merchant_id": merchant,
              "acquirer": acquirer, "amount_minor": 99_400, "currency": CURRENCY,
              "event_time": t, "auth_ids": [f"f{n}"]}
    return sale, credit


def _marker(marker_id: str, merchant: str, acquirer: str, count: int, total: int) -> dict:
    now = datetime.now(timezone.utc)
    return {"type": "settlement_file_complete", "marker_id": marker_id,
            "merchant_id": merchant, "acquirer": acquirer,
            "settle_date": now.date().isoformat(), "credit_count": count,
            "total_minor": total, "currency": CURRENCY,
            "event_time": rfc3339(time.time_ns() // 1_000_000)}


@pytest.fixture(scope="module")
def day(kafka_bootstrap, topics, worker, stack) -> dict:
    """Today's traffic: each merchant a sale and its credit; ON_TIME's file comes at once."""
    wait_until(lambda: stack.values('up{job="settlewatch"} == 1'), 30,
               "Prometheus to scrape the worker")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for n, (merchant, acquirer) in enumerate((("M-LATE", LATE), ("M-ONTIME", ON_TIME))):
            sale, credit = _sale_and_credit(n, merchant, acquirer)
            _send(producer, topics.authorisations, sale)
            _send(producer, topics.settlements, credit)
        _send(producer, topics.settlements, _marker("FC-ONTIME", "M-ONTIME", ON_TIME, 1, 99_400))
        producer.flush()
    finally:
        producer.close()
    return {"settle_date": datetime.now(timezone.utc).date().isoformat()}


def overdue(stack) -> dict[tuple[str, str], float]:
    return {(m["acquirer"], m["settle_date"]): v
            for m, v in stack.values("settlewatch_settlement_files_overdue")}


def test_the_file_not_arrived_alert_fires_on_the_real_stack_and_resolves_when_the_file_comes(
        kafka_bootstrap, topics, worker, stack, day, expected):
    # Before the expected time (when there is room before it), nothing is overdue.
    if time.time() < expected.timestamp() - 10:
        assert overdue(stack) == {}
        assert not stack.values(f'ALERTS{{alertname="{ALERT}"}}')
    # After it, LATE's file for today is overdue, and only LATE's.
    wait_until(lambda: overdue(stack).get((LATE, day["settle_date"])) == 1,
               max(expected.timestamp() - time.time(), 0) + 60,
               f"settlewatch_settlement_files_overdue for {LATE}")
    assert overdue(stack) == {(LATE, day["settle_date"]): 1}
    firing = f'ALERTS{{alertname="{ALERT}",alertstate="firing",acquirer="{LATE}"}}'
    series = wait_until(lambda: stack.values(firing), 120, f"{ALERT} to fire for {LATE}")
    labels = series[0][0]
    assert (labels["settle_date"], labels["category"], labels["severity"]) == (
        day["settle_date"], "pipeline", "warning")
    in_am = wait_until(lambda: [a for a in stack.alertmanager_alerts()
                                if a["labels"].get("alertname") == ALERT], 60,
                       f"{ALERT} in Alertmanager")
    assert [a["annotations"]["summary"] for a in in_am] == [
        f"The settlement file from {LATE} for {day['settle_date']} has not arrived"]
    assert {a["labels"]["acquirer"] for a in in_am} == {LATE}

    # LATE's file comes, short: it lists two credits, the feed carried one.
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        _send(producer, topics.settlements, _marker("FC-LATE", "M-LATE", LATE, 2, 198_800))
        producer.flush()
    finally:
        producer.close()
    wait_until(lambda: not overdue(stack), 60, "the overdue series to go away")
    wait_until(lambda: not stack.values(firing), 60, f"{ALERT} to resolve")

    def file_incomplete():
        found = [orjson.loads(m.value) for m in read_topic(kafka_bootstrap, topics.anomalies)]
        return [f for f in found if f["kind"] == "file_incomplete"]
    f, = wait_until(file_incomplete, 30, "a file_incomplete finding")
    assert (f["subject"], f["acquirer"], f["status"], f["probable_cause"]) == (
        "FC-LATE", LATE, "open", "file_short")
    assert (f["expected_count"], f["received_count"]) == (2, 1)
    assert (f["expected_minor"], f["received_minor"]) == (198_800, 99_400)
