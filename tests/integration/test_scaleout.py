"""Scale-out: two workers in one consumer group share the 6 partitions; one stops mid-stream
and the other takes its partitions and their state over through the changelog. What reaches
settlewatch.anomalies equals the pure reconciler's findings for the same input: none lost,
none doubled."""
from __future__ import annotations

import re
import threading

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_restart import FAULTS, committed_everything
    from test_worker import (HOUR, assert_same_findings, expected_findings, produce,
                             published, scenario, send_ticks, wait_for)
    from test_worker import topics, worker  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_restart import FAULTS, committed_everything
    from tests.integration.test_worker import (HOUR, assert_same_findings, expected_findings,
                                               produce, published, scenario, send_ticks,
                                               wait_for)
    from tests.integration.test_worker import topics, worker  # noqa: F401  (fixtures)


def _restored_partitions(log: str) -> set[int]:
    return {int(p) for p in re.findall(r"partition (\d+): \d+ state keys restored", log)}


def test_two_workers_share_the_partitions_and_one_leaving_mid_stream_loses_and_doubles_nothing(
        kafka_bootstrap, topics, worker):
    events = scenario(12, merchants=60, sales_per_second=0.7, seed=31, faults=FAULTS)
    options = ("--tick-interval", "0", "--session-timeout", "6s")
    a = worker(*options, name="a")
    b = worker(*options, name="b")
    a.wait_ready(timeout=90)
    b.wait_ready(timeout=90)

    stats = {}
    feeder = threading.Thread(target=lambda: stats.update(
        s=produce(kafka_bootstrap, topics, events, rate=3000)))
    feeder.start()
    # Both read: the group gave each worker some of the six partitions.
    wait_for("both workers to read records",
             lambda: a.total("settlewatch_events_read_total") > 0
             and b.total("settlewatch_events_read_total") > 0, timeout=90)
    wait_for("a good part of the stream to be read",
             lambda: a.total("settlewatch_events_read_total")
             + b.total("settlewatch_events_read_total") >= len(events) * 2 // 5, timeout=120)
    before = _restored_partitions(b.log())
    assert 0 < len(before) < 6, b.log()[-2000:]  # b had only some partitions
    b.stop()  # b leaves the group mid-stream (SIGTERM)
    assert b.proc.returncode == 0, b.log()[-2000:]

    feeder.join(120)
    assert stats["s"].sent == len(events)
    wait_for("the remaining worker to commit the whole input",
             lambda: a.alive() and committed_everything(kafka_bootstrap, a.app_id, topics),
             timeout=120, every=1)
    # a took b's partitions over, their state from the changelog.
    assert _restored_partitions(a.log()) == set(range(6)), a.log()[-3000:]

    end = max(e.event_time_ms for e in events) + 3 * 24 * HOUR
    send_ticks(kafka_bootstrap, topics, end)
    want = expected_findings(kafka_bootstrap, topics, end)
    assert len(want) > 100
    wait_for(f"{len(want)} findings",
             lambda: len(published(kafka_bootstrap, topics)) >= len(want), timeout=60)
    import time
    time.sleep(1)
    assert_same_findings(published(kafka_bootstrap, topics), want)
