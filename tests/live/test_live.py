"""The live worker's logic without a broker: clock ticks, outbox and dedupe, table encodings,
and a partition restored from its table values giving what an uninterrupted one gives."""
from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from streams import wire
from streams.core.reconcile import Reconciler, feed
from streams.live.partition import (
    AUTH,
    SETTLEMENT,
    InputProgress,
    InputView,
    LivePartition,
    OffsetChecker,
    RateLimitedLog,
    decode_merchant,
    decode_tick,
    encode_clock,
    encode_tick,
    merchant_partition,
    published_key,
    tick_target,
)
from streams.live.command import config_from_environment
from streams.live.metrics import Metrics
from streams.wire import Topics
from tests.core.builders import MIN, credit, ms, net, policy, sale

T0 = ms("2026-10-09 10:00")
WALL = T0 + 3 * 60 * MIN  # the wall clock of these tests: three hours after the first sale
POLICY = policy()  # acquirers other than acq-batch: per sale, due 30 minutes after the sale


def raw(e) -> bytes:
    return wire.event_to_json(e)


def kind_of(e) -> str:
    return SETTLEMENT if type(e).__name__ == "Credit" else AUTH


def fed(lp: LivePartition, events, offset: int = 0) -> int:
    for i, e in enumerate(events):
        assert lp.on_input(kind_of(e), raw(e), WALL, offset + i) is None
    return offset + len(events)


def tick(lp: LivePartition, at_ms: int) -> None:
    assert lp.on_tick(encode_tick(at_ms))


def as_table(flush, table: dict) -> None:
    for key, value in flush.writes:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def records(flush) -> list[tuple[str, str, str]]:
    return [(r["kind"], r["status"], r["subject"]) for _, r in flush.publish]


# --------------------------------------------------------------------------------- tick_target
SILENT = InputView(caught_up=True, idle=True, watermark_ms=None)


def test_silent_inputs_let_the_wall_clock_minus_the_allowance_move_event_time():
    assert tick_target(WALL, 5 * MIN, clock_ms=T0, inputs=[SILENT, SILENT]) == WALL - 5 * MIN


def test_a_tick_never_passes_an_input_that_still_delivers_records():
    sales = InputView(caught_up=True, idle=False, watermark_ms=T0 + MIN)
    assert tick_target(WALL, 5 * MIN, clock_ms=T0, inputs=[sales, SILENT]) == T0 + MIN


def test_a_dead_settlement_feed_beside_live_sales_moves_with_the_wall_clock_when_sales_are_current():
    sales = InputView(caught_up=True, idle=False, watermark_ms=WALL - 10 * MIN)
    assert tick_target(WALL, 12 * MIN, clock_ms=T0, inputs=[sales, SILENT]) == WALL - 12 * MIN


def test_no_tick_while_a_backlog_is_unread_even_on_an_input_that_looks_idle():
    behind = InputView(caught_up=False, idle=True, watermark_ms=None)
    assert tick_target(WALL, 5 * MIN, clock_ms=T0, inputs=[behind, SILENT]) is None
    behind_seen = InputView(caught_up=False, idle=True, watermark_ms=T0 + 2 * MIN)
    assert tick_target(WALL, 5 * MIN, clock_ms=T0, inputs=[behind_seen, SILENT]) == T0 + 2 * MIN


def test_no_tick_when_the_clock_is_already_there():
    assert tick_target(WALL, 5 * MIN, clock_ms=WALL - 5 * MIN, inputs=[SILENT, SILENT]) is None


def test_an_input_is_idle_only_after_the_idle_time_of_its_own_watching():
    progress = InputProgress(now_ms=WALL)
    assert not progress.idle("a", 0, WALL + 999, idle_ms=1000)
    assert progress.idle("a", 0, WALL + 1000, idle_ms=1000)
    progress.note("a", 0, offset=41, now_ms=WALL + 5000)
    assert not progress.idle("a", 0, WALL + 5500, idle_ms=1000)


def test_lag_counts_from_the_committed_offset_until_a_record_is_read():
    progress = InputProgress(now_ms=WALL)
    assert progress.lag("a", 0, end_offset=100, start_offset=None) is None
    assert progress.lag("a", 0, end_offset=100, start_offset=60) == 40
    progress.note("a", 0, offset=99, now_ms=WALL)
    assert progress.lag("a", 0, end_offset=100, start_offset=60) == 0
    progress.forget([0])
    assert progress.lag("a", 0, end_offset=100, start_offset=None) is None


# --------------------------------------------------------------------------- outbox and dedupe
def test_a_finding_is_written_with_its_merchants_state_before_it_is_published():
    lp = LivePartition(3, POLICY)
    fed(lp, [sale("a1", T0, 10_000), sale("a2", T0 + MIN, 5_000, merchant="m2")])
    lp.flush(WALL)
    tick(lp, T0 + 31 * MIN)  # a1's deadline (T0 + 30m, no grace) has passed, a2's has not
    out = lp.flush(WALL)
    assert records(out) == [("missing", "open", "a1")]
    assert out.publish[0][1]["detected_at"] == wire.format_time_ms(WALL)
    written = dict(out.writes)
    p, snapshot, outbox = decode_merchant(written[b"m1"])
    assert (p, [r["subject"] for r in outbox]) == (3, ["a1"])
    assert snapshot is not None
    assert out.clock is not None


