"""Retention (DESIGN.md section 3): open missing items are open state until missing_horizon;
the ids that recognise a redelivery are kept redelivery_window, apart from the items."""
from __future__ import annotations

from streams.core.events import FindingKind
from streams.core.reconcile import MISSING_HORIZON_PASSED, Reconciler, feed

from .builders import DAY, credit, ms, net, policy, refund, sale

TIME = {"lateness": "10m", "orphan_after": "1d", "max_future": "15m", "keep_settled": "7d",
        "missing_horizon": "30d", "redelivery_window": "35d"}


def kinds(findings):
    return [(f.kind.value, f.status.value, f.subject, f.probable_cause) for f in findings]


def test_a_credit_eight_days_after_its_deadline_resolves_the_missing_and_is_late():
    r = Reconciler(policy(time=TIME))
    missing = feed(r, [sale("a1", "2026-10-09 10:00", 10_000)], ms("2026-10-09 12:00"))
    assert kinds(missing) == [("missing", "open", "a1", None)]
    r.advance_to(ms("2026-10-17 11:00"))  # past keep_settled: the item is still kept
    late = r.on_event(credit("c1", "2026-10-17 11:00", net(10_000), auth_ids=("a1",)))
    late += r.advance_to(ms("2026-10-19 00:00"))
    # (a weekend lies between: the cause guessed is holiday_delay)
    assert kinds(late) == [("missing", "resolved", "a1", None),
                           ("late", "open", "a1", "holiday_delay")]
    assert late[0].anomaly_id == missing[0].anomaly_id


def test_a_missing_item_is_dropped_and_counted_once_the_horizon_passes():
    r = Reconciler(policy(time=TIME))
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000)], ms("2026-10-09 12:00"))
    close = ms("2026-10-09 10:30")
    r.advance_to(close + 30 * DAY)  # exactly at the horizon: not passed yet
    assert r.stats.missing_expired == 0 and r.merchants["m1"].items
    r.advance_to(close + 30 * DAY + 1)
    assert r.stats.missing_expired == 1 and "m1" not in r.merchants


def test_a_credit_after_the_missing_horizon_is_an_orphan_that_says_why():
    r = Reconciler(policy(time=TIME))
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000)], ms("2026-11-10 00:00"))
    r.on_event(credit("c1", "2026-11-10 00:00", net(10_000), auth_ids=("a1",)))
    found = r.advance_to(ms("2026-11-12 00:00"))
    assert kinds(found) == [("orphan", "open", "c1", MISSING_HORIZON_PASSED)]


def test_a_sale_redelivered_three_weeks_later_is_a_redelivery_not_a_new_missing():
    r = Reconciler(policy(time=TIME))
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         ms("2026-10-30 00:00"))
    assert "m1" not in r.merchants  # settled and dropped after keep_settled
    again = [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))]
    found = [f for e in again for f in r.on_event(e)] + r.advance_to(ms("2026-11-02 00:00"))
    assert found == []
    assert r.stats.redeliveries == 2


def test_a_refund_redelivered_after_its_sale_is_dropped_is_a_redelivery():
    r = Reconciler(policy(time=TIME))
    refunded = refund("a1", "2026-10-09 10:05", 1_000, event_id="r1")
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000), refunded,
             credit("c1", "2026-10-09 10:20", net(10_000) - 1_000, auth_ids=("a1",))],
         ms("2026-10-30 00:00"))
    assert r.on_event(refunded) == [] and r.stats.redeliveries == 1
    assert "m1" not in r.merchants  # not kept as a deduction


def test_redelivery_ids_are_forgotten_after_the_window():
    r = Reconciler(policy(time=TIME))
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         ms("2026-10-30 00:00"))
    assert r._seen  # private: the compact id store holds a1 and c1
    # kept 35 days from the end of the events' UTC day (Oct 9)
    r.advance_to(ms("2026-10-10T00:00:00Z") + 35 * DAY)
    assert r._seen
    r.advance_to(ms("2026-10-10T00:00:00Z") + 35 * DAY + 1)
    assert not r._seen


def test_a_credit_for_a_settled_and_dropped_sale_is_still_a_plain_orphan():
    r = Reconciler(policy(time=TIME))
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         ms("2026-10-20 00:00"))
    r.on_event(credit("c2", "2026-10-20 00:00", net(10_000), auth_ids=("a1",)))
    assert [(f.kind, f.probable_cause) for f in r.advance_to(ms("2026-10-22 00:00"))] == [
        (FindingKind.ORPHAN, None)]
