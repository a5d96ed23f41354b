"""Whole streams: a hand-checked multi-day scenario, and properties that hold for any stream.

The policy is the shipped sample (settlewatch.toml): acq-t1 batches T+1 10:00 (cut-off 23:00,
grace 1h), acq-instant per sale +30m (grace 5m), everyone else per sale T+1 12:00 (cut-off
23:00, grace 2h); Asia/Shanghai; National Day holidays Oct 1-7 2026, make-up Saturday Oct 10.
"""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed
from streams.sim.simulator import SimConfig, Simulation, parse_faults

from .builders import credit, ms, refund, reversal, sale

POLICY = default_policy()


def findings_of(events, until):
    return feed(Reconciler(POLICY), events, ms(until))


def comparable(findings):
    """Everything in a finding but detected_at, which says when the clock happened to pass."""
    return sorted((f.anomaly_id, f.kind.value, f.status.value, f.subject, f.auth_ids,
                   f.credit_ids, f.expected_minor, f.received_minor, f.deadline_ms,
                   f.event_time_ms, f.probable_cause) for f in findings)


def a(*args, **kw):  # a sale of shop-a, on acq-t1's batches
    return sale(*args, merchant="shop-a", acquirer="acq-t1", **kw)


def b(*args, **kw):  # a sale of shop-b, on acq-instant's per-sale credits
    return sale(*args, merchant="shop-b", acquirer="acq-instant", **kw)


def c(*args, **kw):  # a sale of shop-c, on a catch-all per-sale T+1 acquirer
    return sale(*args, merchant="shop-c", acquirer="acq-other", **kw)


HOLIDAY_WEEK = [
    # shop-a, batch T+1 10:00. Sep 30's batch: T+1 skips the holiday week -> Thu Oct 8 10:00.
    a("A1", "2026-09-30 12:00", 10_000, channel="debit", batch_id="A-0930"),   # net 9,950
    a("A2", "2026-09-30 20:00", 30_000, channel="credit", batch_id="A-0930"),  # net 29,820
    a("A3", "2026-09-30 21:00", 5_000, channel="qr", batch_id="A-0930", status="declined"),
    a("A4", "2026-09-30 22:00", 8_000, channel="debit", batch_id="A-0930"),
    reversal("A4", "2026-09-30 22:01", 8_000, merchant="shop-a", acquirer="acq-t1"),  # void
    # 23:30 is past the cut-off: trade date Oct 1 (a holiday) -> also due Oct 8 10:00.
    a("A5", "2026-09-30 23:30", 20_000, channel="qr", batch_id="A-1001"),      # net 19,924
    # shop-b, per sale +30m, on Saturday Oct 3 (a holiday: instant settlement runs anyway).
    b("B1", "2026-10-03 14:00", 12_345, channel="credit"),                     # net 12,271
    credit("cB1", "2026-10-03 14:10", 12_271, auth_ids=("B1",), merchant="shop-b",
           acquirer="acq-instant"),
    b("B2", "2026-10-03 15:00", 50_000, channel="debit"),                      # net 49,750
    b("B3", "2026-10-03 16:00", 500_000, channel="debit"),  # fee capped at 20.00: net 498,000
    credit("cB3", "2026-10-03 16:20", 498_000, auth_ids=("B3",), merchant="shop-b",
           acquirer="acq-instant"),
    credit("cB3-again", "2026-10-03 16:25", 498_000, auth_ids=("B3",), merchant="shop-b",
           acquirer="acq-instant"),
    b("B4", "2026-10-03 17:00", 10_000, channel="credit"),                     # net 9,940
    refund("B4", "2026-10-03 17:05", 3_000, merchant="shop-b", acquirer="acq-instant"),
    credit("cB4", "2026-10-03 17:20", 6_940, auth_ids=("B4",), merchant="shop-b",
           acquirer="acq-instant"),
    credit("cB2", "2026-10-03 19:00", 49_750, auth_ids=("B2",), merchant="shop-b",
           acquirer="acq-instant"),
    # Thu Oct 8: shop-a's batches are paid; A-1001 at 60 bps where QR's 38 bps was agreed.
    credit("cA0930", "2026-10-08 09:30", 39_770, batch_id="A-0930", merchant="shop-a",
           acquirer="acq-t1"),
    credit("cA1001", "2026-10-08 10:30", 19_880, batch_id="A-1001", merchant="shop-a",
           acquirer="acq-t1"),
    # shop-c, per sale T+1 12:00: Friday's sales are due on the make-up Saturday Oct 10.
    c("C1", "2026-10-09 10:00", 100_000, channel="qr_large"),                  # net 99,450
    c("C2", "2026-10-09 11:00", 20_000, channel="credit"),                     # net 19,880
    credit("cX", "2026-10-09 12:00", 4_000, auth_ids=("ghost",), merchant="shop-c",
           acquirer="acq-other"),
    c("C3", "2026-10-09 13:00", 10_000, channel="credit"),                     # net 9,940
    credit("cC3", "2026-10-10 10:00", 9_940, auth_ids=("C3",), merchant="shop-c",
           acquirer="acq-other"),
    credit("cC2", "2026-10-10 11:00", 19_880, auth_ids=("C2",), merchant="shop-c",
           acquirer="acq-other"),
    refund("C3", "2026-10-10 12:00", 2_000, merchant="shop-c", acquirer="acq-other"),
    # Saturday Oct 10 is a business day: C4's trade date is Oct 10, due Mon Oct 12 12:00.
    c("C4", "2026-10-10 13:00", 30_000, channel="credit"),                     # net 29,820
    # The acquirer skipped the make-up Saturday: C1 is paid Monday. C3's refund is netted
    # into C4's credit.
    credit("cC1", "2026-10-12 09:00", 99_450, auth_ids=("C1",), merchant="shop-c",
           acquirer="acq-other"),
    credit("cC4", "2026-10-12 10:00", 27_820, auth_ids=("C4",), merchant="shop-c",
           acquirer="acq-other"),
]

