"""The early warning's baseline in the changelog (streams/live/ewstate.py): its record, the
restore that never stops a worker, and when copies are written."""
from __future__ import annotations

import logging
import zlib

import orjson
from prometheus_client import CollectorRegistry

from streams.core.earlywarning import EarlyWarning
from streams.live import ewstate
from streams.live.metrics import Metrics
from streams.live.partition import LivePartition, key_partition
from tests.core.builders import ms
from tests.core.test_earlywarning import ACQ, _policy, run, traffic

P = _policy()


def learned() -> EarlyWarning:
    ew = EarlyWarning(P)
    run(P, traffic(P, "2026-11-02", 12), ew, until=ms("2026-11-16 00:00"))
    return ew


def test_a_baseline_record_restores_the_same_learned_days():
    ew = learned()
    value, kept = ewstate.encode(ew.snapshot())
    assert kept is None and value.startswith(ewstate.MAGIC)
    again = EarlyWarning(P)
    assert ewstate.restore(again, [(3, value)]) == {3: ewstate.RESTORED}
    assert again.snapshot()["curves"] == ew.snapshot()["curves"]
    assert again.history_days(ACQ, "credit") == ew.history_days(ACQ, "credit") >= 5


def test_the_key_belongs_to_its_partition_and_the_partition_restore_ignores_it():
    key = ewstate.baseline_key(4)
    assert key_partition(key) == 4
    value, _ = ewstate.encode(learned().snapshot())
    lp, resend = LivePartition.restore(4, P, entries=[(key, value)], published=(), now_ms=0)
    assert resend == [] and lp.reconciler.open_item_count() == 0


def _bad_copies() -> list[tuple[int, bytes, str, str]]:
    snap = learned().snapshot()
    other_step = {**snap, "step_ms": 30 * 60_000}
    return [
        (0, b"garbage", ewstate.CORRUPT, "does not start with SWB1"),
        (1, ewstate.MAGIC + b"\x00\x01not zlib", ewstate.CORRUPT, "not zlib data"),
        (2, ewstate.MAGIC + zlib.compress(b"{half a json"), ewstate.CORRUPT, "not JSON"),
        (3, ewstate.MAGIC + zlib.compress(orjson.dumps(other_step)), ewstate.INCOMPATIBLE,
         "step_ms 1800000"),
    ]


def test_a_corrupt_or_incompatible_copy_is_logged_counted_and_ignored(caplog):
    m = Metrics.create(CollectorRegistry(), version="t", worker="t")
    m.enable_early_warning(P)
    ew = EarlyWarning(P)
    good, _ = ewstate.encode(learned().snapshot())
    bad = _bad_copies()
    with caplog.at_level(logging.WARNING, logger="settlewatch.worker"):
        results = ewstate.restore(ew, [(p, v) for p, v, _, _ in bad] + [(5, good)],
                                  lambda r: m.baseline_restores.labels(r).inc())
    assert results == {**{p: kind for p, _, kind, _ in bad}, 5: ewstate.RESTORED}
    for p, _, kind, words in bad:
        line = next(r.getMessage() for r in caplog.records
                    if r.getMessage().startswith(f"partition {p}: "))
        assert f"ignored, {kind}: " in line and words in line and "relearns" in line, line
    reg = m.registry
    assert reg.get_sample_value("settlewatch_early_warning_baseline_restores_total",
                                {"result": "corrupt"}) == 3
    assert reg.get_sample_value("settlewatch_early_warning_baseline_restores_total",
                                {"result": "incompatible"}) == 1
    assert reg.get_sample_value("settlewatch_early_warning_baseline_restores_total",
                                {"result": "restored"}) == 1
    assert ew.history_days(ACQ, "credit") >= 5  # the good copy still came back


def test_a_baseline_over_the_limit_keeps_the_newest_days_that_fit():
    ew = learned()
    snap = ew.snapshot()
    whole, _ = ewstate.encode(snap)
    value, kept = ewstate.encode(snap, max_bytes=len(whole) // 2,
                                 fewer=lambda n: ew.snapshot(max_days=n))
    assert len(value) <= len(whole) // 2 and kept is not None and kept >= 1
    back = ewstate.decode(value)["curves"][f"{ACQ}\x1fcredit"]
    assert back == snap["curves"][f"{ACQ}\x1fcredit"][-kept:]


def test_copies_are_written_when_the_history_changed_at_most_once_an_interval():
    k = ewstate.Keeper(interval_ms=300_000)
    assert k.due(0, 0, [0, 1]) == []  # nothing learned yet
    assert k.due(0, 1, [0, 1]) == [0, 1]  # the first change: at once
    k.written([0, 1], 1, now_ms=0)
    assert k.due(10_000, 1, [0, 1]) == []  # unchanged
    assert k.due(10_000, 2, [0, 1]) == []  # changed, but within the interval
    assert k.due(10_000, 2, [0, 1], final=True) == [0, 1]  # a clean stop writes anyway
    assert k.due(300_000, 2, [0, 1]) == [0, 1]
    k.written([0, 1], 2, now_ms=300_000)
    k.has(2, 2)  # a partition that came with a current copy
    k.failed(1)  # the broker did not take partition 1's
    assert k.due(600_000, 2, [0, 1, 2, 3]) == [1, 3]
    k.forget([3])
    assert k.due(600_000, 2, [0, 1, 2]) == [1]
