"""The early warning: each acquirer's settlement baseline, learned from its own credits, and a
warning when today's credits run behind it while the deadline is still ahead."""
from __future__ import annotations

import copy
import random

import orjson
import pytest

from streams.core.earlywarning import EarlyWarning, SnapshotError, duration_words, money_words
from streams.core.events import Credit, FindingKind, Status
from streams.core.policy import PolicyError
from streams.core.reconcile import Reconciler
from tests.core.builders import DAY, HOUR, MIN, TEST_POLICY, credit, ms, policy, sale

ACQ = "acq-batch"  # TEST_POLICY: batch, T+1 10:00, cut-off 23:00, grace 1h


def _policy(**warning):
    doc = {**TEST_POLICY, "early_warning": {"min_due_sales": 10, **warning}}
    return policy(**doc)


class Hooks:
    """A reconciler observer that hands the early-warning hooks to an EarlyWarning."""

    def __init__(self, ew: EarlyWarning) -> None:
        self.on_sale_due = ew.on_sale_due
        self.on_sale_paid = ew.on_sale_paid

    def on_settled(self, *a, **k): pass
    def on_item_opened(self, *a, **k): pass
    def on_item_closed(self, *a, **k): pass
    def on_late_data(self, *a, **k): pass
    def on_redelivery(self, *a, **k): pass


def traffic(p, first_day: str, days: int, *, merchants: int = 30, pays_at: str = "05:00",
            slow_from: str | None = None, slow_by_ms: int = 0, seed: int = 3) -> list:
    """Each merchant sells 3 times a trade day (10:00-20:00 local) in one batch; the acquirer
    books each batch's credit around `pays_at` local (+-40 min) on its due day, and from the
    due day `slow_from` on, `slow_by_ms` later."""
    rng = random.Random(seed)
    cycle = p.cycle_for(ACQ, "m0")
    start = ms(f"{first_day} 00:00")
    hh, mm = map(int, pays_at.split(":"))
    events = []
    for day in range(days):
        day_ms = start + day * DAY
        trade_day = p.trade_day(day_ms + 12 * HOUR, cycle)
        deadline = p.batch_deadline_ms(trade_day, cycle)
        # the credit's local clock time on the due day: deadline is 10:00 local
        pay = deadline - 10 * HOUR + hh * HOUR + mm * MIN
        for m in range(merchants):
            batch = f"B{m}-{trade_day}"
            total = 0
            for k in range(3):
                at = day_ms + 10 * HOUR + rng.randrange(10 * HOUR)
                amount = rng.randrange(1_000, 100_000)
                total += amount - (amount * 60 + 5000) // 10_000
                events.append(sale(f"A{m}-{day}-{k}", at, amount, merchant=f"m{m}",
                                   acquirer=ACQ, batch_id=batch))
            at = pay + int(rng.gauss(0, 40 * MIN))
            if slow_from is not None and deadline >= ms(f"{slow_from} 00:00"):
                at += slow_by_ms
            events.append(credit(f"C{m}-{day}", at, total, merchant=f"m{m}",
                                 acquirer=ACQ, batch_id=batch))
    return sorted(events, key=lambda e: e.event_time_ms)


def feed_hourly(p, events, rec: Reconciler, until: int, after_hour=lambda: None) -> list:
    """Feed the events an hour of event time at a time, moving the reconciler's clock to each
    hour as the live worker's wall clock does on a quiet feed (sales stop at night), and call
    `after_hour()` after each; return the findings."""
    findings = []
    hour = events[0].event_time_ms // HOUR * HOUR + HOUR
    i = 0
    while hour <= until:
        j = i
        while j < len(events) and events[j].event_time_ms < hour:
            j += 1
        findings += rec.on_events(events[i:j])
        findings += rec.advance_to(hour - p.lateness_ms)
        after_hour()
        i, hour = j, hour + HOUR
    return findings