HOLIDAY_WEEK_FINDINGS = [
    # (kind, status, merchant, subject, expected, received, credit_ids, cause, event time)
    ("missing", "open", "shop-b", "B2", 49_750, 0, (), None, "2026-10-03 15:35"),
    ("duplicate", "open", "shop-b", "B3", 498_000, 498_000, ("cB3", "cB3-again"),
     "duplicate_credit", "2026-10-03 16:35"),
    ("missing", "resolved", "shop-b", "B2", 49_750, 49_750, ("cB2",), None, "2026-10-03 19:00"),
    ("late", "open", "shop-b", "B2", 49_750, 49_750, ("cB2",), "holiday_delay",
     "2026-10-03 19:00"),
    ("underpaid", "open", "shop-a", "A-1001", 19_924, 19_880, ("cA1001",), "fee_rate_mismatch",
     "2026-10-08 11:00"),
    ("orphan", "open", "shop-c", "cX", 0, 4_000, ("cX",), None, "2026-10-10 12:00"),
    ("missing", "open", "shop-c", "C1", 99_450, 0, (), None, "2026-10-10 14:00"),
    ("missing", "resolved", "shop-c", "C1", 99_450, 99_450, ("cC1",), None, "2026-10-12 09:00"),
    ("late", "open", "shop-c", "C1", 99_450, 99_450, ("cC1",), "holiday_delay",
     "2026-10-12 09:00"),
    ("underpaid", "open", "shop-c", "C4", 29_820, 27_820, ("cC4",), "refund_netted",
     "2026-10-12 14:00"),
]


def test_a_holiday_week_across_three_acquirers_gives_exactly_these_findings():
    findings = findings_of(HOLIDAY_WEEK, "2026-10-13 00:00")
    assert [(f.kind.value, f.status.value, f.merchant_id, f.subject, f.expected_minor,
             f.received_minor, f.credit_ids, f.probable_cause, f.event_time_ms)
            for f in findings] == [(*row[:-1], ms(row[-1])) for row in HOLIDAY_WEEK_FINDINGS]


def test_the_holiday_week_gives_the_same_findings_fed_one_topic_after_the_other_per_day():
    # Real feeds deliver in bursts; within the lateness nothing may change.
    by_time = sorted(HOLIDAY_WEEK, key=lambda e: e.event_time_ms)
    assert comparable(findings_of(by_time, "2026-10-13 00:00")) == comparable(
        findings_of(HOLIDAY_WEEK, "2026-10-13 00:00"))


