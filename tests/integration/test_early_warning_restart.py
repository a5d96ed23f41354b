"""The early warning's learned baseline survives a worker restart, on the real broker.

`settlewatch worker` learns the two acquirers' baselines of tests/integration/
test_early_warning_alerting.py (ten trade dates, read as they come), writes the baseline to its
changelog when it learns its first day and, `--baseline-interval 1h` holding back the rest,
once more when it is stopped (SIGTERM): the days after the first come back only by that write.
A second worker, same app id, a fresh data directory (so its tables come from Kafka alone),
then has, as soon as its partitions are built and before any new input:
- the same learned settle days per acquirer (`settlewatch_early_warning_learned_deadlines`),
  counted as restored (`settlewatch_early_warning_baseline_restores_total{result="restored"}`);
and once sales due by today's deadline come in (its counters of the open deadline start with
it), the usual and slow bands of that deadline, and the early warning for the acquirer that has
not paid them, without relearning a single day. Without the baseline in the changelog the
second worker would show 0 learned days and no band for five settle days.
"""
from __future__ import annotations

import math
import signal
import uuid

import orjson
import pytest
from kafka import KafkaProducer

from streams.ops.smtpsink import free_port

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import wait_until
    from test_e2e_alerting import PARTITIONS, Worker, create_topics
    from test_early_warning_alerting import (FINE, SLOW, Scenario,
                                             produce_in_quarter_days, rfc3339)
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import wait_until
    from tests.integration.test_e2e_alerting import PARTITIONS, Worker, create_topics
    from tests.integration.test_early_warning_alerting import (
        FINE, SLOW, Scenario, produce_in_quarter_days, rfc3339)

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
FRESH_SALES = 12  # today's new batch of the restarted worker: more than min_due_sales (10)


def _start(workdir, bootstrap: str, prefix: str, name: str, *extra: str) -> Worker:
    port = free_port()
    (workdir / name).mkdir()
    return Worker(workdir / name, [
        "--config", str(workdir / "settlewatch.toml"), "--bootstrap", bootstrap,
        "--metrics-port", str(port), "--app-id", f"sw-{prefix.rstrip('.')}",
        "--topic-prefix", prefix, "--partitions", str(PARTITIONS),
        "--data-dir", str(workdir / name / "faust-data"),
        "--tick-interval", "1s",
        # by default event time comes from the data alone
        *(extra or ("--tick-idle", "1h")),
    ], port)


def _by_acquirer(worker: Worker, name: str, **labels: str) -> dict[str, float]:
    return {dict(lab)["acquirer"]: v for (n, lab), v in worker.samples().items()
            if n == name and all(dict(lab).get(k) == x for k, x in labels.items())}


def _value(worker: Worker, name: str, **labels: str) -> float | None:
    for (n, lab), v in worker.samples().items():
        if n == name and dict(lab) == labels:
            return v
    return None


def _produce_history(producer, topics, worker: Worker, events, now_ms: int) -> None:
    """The trade dates a quarter day of event time at a time, each read before the next;
    then a heartbeat sale and credit on every partition at now (each partition's clock follows
    its slower input, and the early warning the slowest partition)."""
    topic = {"auth": topics.authorisations, "credit": topics.settlements}
    produce_in_quarter_days(producer, topic, worker, events)
    now = rfc3339(now_ms)
    for p in range(PARTITIONS):
        mid = f"M-beat-{p}"
        producer.send(topics.authorisations, key=mid.encode(), partition=p, value=orjson.dumps({
            "type": "authorisation", "event_id": f"ev-beat-{p}", "auth_id": f"A-beat-{p}",
            "merchant_id": mid, "terminal_id": "T-beat", "acquirer": "acq-beat",
            "channel": "credit", "amount_minor": 10_000, "currency": "CNY",
            "event_time": now, "status": "approved"}))
        producer.send(topics.settlements, key=mid.encode(), partition=p, value=orjson.dumps({
            "type": "settlement_credit", "credit_id": f"C-beat-{p}", "merchant_id": mid,
            "acquirer": "acq-beat", "amount_minor": 9_940, "currency": "CNY",
            "event_time": now, "auth_ids": [f"A-beat-{p}"]}))
    producer.flush()