def run(p, events, ew: EarlyWarning | None = None, until: int | None = None, *,
        hooks: bool = True):
    """Feed hourly through a reconciler whose hooks go to `ew`; return (warnings raised,
    findings)."""
    ew = ew or EarlyWarning(p)
    rec = Reconciler(p, Hooks(ew) if hooks else None)
    raised: list = []
    end = until or events[-1].event_time_ms + DAY
    findings = feed_hourly(p, events, rec, end, lambda: raised.extend(ew.advance_to(rec.clock_ms)))
    done = [e for e in events if e.event_time_ms >= end]
    findings += rec.on_events(done) + rec.advance_to(end)
    raised += ew.advance_to(rec.clock_ms)
    return raised, findings


def test_a_steady_acquirer_never_warns():
    p = _policy()
    raised, findings = run(p, traffic(p, "2026-11-02", 35))
    assert raised == []
    assert not [f for f in findings if f.kind == FindingKind.MISSING]


def test_a_slowdown_warns_before_the_first_missing_by_more_than_an_hour():
    p = _policy()
    # from Monday 30 November on the acquirer books at 09:30 instead of 05:00: past 10:00 + 1h
    # for the slower part of each day's batches
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=4 * HOUR + 30 * MIN)
    raised, findings = run(p, events)
    first_missing = min(f.event_time_ms for f in findings
                        if f.kind == FindingKind.MISSING and f.status == Status.OPEN)
    assert raised, "no early warning"
    first = raised[0]
    assert first.deadline_ms >= ms("2026-11-30 00:00")
    assert first_missing - first.at_ms >= HOUR
    assert first.at_ms < first.deadline_ms  # while the deadline is still ahead


def test_a_holiday_week_does_not_warn():
    # TEST_POLICY: 1-7 October holidays (3, 4 a weekend), 27 September and 10 October worked:
    # the week's sales are all due on 8 October, and paid by then as usual
    p = _policy()
    raised, findings = run(p, traffic(p, "2026-09-01", 45))
    assert raised == []
    due_8th = [f for f in findings if f.kind == FindingKind.MISSING]
    assert due_8th == []


def test_the_warning_says_who_is_how_late_against_which_usual_time_and_what_is_due():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    raised, _ = run(p, events)
    w = raised[0]
    assert w.acquirer == ACQ and w.channel == "credit"
    assert w.text.startswith(f"{ACQ} (credit) is paying ")
    assert " later than its usual 0" in w.text  # about 05:00 local
    assert f"; {w.due_sales:,} sales, " in w.text and w.text.endswith(" CNY due by 10:00")
    assert w.due_sales > 0 and w.due_minor[0][0] == "CNY"
    assert w.later_ms >= HOUR and w.behind_band_ms >= p.early_warning.min_lag_ms
    assert w.paid_share < w.expected_share


def test_words_for_durations_and_money():
    assert duration_words(3 * HOUR) == "3 h"
    assert duration_words(2 * HOUR + 15 * MIN) == "2 h 15 min"
    assert duration_words(45 * MIN) == "45 min"
    assert money_words(230_000_000, "CNY") == "2.3M"
    assert money_words(4_520_000, "CNY") == "45.2k"
    assert money_words(81_250, "CNY") == "812.50"
    assert money_words(81_250, "JPY") == "81.2k"


def test_a_restarted_module_does_not_warn_until_it_has_relearned_min_history_days():
    p = _policy(min_history=5)
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    # a worker started on 27 November: three settle days of its own before the slowdown
    late_start = [e for e in events if e.event_time_ms >= ms("2026-11-27 00:00")]
    ew = EarlyWarning(p)
    raised, _ = run(p, late_start, ew)
    assert raised == []
    # the same days seen from the start warn
    assert run(p, events)[0]


def test_a_restored_baseline_warns_at_once():
    p = _policy()
    learned = EarlyWarning(p)
    run(p, traffic(p, "2026-11-02", 25), learned, until=ms("2026-11-27 00:00"))
    snap = learned.snapshot()
    assert snap["curves"] and all(len(days) >= 5 for days in snap["curves"].values())
    ew = EarlyWarning(p)
    ew.restore(snap)
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    raised, _ = run(p, [e for e in events if e.event_time_ms >= ms("2026-11-27 00:00")], ew)
    assert raised and raised[0].deadline_ms >= ms("2026-11-30 00:00")


