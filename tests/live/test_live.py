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
    clock_key,
    decode_tick,
    encode_clock,
    encode_tick,
    key_partition,
    outbox_key,
    published_key,
    split_key,
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
    return [(r["kind"], r["status"], r["subject"]) for _, _, r in flush.publish]


def restore(partition: int, table: dict, published=(), now_ms: int = WALL + 1):
    return LivePartition.restore(partition, POLICY, entries=table.items(),
                                 published=published, now_ms=now_ms)


def merchant_keys(writes, merchant: str) -> dict:
    """The reconciler-state writes of `merchant`: {state key: value or None}."""
    out = {}
    for key, value in writes:
        parts = split_key(key)
        if parts[1] == b"s" and parts[2].decode().split("\x1f")[0] == merchant:
            out[parts[2].decode()] = value
    return out


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
def test_a_finding_is_written_with_the_state_that_raised_it_before_it_is_published():
    lp = LivePartition(3, POLICY)
    fed(lp, [sale("a1", T0, 10_000), sale("a2", T0 + MIN, 5_000, merchant="m2")])
    lp.flush(WALL)
    tick(lp, T0 + 31 * MIN)  # a1's deadline (T0 + 30m, no grace) has passed, a2's has not
    out = lp.flush(WALL)
    assert records(out) == [("missing", "open", "a1")]
    mid, key, record = out.publish[0]
    assert record["detected_at"] == wire.format_time_ms(WALL)
    written = dict(out.writes)
    assert orjson.loads(written[outbox_key(3, *key)]) == record  # the outbox holds it
    assert merchant_keys(out.writes, "m1")  # a1's item changed (closed) in the same flush
    assert out.writes[-1][0] == clock_key(3)  # the clock last