def test_an_acknowledged_outbox_is_cleared_at_the_next_flush():
    lp = LivePartition(0, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    tick(lp, T0 + 31 * MIN)
    lp.flush(WALL)
    assert lp.flush(WALL).writes == []  # not acknowledged yet: nothing to rewrite
    lp.acked("m1")
    assert lp.needs_flush
    out = lp.flush(WALL)
    _, _, outbox = decode_merchant(dict(out.writes)[b"m1"])
    assert outbox == []


def test_a_merchant_with_nothing_left_is_deleted_from_the_table():
    lp = LivePartition(0, POLICY)
    lp.on_input(AUTH, raw(sale("a1", T0, 10_000, status="declined")), WALL, 0)
    tick(lp, T0 + 8 * 24 * 60 * MIN)  # closed, and dropped after keep_settled
    out = lp.flush(WALL)
    assert dict(out.writes) == {b"m1": None}


def test_restore_re_sends_outbox_findings_that_are_not_on_the_output_yet():
    lp = LivePartition(1, POLICY)
    fed(lp, [sale("a1", T0, 10_000), sale("b1", T0, 7_000, merchant="m2")])
    tick(lp, T0 + 31 * MIN)
    table: dict = {}
    out = lp.flush(WALL)
    as_table(out, table)
    published = [(r["anomaly_id"], r["status"], WALL) for mid, r in out.publish if mid == "m2"]
    restored, resend = LivePartition.restore(1, POLICY, clock=out.clock,
                                             merchants=table.items(), published=published,
                                             now_ms=WALL + 1)
    assert [(mid, r["subject"]) for mid, r in resend] == [("m1", "a1")]
    assert restored.republished == 1


def test_a_finding_raised_again_after_a_restore_is_not_published_twice():
    before = [sale("a1", T0, 10_000)]
    lp = LivePartition(0, POLICY)
    fed(lp, before)
    table: dict = {}
    as_table(lp.flush(WALL), table)  # state saved before the sale's deadline
    tick(lp, T0 + 31 * MIN)
    out = lp.flush(WALL)  # the missing finding is sent; say its table write was lost
    published = [(r["anomaly_id"], r["status"], WALL) for _, r in out.publish]
    restored, resend = LivePartition.restore(0, POLICY, clock=None, merchants=table.items(),
                                             published=published, now_ms=WALL + 1)
    assert resend == []
    tick(restored, T0 + 31 * MIN)  # the replay raises it again
    again = restored.flush(WALL + 2)
    assert again.publish == [] and restored.suppressed == 1


def test_a_partition_restored_from_its_table_values_continues_like_one_that_never_stopped():
    first = [sale("a1", T0, 10_000), sale("a2", T0 + MIN, 20_000),
             sale("b1", T0 + 2 * MIN, 3_000, merchant="m2"),
             credit("c1", T0 + 20 * MIN, net(10_000), auth_ids=("a1",))]
    second = [credit("c2", T0 + 50 * MIN, net(20_000), auth_ids=("a2",)),  # late: due T0+31m
              credit("c3", T0 + 25 * MIN, net(3_000) - 500, auth_ids=("b1",),
                     merchant="m2"),  # under-paid
              sale("a3", T0 + 60 * MIN, 1_000),
              credit("c4", T0 + 61 * MIN, 999, auth_ids=("zz",))]  # matches nothing yet
    end = T0 + 2 * 24 * 60 * MIN

    expected = feed(Reconciler(POLICY), first + second, until_ms=end)

    lp = LivePartition(2, POLICY)
    fed(lp, first)
    table: dict = {}
    out1 = lp.flush(WALL)
    as_table(out1, table)
    restored, resend = LivePartition.restore(2, POLICY, clock=out1.clock,
                                             merchants=table.items(), published=[],
                                             now_ms=WALL)
    assert resend == []
    fed(restored, first, offset=0)  # re-read from the committed offset: redeliveries
    fed(restored, second, offset=len(first))
    tick(restored, end)
    out2 = restored.flush(WALL)
    got = [r for _, r in out1.publish + out2.publish]
    want = [wire.finding_to_dict(f) | {"detected_at": wire.format_time_ms(WALL)}
            for f in expected]
    assert sorted(got, key=orjson.dumps) == sorted(want, key=orjson.dumps)
    assert {r["kind"] for r in got} >= {"late", "missing", "underpaid", "orphan"}


# ------------------------------------------------------------------------------- dead letters
def test_a_rejected_record_becomes_a_dead_letter_with_its_place_and_no_card_number():
    registry = CollectorRegistry()
    metrics = Metrics.create(registry, topics={"authorisations": "x.pos.authorisations",
                                               "settlements": "x.pos.settlements"})
    lp = LivePartition(4, POLICY, topics=Topics.with_prefix("x."), metrics=metrics)
    body = orjson.loads(raw(sale("a1", T0, 10_000)))
    body["pan_masked"] = "4111111111111111"
    dead = lp.on_input(AUTH, orjson.dumps(body), WALL, 17, key=b"m1")
    assert dead is not None and dead.reason == "full_pan"
    record = orjson.loads(dead.value)
    assert (record["topic"], record["partition"], record["offset"]) == \
        ("x.pos.authorisations", 4, 17)
    assert not wire.contains_pan(dead.value)
    assert registry.get_sample_value("settlewatch_events_rejected_total",
                                     {"topic": "x.pos.authorisations", "reason": "full_pan"}) == 1
    assert registry.get_sample_value("settlewatch_events_read_total",
                                     {"topic": "x.pos.authorisations"}) == 1


def test_a_record_the_reconciler_fails_on_is_dead_lettered_as_a_processing_error():
    lp = LivePartition(0, POLICY)
    dead = lp.failed(AUTH, b'{"pan": "4111 1111 1111 1111"}', WALL, 5, None, KeyError("x"))
    assert dead.reason == "processing_error"
    assert b"4111 11** **** 1111" in dead.value


# ---------------------------------------------------------------------------------- encodings
def test_table_values_carry_their_partition_ahead_of_the_json():
    lp = LivePartition(5, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    (key, value), = lp.flush(WALL).writes
    assert key == b"m1" and merchant_partition(value) == 5 and value.startswith(b"5|")


def test_ticks_and_findings_are_read_back_or_refused():
    assert decode_tick(encode_tick(T0)) == T0
    assert decode_tick(b"nope") is None and decode_tick(b'{"tick_ms": "1"}') is None
    assert published_key(b'{"anomaly_id": "x", "status": "open"}') == ("x", "open")
    assert published_key(b"{}") is None and published_key(None) is None


def test_the_config_reads_settlewatch_variables_and_lets_options_win(monkeypatch):
    env = {"SETTLEWATCH_BOOTSTRAP": "k:1", "SETTLEWATCH_TICK_INTERVAL": "250ms",
           "SETTLEWATCH_TOPIC_PREFIX": "t1.", "SETTLEWATCH_PARTITIONS": "3",
           "SETTLEWATCH_APP_ID": "from-env"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = config_from_environment(["--app-id", "x"])
    assert (cfg.bootstrap, cfg.tick_interval_ms, cfg.partitions, cfg.app_id) == \
        ("k:1", 250, 3, "x")
    assert cfg.topics.settlements == "t1.pos.settlements"
    assert cfg.allowance_ms(POLICY) == POLICY.lateness_ms + cfg.tick_margin_ms
    monkeypatch.setenv("SETTLEWATCH_TICK_IDLE", "soon")
    with pytest.raises(Exception):
        config_from_environment()


def test_rejects_are_logged_at_most_n_a_second():
    now = [100.0]
    limit = RateLimitedLog(2, clock=lambda: now[0])
    assert [limit.allow()[0] for _ in range(4)] == [True, True, False, False]
    now[0] += 1
    assert limit.allow() == (True, 2)


# --------------------------------------------------------------------------- offset checking
K = ("t.pos.authorisations", 3)


def test_records_in_offset_order_pass_and_a_redelivered_one_is_dropped():
    check = OffsetChecker()
    assert check.admit(K, 10, committed=10) == "ok"
    assert check.admit(K, 11) == "ok"
    assert check.admit(K, 11) == "seen" and check.admit(K, 4) == "seen"
    assert check.expected[K] == 12


def test_a_record_after_missing_ones_is_a_hole():
    check = OffsetChecker()
    check.seed(K, 17)
    assert check.admit(K, 20) == "hole"  # 17-19 never reached the agent
    assert check.expected[K] == 17  # nothing was taken


def test_the_first_record_is_expected_at_the_committed_offset_when_it_is_known():
    check = OffsetChecker()
    assert check.admit(K, 9, committed=7) == "hole"
    assert OffsetChecker().admit(K, 1000) == "ok"  # a new app id reading from the end
    seeded = OffsetChecker()
    seeded.seed(K, 5)
    seeded.seed(K, 2)  # the first seed wins
    assert seeded.admit(K, 5) == "ok"
    seeded.forget([3])
    assert K not in seeded.expected


def test_restore_reads_the_output_from_before_the_oldest_finding_still_in_an_outbox():
    lp = LivePartition(0, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    tick(lp, T0 + 31 * MIN)
    out = lp.flush(WALL)  # sent at WALL, never acknowledged: stays in the outbox
    later = WALL + 6 * 60 * MIN
    clock = encode_clock(lp.reconciler.snapshot_clock(), later)  # its clock saved hours later
    assert LivePartition.horizon_ms(clock, later, 15 * MIN) == later - 15 * MIN
    assert LivePartition.horizon_ms(clock, later, 15 * MIN, out.writes) == WALL - 15 * MIN