def test_a_disrupted_deadline_neither_learns_nor_warns():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    ew = EarlyWarning(p)
    before = [e for e in events if e.event_time_ms < ms("2026-11-30 00:00")]
    after = [e for e in events if e.event_time_ms >= ms("2026-11-30 00:00")]
    rec = Reconciler(p, Hooks(ew))
    rec.on_events(before)
    ew.advance_to(rec.clock_ms)
    learned = ew.history_days(ACQ, "credit")
    ew.disrupt()  # e.g. a partition moved: the counters of the open deadlines are partial
    # the deadline of 30 November is open now (its sales of the 29th are in)
    raised = []
    for e in after:
        raised += [w for w in (rec.on_event(e) and []) or ew.advance_to(rec.clock_ms)]
    assert all(w.deadline_ms > ms("2026-11-30 10:00") for w in raised)
    assert ew.history_days(ACQ, "credit") >= learned  # later, undisturbed days still learn


def test_a_feed_with_the_hooks_gives_the_same_findings_as_without():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    with_hooks = run(p, events)[1]
    without = run(p, events, hooks=False)[1]
    assert [f.anomaly_id for f in with_hooks] == [f.anomaly_id for f in without]
    assert with_hooks == without


def test_a_disabled_early_warning_learns_but_never_warns():
    p = _policy(enabled=False)
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    ew = EarlyWarning(p)
    raised, _ = run(p, events, ew)
    assert raised == [] and ew.active() == []
    assert ew.history_days(ACQ, "credit") >= 5


def test_the_band_shows_the_usual_share_the_slow_share_and_today():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    ew = EarlyWarning(p)
    run(p, [e for e in events if e.event_time_ms < ms("2026-11-30 08:00")], ew,
        until=ms("2026-11-30 08:00"))
    sunday = p.local_day(ms("2026-11-29 12:00"))
    (band,) = [b for b in ew.bands()
               if b.deadline_ms == ms("2026-11-30 10:00") and b.trade_day == sunday]
    assert band.history >= 5 and band.warning
    assert band.expected_share >= band.low_share > band.paid_share
    assert band.due_sales > 0


@pytest.mark.parametrize("table, key", [
    ({"min_lag": "soon"}, "early_warning.min_lag"),
    ({"band_pct": 70}, "early_warning.band_pct"),
    ({"lookback": "1m", "step": "15m"}, "early_warning.lookback"),
    ({"enabled": "yes"}, "early_warning.enabled"),
    ({"window_days": 3}, "early_warning"),
])
def test_a_bad_early_warning_setting_is_refused_with_its_key(table, key):
    with pytest.raises(PolicyError) as err:
        policy(**{**TEST_POLICY, "early_warning": table})
    assert key in str(err.value)


def test_the_shipped_policy_has_the_documented_early_warning_defaults():
    from streams.core.policy import EarlyWarningConfig, default_policy
    assert default_policy().early_warning == EarlyWarningConfig()


def test_a_backlog_read_in_one_go_learns_the_curve_of_a_feed_read_as_it_happens():
    p = _policy()
    events = traffic(p, "2026-11-02", 20)
    start = ms("2026-11-03 00:00")
    hourly = EarlyWarning(p)
    run(p, events, hourly, until=ms("2026-11-22 12:00"))
    # the same days, the reconciler's clock moved once a day (a quiet feed without ticks, or
    # a worker catching up on a backlog): each step still counts only the credits booked by it
    daily = EarlyWarning(p)
    rec = Reconciler(p, Hooks(daily))
    rec.on_events([e for e in events if e.event_time_ms < start])
    daily.advance_to(rec.clock_ms)
    for day in range(1, 20):
        cut = start + day * DAY
        rec.on_events([e for e in events if cut - DAY <= e.event_time_ms < cut])
        rec.advance_to(cut)
        daily.advance_to(rec.clock_ms)
    learned = {t: s for t, _, s in hourly.snapshot()["curves"][f"{ACQ}\x1fcredit"]}
    again = {t: s for t, _, s in daily.snapshot()["curves"][f"{ACQ}\x1fcredit"]}
    common = set(learned) & set(again)  # the first days differ by when each module started
    assert len(common) >= 10
    for t in sorted(common):
        shares = learned[t]
        # where the hourly feed had sales due, both agree; before, a jump already counts them
        assert [x for x in shares if x is not None] == \
            [y for x, y in zip(shares, again[t]) if x is not None], t


