"""Faults survived (issue 15), against the real broker: each test inflicts one fault on a running
worker and then compares what is on settlewatch.anomalies with the pure reconciler's findings
for the same input records: none lost, none published twice, no "missing" raised early (an
early one would differ from the reconciler's in event_time or be extra).

The worker is killed at chosen points with the test-only switch SETTLEWATCH_FAULT
(streams/live/faults.py); the broker is stopped and started with deploy/local/stack under the
session's SW_* environment. Each test adds a row to the faults table printed at the end of the
run (conftest.py). Tests marked `faults` run with `make test-faults`.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_restart import FAULTS, committed_everything
    from test_worker import (HOUR, MIN, Worker, assert_same_findings, expected_findings,
                             produce, published, scenario, send_ticks, wait_for)
    from test_worker import topics  # noqa: F401  (fixture)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_restart import FAULTS, committed_everything
    from tests.integration.test_worker import (HOUR, MIN, Worker, assert_same_findings,
                                               expected_findings, produce, published,
                                               scenario, send_ticks, wait_for)
    from tests.integration.test_worker import topics  # noqa: F401  (fixture)

OPTIONS = ("--session-timeout", "6s")
NO_TICKS = ("--tick-interval", "0", *OPTIONS)


@pytest.fixture
def workers(kafka_bootstrap, topic_prefix, tmp_path):
    """workers(*options, name=, fault=) -> a started Worker on this test's topics, in one
    consumer group; `fault` sets SETTLEWATCH_FAULT for that one. All stopped at the end."""
    started: list[Worker] = []

    def make(*options: str, name: str, fault: str | None = None) -> Worker:
        w = Worker(kafka_bootstrap, topic_prefix, tmp_path, app_id=f"sw-{topic_prefix}",
                   options=options, name=name)
        if fault:
            w.env = {"SETTLEWATCH_FAULT": fault}
        started.append(w)
        return w.start()
    yield make
    for w in started:
        w.stop()


def wait_killed(w: Worker, timeout: float = 120) -> None:
    """Until `w` has SIGKILLed itself at its fault point."""
    wait_for(f"{w.log_path.stem} to die at its fault point",
             lambda: w.proc.poll() is not None, timeout, every=0.5)
    assert w.proc.returncode == -signal.SIGKILL, (w.proc.returncode, w.log()[-3000:])


def committed_all(bootstrap, group, topics) -> bool:
    """committed_everything, False while the broker does not answer (it was just restarted)."""
    from kafka.errors import KafkaError
    try:
        return committed_everything(bootstrap, group, topics)
    except KafkaError:
        return False


def self_restarts(w: Worker) -> int:
    return w.log().count("restarting this worker to read again")


def finish_and_compare(bootstrap, topics, events, w: Worker, *, sent: int,
                       apart: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Wait until `w` has committed every input record, close every item with a tick three
    days past the last event, and check the output against the pure reconciler's (merchants
    in `apart` are left out of the comparison). Returns (published, expected)."""
    assert sent == len(events)
    try:
        wait_for("the worker to commit the whole input",
                 lambda: committed_all(bootstrap, w.app_id, topics), timeout=180, every=2)
    except BaseException:
        print("offsets", committed_everything(bootstrap, w.app_id, topics, show=True))
        print(w.log()[-3000:])
        raise
    end = max(e.event_time_ms for e in events) + 3 * 24 * HOUR
    send_ticks(bootstrap, topics, end)
    want = expected_findings(bootstrap, topics, end)
    wait_for(f"{len(want)} findings", lambda: len(published(bootstrap, topics)) >= len(want),
             timeout=60)
    time.sleep(1.5)  # anything beyond the expected ones would show up now
    got = published(bootstrap, topics)
    assert_same_findings([d for d in got if d["merchant_id"] not in apart],
                         [d for d in want if d["merchant_id"] not in apart])
    return got, want


def produce_in_background(bootstrap, topics, events, **kwargs):
    stats: dict = {}
    t = threading.Thread(target=lambda: stats.update(s=produce(bootstrap, topics, events,
                                                               **kwargs)), daemon=True)
    t.start()

    def join() -> int:
        t.join(180)
        assert not t.is_alive(), "the producer did not finish"
        return stats["s"].sent
    return join


# ------------------------------------------------------------------------------ in make test
@pytest.mark.fault("worker SIGKILLed mid-batch before its changelog writes are acked, the next "
                   "one after they are acked but before the findings are sent",
                   "findings = pure reconciler's: none lost, none twice, no early missing")
