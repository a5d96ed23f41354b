"""Refuse to start on lost state: the changelogs gone or cut short under a stopped worker.

The worker resumes reading its inputs at the consumer group's committed offsets and takes
everything before them from its tables, which faust rebuilds from their changelog topics. If
those topics were deleted, or records deleted from them (a `cleanup.policy=delete` retention,
`kafka-delete-records`), faust would quietly start with empty or partial state: open sales
forgotten (missing credits never reported), credits judged against nothing (false orphans).
Compaction is not a loss: it keeps every key's latest value, which is all the tables need.

`check_state` runs before faust starts (streams.live.app.run_worker) and compares the two:

- the group has committed offsets on an input partition, but a changelog topic does not exist;
- a changelog partition's log-start offset is above 0: records were deleted from it
  (compaction never moves the log start);
- the group has committed offsets on input partition p, and every changelog is empty in
  partition p (a changelog partition holds the state of the input partition of the same number;
  the clock entry of p is written whenever p's event time moves, by records or by ticks).

Any of these stops the worker with a message naming what is missing and the recovery, which
rebuilds the state from the input topics' retention (RECOVERY below). A group with no committed
offsets (a new app id) is never refused: there is no state to lose.

A new group starts the tick topic at its end (`skip_stale_ticks`). The inputs are read from
the earliest retained offset, but the ticks already on settlewatch.ticks were sent for another
group's reading, at wall-clock times: read first (the tick topic is small), they would move
event time past the whole unread backlog and raise "missing" for every sale in it (seen in
tests/integration/test_faults_long.py, the rebuild under a new app id). Fresh ticks follow
within a tick interval.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

log = logging.getLogger("settlewatch.worker")

RECOVERY = (
    "Recovery: rebuild the state from the input topics' retention. Either start the worker "
    "with a new app id (`settlewatch worker --app-id {app_id}-rebuilt ...`: a new consumer "
    "group reads the inputs from the earliest retained offset, with new changelogs; findings "
    "already published come again with the same anomaly_id, which consumers dedupe on), or "
    "delete the consumer group {app_id!r} and its changelog topics ({changelogs}) and start "
    "as before. Either way the inputs must still hold everything since the oldest open item "
    "(their retention: SECURITY.md, 'Retention').")


def check_state(admin: Any, consumer: Any, group: str, inputs: Iterable[str],
                changelogs: list[str]) -> list[str]:
    """Problems with the state on Kafka of consumer group `group` (kafka-python `admin` and a
    group-less `consumer`), or [] when it may start. `inputs`: the input topics whose
    committed offsets mean progress; `changelogs`: the changelog topics of its tables."""
    from kafka import TopicPartition
    inputs = set(inputs)
    committed = _committed(admin, group)
    progressed = sorted({tp.partition for tp, om in committed.items()
                         if tp.topic in inputs and om is not None and om.offset > 0})
    if not progressed:
        return []
    described = {d.get("topic", d.get("name")): d for d in admin.describe_topics(changelogs)
                 if not d.get("error_code")}
    problems = []
    absent = [t for t in changelogs if t not in described]
    if absent:
        problems.append(f"changelog topic{'s' if len(absent) > 1 else ''} "
                        f"{', '.join(absent)} missing")
    present = [t for t in changelogs if t in described]
    tps = [TopicPartition(t, p["partition_index"]) for t in present
           for p in described[t]["partitions"]]
    starts = consumer.beginning_offsets(tps) if tps else {}
    ends = consumer.end_offsets(tps) if tps else {}
    cut = [f"{tp.topic}[{tp.partition}] starts at offset {starts[tp]}" for tp in tps
           if starts[tp] > 0]
    if cut:
        problems.append("records deleted from changelogs (not compacted): " + ", ".join(cut))
    if present and not absent:
        empty = [p for p in progressed
                 if all(ends.get(TopicPartition(t, p), 0) == 0 for t in present)]
        if empty:
            problems.append(f"input partitions {empty} were read (group {group!r} committed "
                            f"offsets) but their changelogs hold no state")
    return problems


def _committed(admin: Any, group: str, timeout_s: float = 60.0) -> dict:
    """The group's committed offsets; retried while the broker cannot answer yet (the offsets
    topic of a new broker is created on the first group's request)."""
    import time

    from kafka.errors import KafkaError
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_group_offsets(group).get(group, {})
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            log.info("state check: %s, retrying", type(exc).__name__)
            time.sleep(0.5)


def skip_stale_ticks(admin: Any, consumer: Any, group: str, ticks: str,
                     commit: Callable[[dict], None]) -> int | None:
    """For a group with no committed offsets at all: `commit` the end of every partition of
    `ticks` as its starting point. Returns the number of ticks skipped, None for a group that
    has committed offsets (it resumes where it was, ticks included)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata
    if _committed(admin, group):
        return None
    tps = [TopicPartition(ticks, p) for p in sorted(consumer.partitions_for_topic(ticks) or ())]
    if not tps:
        return 0
    ends = consumer.end_offsets(tps)
    starts = consumer.beginning_offsets(tps)
    skipped = sum(ends[tp] - starts[tp] for tp in tps)
    if skipped:
        commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    return skipped


def _commit(bootstrap: str, group: str, client_settings: dict[str, Any], offsets: dict) -> None:
    """Commit `offsets` for `group` without joining it (the group is empty: no member yet)."""
    from kafka import KafkaConsumer
    committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                              enable_auto_commit=False, client_id=f"{group}-state-check",
                              **client_settings)
    try:
        committer.commit(offsets)
    finally:
        committer.close()


def refuse_lost_state(bootstrap: str, group: str, inputs: Iterable[str],
                      changelogs: list[str], client_settings: dict[str, Any],
                      ticks: str | None = None) -> str | None:
    """The message to stop the worker with, or None when its state is whole (or new); a new
    group also starts `ticks` at its end (skip_stale_ticks)."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-state-check",
                             request_timeout_ms=10_000, **client_settings)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, client_id=f"{group}-state-check",
                             **client_settings)
    try:
        problems = check_state(admin, consumer, group, inputs, changelogs)
        if not problems and ticks is not None:
            skipped = skip_stale_ticks(admin, consumer, group, ticks,
                                       partial(_commit, bootstrap, group, client_settings))
            if skipped:
                log.info("new consumer group %s: %d ticks already on %s skipped (sent for "
                         "another group's reading)", group, skipped, ticks)
    finally:
        consumer.close()
        admin.close()
    if not problems:
        return None
    return ("the worker's state on Kafka is lost or incomplete: " + "; ".join(problems)
            + f". Its consumer group {group!r} has committed input offsets, so it would resume "
            f"after records whose state is gone and report wrong findings; not starting. "
            + RECOVERY.format(app_id=group, changelogs=", ".join(changelogs)))