# -- a per-sale acquirer paying each sale on its own over the day ------------------------------

STD = "acq-std"  # per-sale, T+1 12:00, cut-off 23:00, grace 2h (as the shipped policy's "*")


def _per_sale_policy(**warning):
    cycles = [{"acquirer": STD, "mode": "per_sale", "due": "T+1 12:00", "cutoff": "23:00",
               "grace": "2h"}, *TEST_POLICY["cycles"]]
    return policy(**{**TEST_POLICY, "cycles": cycles,
                     "early_warning": {"min_due_sales": 10, **warning}})


def per_sale_traffic(p, first_day: str, days: int, *, sales_per_day: int = 120,
                     slow_from: str | None = None, slow_by_ms: int = 0, seed: int = 5) -> list:
    """Sales all day long (00:00-23:00 local), each credited on its own somewhere between 20%
    and 95% of its time to its deadline (T+1 12:00), as the simulator's per-sale acquirer; the
    credits of the deadlines from `slow_from` on are booked `slow_by_ms` later."""
    rng = random.Random(seed)
    cycle = p.cycle_for(STD, "m0")
    start = ms(f"{first_day} 00:00")
    slow_ms = ms(f"{slow_from} 00:00") if slow_from else None
    events = []
    for day in range(days):
        for k in range(sales_per_day):
            at = start + day * DAY + rng.randrange(23 * HOUR)
            m = f"m{k % 20}"
            amount = rng.randrange(1_000, 100_000)
            auth = f"S{day}-{k}"
            events.append(sale(auth, at, amount, merchant=m, acquirer=STD))
            deadline = p.deadline_ms(at, cycle)
            paid = at + int((deadline - at) * rng.uniform(0.2, 0.95))
            if slow_ms is not None and deadline >= slow_ms:
                paid += slow_by_ms
            events.append(credit(f"CS{day}-{k}", paid, amount - (amount * 60 + 5000) // 10_000,
                                 merchant=m, acquirer=STD, auth_ids=(auth,)))
    return sorted(events, key=lambda e: e.event_time_ms)


def test_a_steady_per_sale_acquirer_never_warns():
    p = _per_sale_policy()
    ew = EarlyWarning(p)
    raised, findings = run(p, per_sale_traffic(p, "2026-11-02", 28), ew)
    assert ew.history_days(STD, "credit") >= 20
    assert raised == []


def test_a_per_sale_acquirer_paying_three_hours_later_warns_an_hour_before_its_first_missing():
    p = _per_sale_policy()
    events = per_sale_traffic(p, "2026-11-02", 30, slow_from="2026-11-25", slow_by_ms=3 * HOUR)
    raised, findings = run(p, events)
    first_missing = min(f.event_time_ms for f in findings
                        if f.kind == FindingKind.MISSING and f.status == Status.OPEN)
    assert first_missing >= ms("2026-11-25 12:00")  # the first slowed deadline + grace at best
    assert raised, "no early warning"
    first = raised[0]
    assert first.acquirer == STD and first.deadline_ms >= ms("2026-11-25 00:00")
    assert first_missing - first.at_ms >= HOUR
    assert first.later_ms >= 90 * MIN  # against the usual day: about the 3 h it slowed by
    assert "later than" in first.text


def test_a_per_sale_acquirer_that_stops_paying_warns_while_its_deadline_is_ahead():
    p = _per_sale_policy()
    events = per_sale_traffic(p, "2026-11-02", 30)
    cut = ms("2026-11-25 03:00")  # from then on no credit comes at all
    events = [e for e in events if not isinstance(e, Credit) or e.event_time_ms < cut]
    raised, _ = run(p, events)
    assert raised and raised[0].at_ms < ms("2026-11-25 12:00")
    assert raised[0].deadline_ms == ms("2026-11-25 12:00")