def _fresh_sales(producer, topics, scenario: Scenario) -> None:
    """A new batch of each acquirer for today's deadline, sold yesterday (its trade date),
    read by the restarted worker: SLOW's stays unpaid, FINE's is paid at once."""
    for acquirer in (SLOW, FINE):
        merchant = f"M-new-{acquirer[-4:]}"
        batch = f"B-{merchant}"
        at = scenario.deadline_ms - 20 * HOUR_MS  # yesterday, in the trade date due today
        net = 0
        for k in range(FRESH_SALES):
            auth = f"A-{batch}-{k}"
            net += 100_000 - 600
            producer.send(topics.authorisations, key=merchant.encode(), value=orjson.dumps({
                "type": "authorisation", "event_id": f"ev-{auth}", "auth_id": auth,
                "merchant_id": merchant, "terminal_id": f"T-{merchant}", "acquirer": acquirer,
                "channel": "credit", "amount_minor": 100_000, "currency": "CNY",
                "event_time": rfc3339(at + k * 60_000), "status": "approved",
                "batch_id": batch}))
        if acquirer == FINE:
            producer.send(topics.settlements, key=merchant.encode(), value=orjson.dumps({
                "type": "settlement_credit", "credit_id": f"C-{batch}", "merchant_id": merchant,
                "acquirer": acquirer, "amount_minor": net, "currency": "CNY",
                "event_time": rfc3339(scenario.now_ms - 60_000), "batch_id": batch}))
    producer.flush()


def test_a_restarted_worker_keeps_the_learned_baseline(kafka_bootstrap, kafka_admin,
                                                       tmp_path):
    prefix = f"ewr{uuid.uuid4().hex[:8]}."
    topics = create_topics(kafka_admin, prefix)
    scenario = Scenario()
    # the early-warning test's policy, sampled every minute: a warning is judged at each step
    policy = scenario.policy().replace('lookback = "1d"', 'lookback = "1d"\nstep = "1m"')
    assert 'step = "1m"' in policy
    (tmp_path / "settlewatch.toml").write_text(policy)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    # written at its first learned day, then not again within the hour: the rest of what it
    # learns reaches the changelog only by the write at its clean stop
    first = _start(tmp_path, kafka_bootstrap, prefix, "first", "--tick-idle", "1h",
                   "--baseline-interval", "1h")
    try:
        first.wait_ready()
        _produce_history(producer, topics, first, scenario.events(), scenario.now_ms)
        learned = wait_until(
            lambda: (v := _by_acquirer(first, "settlewatch_early_warning_learned_deadlines"))
            and v.get(SLOW, 0) >= 3 and v.get(FINE, 0) >= 3 and v, 60,
            "the first worker to learn both baselines")
        # written while it learned (one copy per partition), not only at the stop
        assert _value(first, "settlewatch_early_warning_baseline_writes_total") == PARTITIONS
        assert _value(first, "settlewatch_early_warning_baseline_bytes") > 0
    finally:
        first.stop()  # SIGTERM: the clean stop writes the baseline once more
        print(f"--- first worker log (last lines)\n{first.log()[-3000:]}")
    assert first.proc.returncode == 0
    assert f"stopping: early-warning baseline written to {PARTITIONS} partitions" in first.log()

    # its clock follows the wall clock once its inputs are quiet, so the next step comes
    second = _start(tmp_path, kafka_bootstrap, prefix, "second",
                    "--tick-idle", "2s", "--tick-allowance", "1s", "--baseline-interval", "1s")
    with second.running(log_tail=3000):
        # before any new input: the learned days are back
        again = wait_until(
            lambda: (v := _by_acquirer(second, "settlewatch_early_warning_learned_deadlines"))
            and v.get(SLOW, 0) >= 3 and v, 30, "the restarted worker's learned deadlines")
        assert again[SLOW] == learned[SLOW] and again[FINE] == learned[FINE]  # all of them
        assert _value(second, "settlewatch_early_warning_baseline_restores_total",
                      result="restored") == PARTITIONS
        assert _value(second, "settlewatch_early_warning_baseline_restores_total",
                      result="corrupt") == 0
        log = second.log()
        assert "early-warning baseline restored from the changelog" in log
        assert "early-warning baseline in the changelog ignored" not in log

        _fresh_sales(producer, topics, scenario)
        producer.close()

        def bands():
            b = {dict(lab)["band"]: v for (n, lab), v in second.samples().items()
                 if n == "settlewatch_early_warning_paid_ratio" and dict(lab)["acquirer"] == SLOW}
            return b if b and not math.isnan(b.get("usual", math.nan)) else None
        slow_band = wait_until(bands, 30, "the band of today's deadline after the restart")
        # the usual day had paid its batches five hours before the deadline; three remain
        assert slow_band["usual"] > 0.5 and slow_band["slow"] > 0.5 and slow_band["today"] == 0
        flags = wait_until(
            lambda: (f := _by_acquirer(second, "settlewatch_early_warning")).get(SLOW) == 1
            and f, 90, "the early warning for the unpaid acquirer, right after the restart")
        assert flags[FINE] == 0
        assert _value(second, "settlewatch_early_warning_due_sales", acquirer=SLOW,
                      channel="credit") == FRESH_SALES
        # nothing was relearned: the same days as before the restart
        after = _by_acquirer(second, "settlewatch_early_warning_learned_deadlines")
        assert (after[SLOW], after[FINE]) == (again[SLOW], again[FINE])
        second.proc.send_signal(signal.SIGUSR1)  # (its tasks in the log, should this fail)
