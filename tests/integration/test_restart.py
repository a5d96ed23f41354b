"""A worker SIGKILLed in the middle of a stream and started again: no finding lost, none
published twice, and the open state comes back from the changelog, not from re-reading."""
from __future__ import annotations

import re
import signal
import threading
import time

from streams.bench.worker import committed_all, committed_offsets

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_worker import (HOUR, assert_same_findings, expected_findings, produce,
                             published, scenario, send_ticks, wait_for)
    from test_worker import topics, worker  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_worker import (HOUR, assert_same_findings, expected_findings,
                                               produce, published, scenario, send_ticks,
                                               wait_for)
    from tests.integration.test_worker import topics, worker  # noqa: F401  (fixtures)

FAULTS = ("late=3%,missing=3%,duplicate=2%,underpaid=3%,overpaid=1%,orphan=1%,"
          "refund_netted=1%,redelivery=1%")


def committed_everything(bootstrap: str, group: str, topics, show: bool = False):
    """The group's committed offsets have reached the end of both input topics (with `show`:
    each input partition's committed and end offsets)."""
    if show:
        return committed_offsets(bootstrap, group, topics)
    return committed_all(bootstrap, group, topics)


def test_a_worker_killed_mid_stream_loses_no_finding_and_repeats_none(
        kafka_bootstrap, topics, worker):
    events = scenario(12, merchants=50, sales_per_second=0.7, seed=23, faults=FAULTS)
    options = ("--tick-interval", "0", "--session-timeout", "6s")
    first = worker(*options, name="first")
    first.wait_ready()

    stats = {}
    feeder = threading.Thread(target=lambda: stats.update(
        s=produce(kafka_bootstrap, topics, events, rate=4000)))
    feeder.start()
    # Kill it once it has read a good part of the stream (findings included).
    first.wait_read(len(events) * 2 // 5, timeout=60)
    assert first.total("settlewatch_findings_total") > 0
    first.kill()

    second = worker(*options, name="second")
    second.wait_ready(timeout=60)
    feeder.join(60)
    sent = stats["s"].sent
    assert sent == len(events)
    try:
        wait_for("the restarted worker to commit the whole input",
                 lambda: committed_everything(kafka_bootstrap, second.app_id, topics),
                 timeout=60, every=1)
    except BaseException:
        second.proc.send_signal(signal.SIGUSR1)  # its tasks' stacks go to its log
        time.sleep(1)
        print("restarted worker read", second.total("settlewatch_events_read_total"), "of", sent)
        print("offsets", committed_everything(kafka_bootstrap, second.app_id, topics, show=True))
        raise

    end = max(e.event_time_ms for e in events) + 3 * 24 * HOUR
    send_ticks(kafka_bootstrap, topics, end)
    want = expected_findings(kafka_bootstrap, topics, end)
    try:
        wait_for(f"{len(want)} findings",
                 lambda: len(published(kafka_bootstrap, topics)) >= len(want), timeout=120,
                 every=2)
    finally:
        time.sleep(1)
        assert_same_findings(published(kafka_bootstrap, topics), want)

    # The restarted worker did not re-read the stream from the start (it read what the first
    # one had not committed, and the rest): the state of the first part came from the changelog.
    assert second.total("settlewatch_events_read_total") < sent
    log = second.log().split("--- start")[-1]
    restored = [int(n) for n in re.findall(r"partition \d+: (\d+) state keys restored", log)]
    # six partitions, each with its state keys (per change, not per merchant)
    assert len(restored) == 6 and sum(restored) > 0, log[-2000:]