def test_a_batch_acquirer_learns_no_per_sale_days():
    p = _policy()
    ew = EarlyWarning(p)
    run(p, traffic(p, "2026-11-02", 12), ew)
    assert ew.history_days(ACQ, "credit") >= 5
    assert ew.fraction_baseline(ACQ, "credit") is None


def test_a_per_sale_feed_with_the_hooks_gives_the_same_findings_as_without():
    p = _per_sale_policy()
    events = per_sale_traffic(p, "2026-11-02", 20, slow_from="2026-11-16", slow_by_ms=3 * HOUR)
    with_hooks = run(p, events)[1]
    without = run(p, events, hooks=False)[1]
    assert any(f.kind == FindingKind.MISSING for f in with_hooks)
    assert with_hooks == without


def test_the_band_of_a_per_sale_deadline_is_read_from_its_own_sales_windows():
    p = _per_sale_policy()
    ew = EarlyWarning(p)
    events = per_sale_traffic(p, "2026-11-02", 30, slow_from="2026-11-25", slow_by_ms=3 * HOUR)
    rec = Reconciler(p, Hooks(ew))
    feed_hourly(p, events, rec, ms("2026-11-25 06:00"), lambda: ew.advance_to(rec.clock_ms))
    band = next(b for b in ew.bands() if b.deadline_ms == ms("2026-11-25 12:00"))
    assert band.warning
    assert band.low_share <= band.expected_share
    assert band.paid_share < band.low_share  # today below even the slow day
    assert band.later_ms >= 90 * MIN


# -- the snapshot a worker persists --------------------------------------------------------------

def _mixed_traffic(p, first_day: str, days: int, **slow) -> list:
    """The batch acquirer and the per-sale one together, the slowdown (if any) on both."""
    both = traffic(p, first_day, days, **slow) + per_sale_traffic(p, first_day, days, **slow)
    return sorted(both, key=lambda e: e.event_time_ms)


def _continue(p, ew: EarlyWarning, events, until: int) -> tuple[list, list]:
    """Feed `events` through a fresh reconciler into `ew`, hourly; (warnings raised, the bands
    read after every hour)."""
    rec = Reconciler(p, Hooks(ew))
    raised, bands = [], []

    def hour():
        raised.extend(ew.advance_to(rec.clock_ms))
        bands.append(ew.bands())
    feed_hourly(p, events, rec, until, hour)
    return raised, bands


def test_a_baseline_restored_from_its_snapshot_gives_the_same_warnings_and_bands():
    p = _per_sale_policy()
    learned = EarlyWarning(p)
    run(p, _mixed_traffic(p, "2026-11-02", 20), learned, until=ms("2026-11-24 00:00"))
    assert learned.history_days(ACQ, "credit") >= 5 and learned.fraction_baseline(STD, "credit")
    # what a worker writes and reads back: JSON bytes
    snap = orjson.loads(orjson.dumps(learned.snapshot()))
    restored = EarlyWarning(p)
    assert restored.restore(snap) == sum(len(d) for d in snap["curves"].values())
    restored.advance_to(learned.clock_ms)
    assert restored.snapshot() == learned.snapshot()
    # the next week, with both acquirers slowing down from Monday: the same warnings, the same
    # band every hour (per-sale days included: the sale-by-sale rule judges acq-std). Sales
    # from Thursday on, so that both modules see each next deadline's whole lookback (the
    # restored one starts at its restore, as a restarted worker does)
    events = _mixed_traffic(p, "2026-11-26", 8, slow_from="2026-11-30", slow_by_ms=4 * HOUR)
    until = ms("2026-12-04 00:00")
    raised, bands = _continue(p, learned, events, until)
    raised_again, bands_again = _continue(p, restored, events, until)
    assert {w.acquirer for w in raised} == {ACQ, STD}
    assert raised_again == raised
    assert bands_again == bands