def test_a_worker_killed_before_and_after_its_state_is_acked_loses_and_repeats_nothing(
        kafka_bootstrap, topics, workers, fault_note):
    events = scenario(8, merchants=40, sales_per_second=0.8, seed=31, faults=FAULTS)
    # Small batches, so that each worker reaches its fault point's batch however fast the
    # backlog was produced (with the default 50,000 the second read it all in one or two).
    small = ("--batch-max", "2000")
    first = workers(*NO_TICKS, *small, name="first", fault="before_state_acked:4")
    first.wait_ready()
    join = produce_in_background(kafka_bootstrap, topics, events, rate=5000)
    wait_killed(first)
    second = workers(*NO_TICKS, *small, name="second", fault="after_state_acked_before_send:3")
    wait_killed(second)
    third = workers(*NO_TICKS, name="third")
    third.wait_ready(timeout=90)
    sent = join()
    _, want = finish_and_compare(kafka_bootstrap, topics, events, third, sent=sent)
    assert len(want) > 50
    fault_note(f"{sent} records, {len(want)} findings; killed at batch 4 before acks, then at "
               f"batch 3 after acks; self-restarts {self_restarts(first)}/"
               f"{self_restarts(second)}/{self_restarts(third)}")


@pytest.mark.fault("broker stopped for 30 s mid-stream, then started again (stack down/up "
                   "kafka); clock ticks on",
                   "the worker rides it out (same process, no restart by hand), catches up, "
                   "no missing fired from the backlog; findings = pure reconciler's")
def test_the_worker_rides_out_a_broker_stopped_for_thirty_seconds(
        kafka_bootstrap, topics, workers, stack, fault_note):
    events = scenario(6, merchants=40, sales_per_second=0.8, seed=37, faults=FAULTS)
    w = workers("--tick-interval", "200ms", "--tick-idle", "1s", *OPTIONS, name="worker")
    w.wait_ready()
    sent = produce(kafka_bootstrap, topics, events).sent
    w.wait_read(sent // 3, timeout=120)
    pid = w.proc.pid
    down = stack("down", "kafka")
    assert down.returncode == 0, down.stdout + down.stderr
    stopped = time.monotonic()
    try:
        while time.monotonic() - stopped < 30:
            assert w.proc.poll() is None, f"the worker exited while the broker was down:\n" \
                                          f"{w.log()[-3000:]}"
            time.sleep(1)
    finally:
        up = stack("up", "kafka")
    outage = time.monotonic() - stopped
    assert up.returncode == 0, up.stdout + up.stderr
    read_at_stop = w.total("settlewatch_events_read_total")
    finish_and_compare(kafka_bootstrap, topics, events, w, sent=sent)
    assert w.proc.poll() is None and w.proc.pid == pid and w.starts == 1
    fault_note(f"{sent} records; broker unreachable {outage:.0f} s (30 s stopped + start); "
               f"{read_at_stop:.0f} read when it was back; worker pid unchanged, "
               f"self-restarts {self_restarts(w)}")


@pytest.mark.fault("a burst of records out of order within the lateness, and one record older "
                   "than the watermark",
                   "the burst changes no finding; the late one is applied and counted "
                   "(settlewatch_late_data_total)")
def test_out_of_order_within_lateness_changes_nothing_and_later_is_counted_as_late(
        kafka_bootstrap, topics, workers, fault_note):
    import random
    # No redelivery among the faults: a redelivered record may come later than the lateness.
    events = scenario(4, merchants=30, sales_per_second=0.8, seed=41,
                      faults="late=3%,missing=3%,duplicate=2%,underpaid=3%,overpaid=1%,"
                             "orphan=1%")
    # Shuffle within windows of 4 minutes of event time (lateness is 10 minutes): each record
    # arrives out of order, but never by more than the allowed out-of-orderness.
    rng = random.Random(7)
    window = 4 * MIN
    shuffled = sorted(events, key=lambda e: (e.event_time_ms // window, rng.random()))
    newest, moved = 0, 0
    for e in shuffled:  # records that arrive after a record stamped later
        moved += e.event_time_ms < newest
        newest = max(newest, e.event_time_ms)
    # One sale 3 hours older than everything around it, sent at the end: beyond the lateness.
    from streams.core.events import PosEvent
    last = max(e.event_time_ms for e in events)
    late = PosEvent("authorisation", "Elate-1", "Alate-1", "M-late", "T1", "acq-instant", "qr",
                    12_000, "CNY", last - 3 * HOUR)
    w = workers(*NO_TICKS, name="worker")
    w.wait_ready()
    sent = produce(kafka_bootstrap, topics, shuffled + [late]).sent
    w.wait_read(sent, timeout=120)
    # The shuffled stream, live, gives what the reconciler gives for it in event-time order.
    got, _ = finish_and_compare(kafka_bootstrap, topics, shuffled + [late], w, sent=sent,
                                apart=frozenset({"M-late"}))
    # The late sale was applied: with no credit, it is reported missing.
    assert [(d["kind"], d["subject"]) for d in got if d["merchant_id"] == "M-late"] == [
        ("missing", "Alate-1")]
    # ... and counted as late data: it alone (the burst was within the lateness).
    late_data = w.total("settlewatch_late_data_total")
    assert late_data == 1
    fault_note(f"{moved} of {len(events)} records arrive after a later-stamped one (by <= 4 "
               f"min); 1 record 3 h late: settlewatch_late_data_total {late_data:.0f}, its "
               f"sale reported missing")
