"""The longer faults (issue 15), run by `make test-faults` (marker `faults`): a worker killed
while a second one joins, the broker restarted while a worker restores its state, and the
changelogs deleted or cut short under a stopped worker. Same comparison as test_faults.py:
the published findings equal the pure reconciler's for the same input."""
from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_faults import (NO_TICKS, OPTIONS, finish_and_compare, produce_in_background,
                             self_restarts, wait_killed, workers)  # noqa: F401 (fixture)
    from test_restart import FAULTS
    from test_worker import Worker, produce, published, scenario, wait_for
    from test_worker import topics  # noqa: F401  (fixture)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_faults import (NO_TICKS, OPTIONS, finish_and_compare,  # noqa
                                               produce_in_background, self_restarts,
                                               wait_killed, workers)
    from tests.integration.test_restart import FAULTS
    from tests.integration.test_worker import Worker, produce, published, scenario, wait_for
    from tests.integration.test_worker import topics  # noqa: F401  (fixture)

pytestmark = pytest.mark.faults


@pytest.mark.fault("worker SIGKILLed during a rebalance, while a second worker joins the group",
                   "the second takes every partition; findings = pure reconciler's")
def test_a_worker_killed_while_a_second_joins_loses_and_repeats_nothing(
        kafka_bootstrap, topics, workers, fault_note):
    events = scenario(8, merchants=40, sales_per_second=0.8, seed=43, faults=FAULTS)
    first = workers(*NO_TICKS, name="first")
    first.wait_ready()
    join = produce_in_background(kafka_bootstrap, topics, events, rate=3000)
    first.wait_read(len(events) // 4, timeout=120)
    second = workers(*NO_TICKS, name="second")
    # The second one's JoinGroup makes the group rebalance: the first one's partitions are
    # revoked (settlewatch_worker_up drops to 0) before they are handed out again.
    t0 = time.monotonic()
    wait_for("the first worker to be in a rebalance",
             lambda: first.value("settlewatch_worker_up") == 0, timeout=60, every=0.05)
    first.kill()
    in_rebalance_s = time.monotonic() - t0
    second.wait_ready(timeout=90)
    sent = join()
    _, want = finish_and_compare(kafka_bootstrap, topics, events, second, sent=sent)
    fault_note(f"{sent} records, {len(want)} findings; first worker killed "
               f"{in_rebalance_s:.1f} s after the second started, while its partitions were "
               f"revoked; self-restarts {self_restarts(first)}/{self_restarts(second)}")


@pytest.mark.fault("broker stopped while a restarted worker restores its tables from the "
                   "changelogs, started again 10 s later",
                   "the worker finishes its restore and goes on; findings = pure reconciler's")
def test_a_broker_restart_during_state_restore_is_ridden_out(
        kafka_bootstrap, topics, workers, stack, fault_note):
    events = scenario(12, merchants=80, sales_per_second=1.2, seed=47, faults=FAULTS)
    half = len(events) // 2
    first = workers(*NO_TICKS, name="first")
    first.wait_ready()
    produce(kafka_bootstrap, topics, events[:half])
    first.wait_read(half, timeout=180)
    first.kill()
    join = produce_in_background(kafka_bootstrap, topics, events[half:], rate=4000)
    second = workers(*NO_TICKS, name="second")
    wait_for("the second worker to start restoring its tables",
             lambda: second.alive() and "Restoring state from changelog topics" in second.log(),
             timeout=120, every=0.05)
    down = stack("down", "kafka")
    restored_before_stop = "Done reading from changelog topics" in second.log()
    try:
        assert down.returncode == 0, down.stdout + down.stderr
        time.sleep(10)
    finally:
        up = stack("up", "kafka")
    assert up.returncode == 0, up.stdout + up.stderr
    sent = join() + half
    second.wait_ready(timeout=120)
    _, want = finish_and_compare(kafka_bootstrap, topics, events, second, sent=sent)
    fault_note(f"{sent} records, {len(want)} findings; broker stopped "
               f"{'after' if restored_before_stop else 'before'} the restore had finished; "
               f"second worker self-restarts {self_restarts(second)}")


def changelog_topics(admin, app_id: str) -> list[str]:
    return sorted(t for t in admin.list_topics()
                  if t.startswith(f"{app_id}-") and t.endswith("-changelog"))


@pytest.mark.fault("changelog records deleted (log start moved), then the changelog topics "
                   "deleted, under a stopped worker",
                   "the worker refuses to start with a clear message and the recovery; the "
                   "recovery (new app id) rebuilds from the inputs: findings = pure "
                   "reconciler's")
def test_lost_changelogs_stop_the_worker_with_a_clear_message_and_a_rebuild_recovers(
        kafka_bootstrap, topics, workers, kafka_admin, topic_prefix, tmp_path, fault_note):
    events = scenario(6, merchants=40, sales_per_second=0.8, seed=53, faults=FAULTS)
    first = workers(*NO_TICKS, name="first")
    first.wait_ready()
    sent = produce(kafka_bootstrap, topics, events).sent
    first.wait_read(sent, timeout=120)
    finish_and_compare(kafka_bootstrap, topics, events, first, sent=sent)
    findings_before = len(published(kafka_bootstrap, topics))
    first.stop()
    changelogs = changelog_topics(kafka_admin, first.app_id)
    assert len(changelogs) >= 2, changelogs

    def refused(name: str) -> str:
        w = workers(*NO_TICKS, name=name)
        wait_for(f"{name} to exit", lambda: w.proc.poll() is not None, timeout=90, every=0.5)
        assert w.proc.returncode == 1, w.log()[-3000:]
        return w.log()

    # 1. Records deleted from one changelog partition, as a retention does once someone sets
    # cleanup.policy=compact,delete on it (Kafka refuses DeleteRecords on a compact-only topic).
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    tps = [TopicPartition(t, p) for t in changelogs for p in range(6)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    cut = next(tp for tp in tps if ends[tp] > 0)
    kafka_admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, cut.topic,
                                              {"cleanup.policy": "compact,delete"})])
    kafka_admin.delete_records({cut: ends[cut]})
    log = refused("after-delete-records")
    assert "state on Kafka is lost or incomplete" in log
    assert f"{cut.topic}[{cut.partition}] starts at offset {ends[cut]}" in log
    assert "Recovery: rebuild the state from the input topics' retention" in log

    # 2. The changelog topics deleted.
    kafka_admin.delete_topics(changelogs)
    wait_for("the changelogs to be gone",
             lambda: not changelog_topics(kafka_admin, first.app_id), timeout=60)
    log = refused("after-delete-topics")
    assert all(t in log for t in changelogs) and "missing" in log
    assert f"--app-id {first.app_id}-rebuilt" in log
    # Nothing was published by the refused workers.
    assert len(published(kafka_bootstrap, topics)) == findings_before

    # 3. The documented recovery: a new app id rebuilds the state from the input topics.
    rebuilt = Worker(kafka_bootstrap, topic_prefix, tmp_path, app_id=f"{first.app_id}-rebuilt",
                     options=NO_TICKS, name="rebuilt").start()
    try:
        rebuilt.wait_ready(timeout=90)
        rebuilt.wait_read(sent, timeout=120)
        got, want = finish_and_compare(kafka_bootstrap, topics, events, rebuilt, sent=sent)
    finally:
        rebuilt.stop()
    fault_note(f"{sent} records; refused twice with exit 1 ({cut.topic.split('-')[-2]} "
               f"changelog cut at {ends[cut]}; {len(changelogs)} changelog topics deleted); "
               f"rebuilt under a new app id: {len(want)} findings, {len(got)} on the topic")