def test_a_fresh_module_without_the_snapshot_warns_differently():
    # the test above would pass trivially if warnings needed no learned days: they do
    p = _per_sale_policy()
    events = _mixed_traffic(p, "2026-11-26", 8, slow_from="2026-11-30", slow_by_ms=4 * HOUR)
    raised, _ = _continue(p, EarlyWarning(p), events, ms("2026-12-04 00:00"))
    assert STD not in {w.acquirer for w in raised}


def _learned(p) -> EarlyWarning:
    ew = EarlyWarning(p)
    run(p, traffic(p, "2026-11-02", 12), ew, until=ms("2026-11-16 00:00"))
    return ew


@pytest.mark.parametrize("damage, kind, words", [
    (lambda s: [s], "corrupt", "no format field"),
    (lambda s: {**s, "format": 99}, "incompatible", "format 99"),
    (lambda s: {**s, "step_ms": 30 * MIN}, "incompatible", "step_ms 1800000"),
    (lambda s: {**s, "lookback_ms": DAY}, "incompatible", "lookback"),
    (lambda s: {**s, "curves": []}, "corrupt", "tables"),
    (lambda s: {**s, "curves": {"no-separator": []}}, "corrupt", "acquirer"),
    (lambda s: {**s, "curves": {k: [[r[0], r[1], r[2][:-1]] for r in v]
                                for k, v in s["curves"].items()}}, "corrupt", "expected 192"),
    (lambda s: {**s, "curves": {k: [[r[0], "7d", r[2]] for r in v]
                                for k, v in s["curves"].items()}}, "corrupt", "kind '7d'"),
    (lambda s: {**s, "curves": {k: [[r[0], r[1], ["x"] * len(r[2])] for r in v]
                                for k, v in s["curves"].items()}}, "corrupt", "share 'x'"),
    (lambda s: {**s, "curves": {k: [[str(r[0]), r[1], r[2]] for r in v]
                                for k, v in s["curves"].items()}}, "corrupt", "integer ms"),
])
def test_a_damaged_or_incompatible_snapshot_is_refused_whole_with_its_reason(damage, kind, words):
    p = _policy()
    snap = orjson.loads(orjson.dumps(_learned(p).snapshot()))
    ew = EarlyWarning(p)
    with pytest.raises(SnapshotError) as caught:
        ew.restore(damage(copy.deepcopy(snap)))
    assert caught.value.kind == kind
    assert words in str(caught.value), str(caught.value)
    assert ew.learned() == [] and ew.revision == 0  # nothing taken, relearns


def test_restoring_merges_a_deadline_learned_already_keeps_its_own_days():
    p = _policy()
    source = _learned(p)
    snap = source.snapshot()
    days = snap["curves"][f"{ACQ}\x1fcredit"]
    ew = EarlyWarning(p)
    mine = copy.deepcopy(days[-1])
    mine[2] = [0.0 if x is not None else None for x in mine[2]]
    assert ew.restore({**snap, "curves": {f"{ACQ}\x1fcredit": [mine]}}) == 1
    assert ew.restore(snap) == len(days) - 1  # the other copy's day for that deadline is not taken
    kept = ew.snapshot()["curves"][f"{ACQ}\x1fcredit"]
    assert [d[0] for d in kept] == sorted(d[0] for d in days)  # in deadline order
    assert kept[-1] == mine


def test_a_snapshot_can_be_bounded_to_the_newest_days():
    p = _policy()
    ew = _learned(p)
    full = ew.snapshot()["curves"][f"{ACQ}\x1fcredit"]
    assert len(full) > 3
    assert ew.snapshot(max_days=3)["curves"][f"{ACQ}\x1fcredit"] == full[-3:]


def test_the_revision_moves_when_a_day_is_learned_and_not_otherwise():
    p = _policy()
    ew = _learned(p)
    r = ew.revision
    assert r > 0
    ew.advance_to(ew.clock_ms + MIN)  # no deadline reached
    assert ew.revision == r