# ---- properties -----------------------------------------------------------------------------


def _stream(seed: int, hours: int = 30):
    cfg = SimConfig(start_ms=ms("2026-10-08T00:00:00Z"),
                    end_ms=ms("2026-10-08T00:00:00Z") + hours * 3_600_000,
                    merchants=25, sales_per_second=0.02, seed=seed,
                    faults=parse_faults("late=5%,missing=5%,duplicate=4%,underpaid=5%,"
                                        "overpaid=3%,orphan=2%,refund_netted=4%"))
    return list(Simulation(cfg, POLICY).events())


def _shuffle_within(events, rng: random.Random, lateness_ms: int, redeliver: float = 0.0):
    """An arrival order in which no event is older than the clock when it arrives.

    Each event (and each redelivered copy) arrives at its event time plus a delay of at most
    the lateness, so every event seen before it is at most `lateness` newer than it.
    """
    keyed = []
    for n, e in enumerate(events):
        keyed.append((e.event_time_ms + rng.randint(0, lateness_ms), n, e))
        if redeliver and rng.random() < redeliver:
            keyed.append((e.event_time_ms + rng.randint(0, lateness_ms), n, e))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [e for _, _, e in keyed]


UNTIL = "2026-10-16T00:00:00Z"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.integers(0, 10_000))
def test_any_arrival_order_within_the_lateness_gives_the_same_findings(seed, order):
    events = _stream(seed)
    baseline = findings_of(sorted(events, key=lambda e: e.event_time_ms), UNTIL)
    shuffled = _shuffle_within(events, random.Random(order), POLICY.lateness_ms)
    r = Reconciler(POLICY)
    assert comparable(feed(r, shuffled, ms(UNTIL))) == comparable(baseline)
    assert r.stats.late_data == 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.integers(0, 10_000))
def test_redelivering_events_is_counted_and_changes_no_finding(seed, order):
    events = _stream(seed)
    baseline = findings_of(sorted(events, key=lambda e: e.event_time_ms), UNTIL)
    again = _shuffle_within(events, random.Random(order), POLICY.lateness_ms, redeliver=0.2)
    r = Reconciler(POLICY)
    assert comparable(feed(r, again, ms(UNTIL))) == comparable(baseline)
    assert r.stats.redeliveries == len(again) - len(events)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.05, 0.95))
def test_a_restart_from_snapshots_at_any_point_changes_no_finding(seed, cut):
    events = _stream(seed, hours=20)
    baseline = findings_of(events, UNTIL)
    n = int(len(events) * cut)
    first = Reconciler(POLICY)
    out = []
    for e in events[:n]:
        out += first.on_event(e)
    second = Reconciler(POLICY)
    second.restore_clock(first.snapshot_clock())
    for mid in first.take_dirty():
        snap = first.snapshot_merchant(mid)
        if snap is not None:
            second.restore_merchant(mid, snap)
    out += second.drain()
    out += feed(second, events[n:], ms(UNTIL))
    assert comparable(out) == comparable(baseline)


def test_every_injected_late_duplicate_and_orphan_is_found():
    events = _stream(11, hours=48)
    sim_truth = Simulation(SimConfig(start_ms=0, end_ms=0), POLICY)  # for the type only
    del sim_truth
    cfg = SimConfig(start_ms=ms("2026-10-08T00:00:00Z"),
                    end_ms=ms("2026-10-08T00:00:00Z") + 48 * 3_600_000, merchants=25,
                    sales_per_second=0.02, seed=11,
                    faults=parse_faults("late=5%,missing=5%,duplicate=4%,underpaid=5%,"
                                        "overpaid=3%,orphan=2%,refund_netted=4%"))
    sim = Simulation(cfg, POLICY)
    events = list(sim.events())
    findings = findings_of(events, UNTIL)
    found = {(f.kind.value, f.merchant_id, f.subject) for f in findings}
    for fault in sim.injected:
        if fault.kind in ("late", "duplicate", "orphan", "missing"):
            kind = fault.kind
            assert (kind, fault.merchant_id, fault.subject) in found, fault
