"""Aging by SLA tier on the real stack: Kafka (the session broker), the live worker
(`settlewatch worker` as a subprocess), Prometheus and Alertmanager (deploy/local/monitoring.sh)
and an SMTP sink with AUTH.

The policy (written for this test) makes a sale due 15 seconds after it, and its [aging] tiers
put 1,000.00 or more at stake in the top tier ("critical") and the rest in "low". Two acquirers
stop paying: one sale of 5,000.00 at one (critical at once, by its amount), one of 50.00 at the
other (low). Then:

- the worker exports settlewatch_open_findings{acquirer,tier} and
  settlewatch_open_findings_amount_minor{acquirer,currency,tier} from its reconcilers' aging
  counters, and Prometheus scrapes them;
- SettlewatchAgingCritical fires for the first acquirer only, and Alertmanager mails it to the
  on-call address (the critical route), not to the daily digest;
- the low finding is only pending for the digest (its `for` is 15 minutes).

About two minutes of wall time (the alert's `for: 1m` and the settlement route's group_wait).
"""
from __future__ import annotations

import time
import uuid

import orjson
import pytest
from kafka import KafkaProducer

from streams.ops.smtpsink import text_of
from streams.wire import Topics

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import wait_until
    from test_e2e_alerting import POLICY as E2E_POLICY
    from test_e2e_alerting import create_topics, running_monitoring, running_worker, sale
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import wait_until
    from tests.integration.test_e2e_alerting import POLICY as E2E_POLICY
    from tests.integration.test_e2e_alerting import (create_topics, running_monitoring,
                                                     running_worker, sale)

pytestmark = pytest.mark.integration

PARTITIONS = 3
# The end-to-end test's policy (due 15 s after the sale, no grace), with two tiers.
POLICY = E2E_POLICY + """
[aging]
horizon = "14d"
[[aging.tiers]]
name = "critical"
min_amount = "1000.00"
due = "4h"
[[aging.tiers]]
name = "low"
due = "5 business days"
"""
DUE_S = 15
BIG = "acq-aging-big"
SMALL = "acq-aging-small"
BIG_NET_MINOR = 500_000 - 3_000  # 5,000.00 minus 60 bps
SMALL_NET_MINOR = 5_000 - 30
ALERT = "SettlewatchAgingCritical"


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"aging{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="module")
def topics(kafka_admin, prefix) -> Topics:
    return create_topics(kafka_admin, prefix, PARTITIONS)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, topics, prefix, tmp_path_factory):
    with running_worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("aging-worker"),
                        POLICY, PARTITIONS) as w:
        yield w


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory, smtp_sink, worker):
    with running_monitoring(tmp_path_factory.mktemp("aging-run"), smtp_sink, worker,
                            SW_SMTP_TO_ONCALL="oncall@test.example") as s:
        yield s


@pytest.fixture(scope="module")
def incident(kafka_bootstrap, topics, worker, monitoring) -> dict:
    wait_until(lambda: monitoring.values('up{job="settlewatch"} == 1'), 30,
               "Prometheus to scrape the worker")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        big = sale("aging-big-1", "M-AGING-1", BIG, 500_000)
        small = sale("aging-small-1", "M-AGING-2", SMALL, 5_000)
        for s in (big, small):
            producer.send(topics.authorisations, key=s["merchant_id"].encode(),
                          value=orjson.dumps(s))
        producer.flush()
    finally:
        producer.close()
    return {"sent_at": time.monotonic()}


def test_the_worker_exports_open_findings_by_acquirer_and_tier(monitoring, incident):
    def tiers():
        found = {(m["acquirer"], m["tier"]): v for m, v in monitoring.values(
            "sum by (acquirer, tier) (settlewatch_open_findings)")}
        return found if found.get((BIG, "critical")) and found.get((SMALL, "low")) else None

    found = wait_until(tiers, DUE_S + 40, "the missing findings in their tiers")
    assert found == {(BIG, "critical"): 1, (BIG, "low"): 0, (SMALL, "critical"): 0,
                     (SMALL, "low"): 1}
    amounts = {(m["acquirer"], m["currency"], m["tier"]): v for m, v in monitoring.values(
        "settlewatch_open_findings_amount_minor > 0")}
    assert amounts == {(BIG, "CNY", "critical"): BIG_NET_MINOR,
                       (SMALL, "CNY", "low"): SMALL_NET_MINOR}
    ranks = {m["tier"]: (m["rank"], m["due"]) for m, _ in monitoring.values(
        "settlewatch_aging_tier_info")}
    assert ranks == {"critical": ("0", "4h"), "low": ("1", "5 business days")}


def test_the_critical_tier_alert_fires_and_pages_on_call(monitoring, smtp_sink, incident):
    firing = f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}'
    fired = wait_until(lambda: monitoring.values(firing), DUE_S + 120, f"{ALERT} to fire")
    assert [(m["acquirer"], m["tier"], m["severity"]) for m, _ in fired] == \
        [(BIG, "critical", "critical")]
    # the low finding waits for the daily digest (pending: its `for` is 15 minutes)
    pending = monitoring.values('ALERTS{alertname="SettlewatchAgingDigest"}')
    assert [(m["acquirer"], m["tier"], m["alertstate"]) for m, _ in pending] == \
        [(SMALL, "low", "pending")]
    msg = smtp_sink.wait_for(lambda m: ALERT in text_of(m), timeout=90)
    print(f"aging page {time.monotonic() - incident['sent_at']:.0f}s after the sales")
    assert msg["To"] == "oncall@test.example"
    body = text_of(msg)
    assert BIG in body and SMALL not in body
    assert f"{BIG_NET_MINOR / 100:.2f} CNY" in body