def test_an_acknowledged_finding_leaves_the_outbox_at_the_next_flush():
    lp = LivePartition(0, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    tick(lp, T0 + 31 * MIN)
    (_, key, _), = lp.flush(WALL).publish
    assert lp.flush(WALL).writes == []  # not acknowledged yet: nothing to write
    lp.acked(key)
    assert lp.needs_flush
    out = lp.flush(WALL)
    assert dict(out.writes)[outbox_key(0, *key)] is None


def test_a_merchant_with_nothing_left_has_its_keys_deleted_from_the_table():
    lp = LivePartition(0, POLICY)
    table: dict = {}
    lp.on_input(AUTH, raw(sale("a1", T0, 10_000, status="declined")), WALL, 0)
    as_table(lp.flush(WALL), table)
    assert any(split_key(k)[1] == b"s" for k in table)
    tick(lp, T0 + 8 * 24 * 60 * MIN)  # closed, and dropped after keep_settled
    out = lp.flush(WALL)
    as_table(out, table)
    items = [k for k in table if split_key(k)[1] == b"s" and b"\x1fi\x1f" in k]
    assert items == [] and None in merchant_keys(out.writes, "m1").values()


def test_a_batch_writes_what_changed_not_what_the_merchant_holds():
    lp = LivePartition(0, POLICY)
    fed(lp, [sale(f"a{i}", T0 + i, 1_000 + i) for i in range(3_000)])
    big = lp.flush(WALL)
    fed(lp, [sale("z1", T0 + 5_000, 2_000)], offset=3_000)
    small = lp.flush(WALL)
    assert len(big.writes) >= 3_000
    # the new sale, its redelivery ids, the clock, and the journal of the three
    assert len(small.writes) <= 5
    assert sum(len(k) + len(v or b"") for k, v in small.writes) < 4_000


def test_a_merchant_with_200000_open_sales_is_written_in_small_keys_and_restored_whole():
    n = 200_000
    lp = LivePartition(2, POLICY)
    fed(lp, [sale(f"a{i}", T0 + i, 1_000 + i % 500) for i in range(n)])
    tick(lp, T0 + 5 * MIN)  # the clock reaches them: every sale is an open item
    table: dict = {}
    out = lp.flush(WALL)
    as_table(out, table)
    assert lp.reconciler.open_item_count() == n
    # no value grows with the merchant: state keys are small, journal records bounded
    assert max(len(k) + len(v) for k, v in table.items() if split_key(k)[1] != b"j") < 4096
    assert max(len(v) for k, v in table.items() if split_key(k)[1] == b"j") < 1024 * 1024
    restored, resend = restore(2, table)
    assert resend == [] and restored.reconciler.open_item_count() == n
    # One more credit costs a few keys, and settles its sale in the restored partition.
    fed(restored, [credit("c1", T0 + 10 * MIN, net(1_000 + 7), auth_ids=("a7",))],
        offset=n)
    again = restored.flush(WALL)
    assert len(again.writes) <= 6
    assert restored.reconciler.open_item_count() == n  # open until its deadline closes it


def test_restore_re_sends_outbox_findings_that_are_not_on_the_output_yet():
    lp = LivePartition(1, POLICY)
    fed(lp, [sale("a1", T0, 10_000), sale("b1", T0, 7_000, merchant="m2")])
    tick(lp, T0 + 31 * MIN)
    table: dict = {}
    out = lp.flush(WALL)
    as_table(out, table)
    published = [(r["anomaly_id"], r["status"], WALL) for mid, _, r in out.publish
                 if mid == "m2"]
    restored, resend = restore(1, table, published)
    assert [(mid, r["subject"]) for mid, _, r in resend] == [("m1", "a1")]
    assert restored.republished == 1
    # m2's finding is on the topic already: it leaves the outbox at the next flush
    gone = [k for k, v in restored.flush(WALL + 2).writes if v is None]
    assert [split_key(k)[1] for k in gone] == [b"o"]


def test_a_finding_raised_again_after_a_restore_is_not_published_twice():
    before = [sale("a1", T0, 10_000)]
    lp = LivePartition(0, POLICY)
    fed(lp, before)
    table: dict = {}
    as_table(lp.flush(WALL), table)  # state saved before the sale's deadline
    tick(lp, T0 + 31 * MIN)
    out = lp.flush(WALL)  # the missing finding is sent; say its table writes were lost
    published = [(r["anomaly_id"], r["status"], WALL) for _, _, r in out.publish]
    restored, resend = restore(0, table, published)
    assert resend == []
    tick(restored, T0 + 31 * MIN)  # the replay raises it again
    again = restored.flush(WALL + 2)
    assert again.publish == [] and restored.suppressed == 1


def test_a_partition_restored_from_its_table_keys_continues_like_one_that_never_stopped():
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
    restored, resend = restore(2, table, now_ms=WALL)
    assert resend == []
    fed(restored, first, offset=0)  # re-read from the committed offset: redeliveries
    fed(restored, second, offset=len(first))
    tick(restored, end)
    out2 = restored.flush(WALL)
    got = [r for _, _, r in out1.publish + out2.publish]
    want = [wire.finding_to_dict(f) | {"detected_at": wire.format_time_ms(WALL)}
            for f in expected]
    assert sorted(got, key=orjson.dumps) == sorted(want, key=orjson.dumps)
    assert {r["kind"] for r in got} >= {"late", "missing", "underpaid", "orphan"}


def test_restore_takes_only_its_own_partitions_keys():
    table: dict = {}
    for p in (0, 1):
        lp = LivePartition(p, POLICY)
        fed(lp, [sale(f"a{p}", T0, 10_000, merchant=f"m{p}")])
        tick(lp, T0 + MIN)
        as_table(lp.flush(WALL), table)
    restored, _ = restore(1, table)
    assert restored.reconciler.open_item_count() == 1
    assert {key_partition(k) for k in table} == {0, 1}


class FailingOnce(Reconciler):
    """A reconciler whose next clock move raises once (a bug in a timer, say)."""

    armed = True

    def advance_to(self, clock_ms):
        if self.armed:
            self.armed = False
            raise OverflowError("date value out of range")
        return super().advance_to(clock_ms)


def test_a_tick_whose_timer_raises_is_isolated_and_the_partition_goes_on():
    lp = LivePartition(0, POLICY)
    lp.reconciler = FailingOnce(POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    tick(lp, T0 + 31 * MIN)  # raises once, is logged and counted, then moves on
    assert lp.failures == 1
    assert records(lp.flush(WALL)) == [("missing", "open", "a1")]


def test_a_record_that_makes_the_reconciler_raise_is_dead_lettered_not_fatal():
    lp = LivePartition(0, POLICY)
    body = orjson.loads(raw(sale("a1", T0, 10_000)))
    body["event_time"] = "0001-01-01T00:00:00+01:00"  # outside the calendar
    dead = lp.on_input(AUTH, orjson.dumps(body), WALL, 3)
    fed(lp, [sale("a2", T0, 10_000)], offset=4)
    tick(lp, T0 + 31 * MIN)
    # rejected at the edge, or taken and harmless, or its timer isolated: the partition goes on
    assert ("missing", "open", "a2") in records(lp.flush(WALL))
    assert dead is None or dead.reason in ("bad_time", "processing_error")


class FailingEvent(Reconciler):
    """A reconciler that raises on the sale a-bad (a bug, say)."""

    def on_event(self, event):
        if event.auth_id == "a-bad":
            raise KeyError("boom")
        return super().on_event(event)


def test_a_record_the_reconciler_raises_on_becomes_a_processing_error_dead_letter():
    lp = LivePartition(0, POLICY)
    lp.reconciler = FailingEvent(POLICY)
    dead = lp.on_input(AUTH, raw(sale("a-bad", T0, 10_000)), WALL, 7, key=b"m1")
    assert dead is not None and dead.reason == "processing_error" and lp.failures == 1
    assert orjson.loads(dead.value)["offset"] == 7
    fed(lp, [sale("a2", T0, 10_000)], offset=8)
    tick(lp, T0 + 31 * MIN)
    assert records(lp.flush(WALL)) == [("missing", "open", "a2")]


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
def test_table_keys_carry_their_partition_ahead_of_the_state_key():
    lp = LivePartition(5, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    writes = lp.flush(WALL).writes
    assert {key_partition(k) for k, _ in writes} == {5}
    assert all(k.startswith(b"5\x1e") for k, _ in writes)
    assert key_partition(b"nope") is None and key_partition(b"x\x1ec") is None


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
    table: dict = {}
    as_table(lp.flush(WALL), table)  # sent at WALL, never acknowledged: stays in the outbox
    later = WALL + 6 * 60 * MIN
    clock = {clock_key(0): encode_clock(lp.reconciler.snapshot_clock(), later)}
    assert LivePartition.horizon_ms(clock.items(), later, 15 * MIN) == later - 15 * MIN
    table = {k: v for k, v in table.items() if split_key(k)[1] != b"j"}
    table.update(clock)  # its clock saved hours later
    assert LivePartition.horizon_ms(table.items(), later, 15 * MIN) == WALL - 15 * MIN


# ------------------------------------------------------------------ a kill in the middle of a flush
def _kill_scenario():
    first = [sale("a1", T0, 10_000), sale("a2", T0 + MIN, 20_000),
             sale("b1", T0 + 2 * MIN, 3_000, merchant="m2"),
             credit("c1", T0 + 20 * MIN, net(10_000), auth_ids=("a1",))]
    second = [credit("c2", T0 + 50 * MIN, net(20_000), auth_ids=("a2",)),  # late
              credit("c3", T0 + 25 * MIN, net(3_000) - 500, auth_ids=("b1",), merchant="m2"),
              sale("a3", T0 + 60 * MIN, 1_000), sale("a4", T0 + 61 * MIN, 2_000),
              credit("c4", T0 + 62 * MIN, net(1_000), auth_ids=("a3",)),
              credit("c5", T0 + 62 * MIN, net(1_000), auth_ids=("a3",)),  # duplicate
              credit("c6", T0 + 63 * MIN, 999, auth_ids=("zz",))]  # orphan in time
    return first, second


def test_a_kill_anywhere_in_a_flush_loses_no_finding_and_repeats_none():
    # The worker sends a flush's writes in order and dies after any prefix of them: the next
    # one restores that prefix, re-sends its outbox, re-reads the batch from the committed
    # offset, and in the end has published exactly what one uninterrupted reconciler finds.
    first, second = _kill_scenario()
    end = T0 + 2 * 24 * 60 * MIN
    want = sorted(orjson.dumps({k: v for k, v in wire.finding_to_dict(f).items()
                                if k != "detected_at"})
                  for f in feed(Reconciler(POLICY), first + second, until_ms=end))
    lp = LivePartition(0, POLICY)
    fed(lp, first)
    table: dict = {}
    out1 = lp.flush(WALL)
    as_table(out1, table)
    published = [r for _, _, r in out1.publish]
    fed(lp, second, offset=len(first))
    tick(lp, end)
    out2 = lp.flush(WALL)
    assert len(out2.writes) > 10
    for cut in range(len(out2.writes) + 1):
        kept = dict(table)
        as_table(type(out2)(writes=out2.writes[:cut]), kept)
        seen = [(r["anomaly_id"], r["status"], WALL) for r in published]
        restored, resend = restore(0, kept, seen, now_ms=WALL + 1)
        fed(restored, second, offset=len(first))  # from the committed offset
        tick(restored, end)
        again = restored.flush(WALL + 2)
        got = published + [r for _, _, r in resend] + [r for _, _, r in again.publish]
        got = sorted(orjson.dumps({k: v for k, v in r.items() if k != "detected_at"})
                     for r in got)
        assert got == want, f"killed after {cut} of {len(out2.writes)} writes"


def test_a_batch_restored_from_its_journal_is_written_again_before_the_journal_is_replaced():
    # Killed mid-flush: the next worker restores the batch from its journal, then flushes a
    # batch of its own, whose journal replaces the first. A third worker restoring from the
    # changelog then must find the first batch's writes individually, not only in the journal
    # that is gone (seen in the fault test: "a sale is missing" on restore, a crash loop).
    first, second = _kill_scenario()
    end = T0 + 2 * 24 * 60 * MIN
    lp = LivePartition(0, POLICY)
    fed(lp, first)
    table: dict = {}
    as_table(lp.flush(WALL), table)
    fed(lp, second, offset=len(first))
    out2 = lp.flush(WALL)
    journal = [k for k, _ in out2.writes if k.split(b"\x1e")[1] == b"j"]
    cut = len(journal) + 1  # the whole journal and one individual write made it
    as_table(type(out2)(writes=out2.writes[:cut]), table)
    second_worker, _ = restore(0, table, [], now_ms=WALL + 1)
    tick(second_worker, end)
    out3 = second_worker.flush(WALL + 2)
    as_table(out3, table)
    deleted = {k for k, v in out3.writes if v is None}
    # every key of the journalled batch is on the changelog by itself now (or deleted since)
    lost = [k for k, _ in out2.writes[cut:]
            if k.split(b"\x1e")[1] != b"c" and k not in table and k not in deleted]
    assert not lost, f"{len(lost)} writes of the journalled batch only ever were in its journal"
    third, _ = restore(0, table, [], now_ms=WALL + 3)
    assert third.reconciler.open_item_count() == second_worker.reconciler.open_item_count()


def test_a_marker_read_live_makes_the_unpaid_sale_missing_at_once_and_survives_a_restore():
    from datetime import date

    from streams.core.events import FileComplete
    # the sale is due T0 + 30m; the acquirer's file for the day says it is complete at T0 + 5m
    marker = FileComplete("F1", "m1", "acq-fast", date(2026, 10, 9).toordinal(), 1, 999,
                          "CNY", T0 + 5 * MIN)
    lp = LivePartition(0, POLICY)
    fed(lp, [sale("a1", T0, 10_000)])
    table: dict = {}
    as_table(lp.flush(WALL), table)
    restored, _ = restore(0, table)
    assert restored.on_input(SETTLEMENT, raw(marker), WALL, 1) is None
    tick(restored, T0 + 6 * MIN)
    out = restored.flush(WALL)
    assert sorted((k, s, subj) for k, s, subj in records(out)) == [
        ("file_incomplete", "open", "F1"), ("missing", "open", "a1")]
    missing, = [r for _, _, r in out.publish if r["kind"] == "missing"]
    assert missing["probable_cause"] == "not_in_settlement_file"
    # the same marker again, after another restore, is a redelivery: nothing more
    as_table(out, table)
    again, _ = restore(0, table, published=[(r["anomaly_id"], r["status"], WALL)
                                            for _, _, r in out.publish])
    assert again.on_input(SETTLEMENT, raw(marker), WALL, 1) is None
    tick(again, T0 + 7 * MIN)
    assert again.flush(WALL + 1).publish == []
    assert again.reconciler.stats.redeliveries == 1


# -- orjson's over-allocated bytes (streams.live.partition.dumps_kept) -------------------------

POLICY_FOR_SIZES = policy()


def _traced_bytes(make, n: int = 2_000) -> float:
    import tracemalloc
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [make(i) for i in range(n)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / n


def _item_value(i: int) -> dict:
    return {"key": f"A{i:010d}", "state": "open", "close_ms": 1_791_244_800_000 + i,
            "sales": [[f"A{i:010d}", None, "debit", 10_000 + i, True]]}


def test_orjson_still_over_allocates_the_bytes_it_returns():
    # The reason for dumps_kept (ijl/orjson#483). When this fails, orjson returns right-sized
    # bytes again and dumps_kept's copy can go.
    import orjson
    length = len(orjson.dumps(_item_value(1)))
    assert length < 200
    assert _traced_bytes(lambda i: orjson.dumps(_item_value(i))) > 1_000


def test_the_state_values_the_worker_keeps_are_right_sized():
    from streams.live.partition import dumps_kept
    assert dumps_kept(_item_value(7)) == orjson.dumps(_item_value(7))
    assert type(dumps_kept(_item_value(7))) is bytes
    length = len(dumps_kept(_item_value(1)))
    assert _traced_bytes(lambda i: dumps_kept(_item_value(i))) < length + 100


def test_a_partition_flush_writes_right_sized_values():
    import tracemalloc
    lp = LivePartition(0, POLICY_FOR_SIZES)
    for n in range(200):
        lp.on_input(AUTH, raw(sale(f"s{n}", T0 + n * 1_000, 10_000 + n)), WALL, n)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        writes = [v for _, v in lp.flush(WALL).writes if v is not None]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(writes) > 200  # the buffered sales, the journal, the clock
    traced = sum(s.size_diff for s in after.compare_to(before, "filename")
                 if "partition.py" in str(s.traceback))
    held = sum(len(v) for v in writes)
    # each value costs its length and a bytes header, not orjson's 4 KiB buffer
    assert traced < held + 120 * len(writes), (traced, held, len(writes))
