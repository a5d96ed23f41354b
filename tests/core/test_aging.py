"""Aging of open findings: business-day ages, SLA tiers, and the counters a scrape reads.

The calendar is the test policy's (Asia/Shanghai): National Day holidays 2026-10-01, 02, 05, 06
and 07, make-up workdays Sunday 2026-09-27 and Saturday 2026-10-10. The tiers are the shipped
defaults: critical >= 100,000.00 or >= 5 business days (due 4h), high >= 10,000.00 or >= 3 (1
business day), medium >= 1,000.00 or >= 1 (2 business days), else low (5 business days).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.aging import AgingBook, Calendar, Tiers, describe
from streams.core.events import FindingKind, Status
from streams.core.policy import PolicyError, default_policy
from streams.core.reconcile import Reconciler

from .builders import DAY, HOUR, MIN, credit, ms, net, policy, sale
from .test_changes import POLICY, START, UNTIL, _stream, apply

P = policy()
CAL = Calendar(P)
TIERS = Tiers(P.aging)


@dataclass(frozen=True)
class Age:
    opened: str
    clock: str
    days: int


# Business days after the opening date, up to and including the clock's date.
AGES = [
    # the same day is 0, whatever the hour
    Age("2026-11-16 09:00", "2026-11-16 23:59", 0),
    # a Friday finding does not age over the weekend ...
    Age("2026-11-13 10:00", "2026-11-14 12:00", 0),
    Age("2026-11-13 10:00", "2026-11-15 23:59", 0),
    # ... and is 1 business day old from Monday's local midnight
    Age("2026-11-13 10:00", "2026-11-16 00:00", 1),
    Age("2026-11-13 10:00", "2026-11-17 08:00", 2),
    # a weekend finding is 1 on Monday
    Age("2026-11-14 10:00", "2026-11-16 10:00", 1),
    # the National Day week: Thursday 10-08 is the first business day after Wednesday 09-30
    Age("2026-09-30 16:00", "2026-10-07 23:59", 0),
    Age("2026-09-30 16:00", "2026-10-08 09:00", 1),
    # the make-up Saturday 10-10 is a business day; Sunday 10-11 is not
    Age("2026-10-09 10:00", "2026-10-10 09:00", 1),
    Age("2026-10-09 10:00", "2026-10-11 09:00", 1),
    Age("2026-10-09 10:00", "2026-10-12 09:00", 2),
    # the make-up Sunday 09-27 counts too
    Age("2026-09-25 10:00", "2026-09-28 09:00", 2),
    # a clock before the opening (never in practice) is 0, not negative
    Age("2026-11-16 09:00", "2026-11-13 09:00", 0),
]


@pytest.mark.parametrize("case", AGES, ids=lambda c: f"{c.opened}->{c.clock}")
def test_a_findings_age_counts_business_days_of_the_policy_calendar(case):
    opened, clock = CAL.local_day(ms(case.opened)), CAL.local_day(ms(case.clock))
    assert CAL.age_days(opened, clock) == case.days
    assert CAL.ages([opened], clock) == {opened: case.days}


@dataclass(frozen=True)
class Tier:
    currency: str
    amount_minor: int
    age_days: int
    tier: str


# Exactly at each threshold, and one minor unit below it.
TIER_CASES = [
    Tier("CNY", 10_000_000, 0, "critical"),  # 100,000.00
    Tier("CNY", 9_999_999, 4, "high"),
    Tier("CNY", 9_999_999, 5, "critical"),  # 5 business days old
    Tier("CNY", 1_000_000, 0, "high"),  # 10,000.00
    Tier("CNY", 999_999, 2, "medium"),
    Tier("CNY", 999_999, 3, "high"),
    Tier("CNY", 100_000, 0, "medium"),  # 1,000.00
    Tier("CNY", 99_999, 0, "low"),
    Tier("CNY", 99_999, 1, "medium"),
    Tier("CNY", 0, 0, "low"),
    # thresholds are in each currency's major unit: 100,000 yen, 100,000.000 dinars
    Tier("JPY", 100_000, 0, "critical"),
    Tier("JPY", 99_999, 0, "high"),
    Tier("KWD", 100_000_000, 0, "critical"),
    Tier("KWD", 99_999_999, 0, "high"),
]


@pytest.mark.parametrize("case", TIER_CASES,
                         ids=lambda c: f"{c.currency}-{c.amount_minor}-{c.age_days}d")
def test_a_finding_takes_the_first_tier_its_amount_or_its_age_reaches(case):
    index = TIERS.index(case.currency, case.amount_minor, case.age_days)
    assert P.aging.tiers[index].name == case.tier
    # the counters' amount bands give the same tier as the amount itself
    band = TIERS.band(case.currency, case.amount_minor)
    assert TIERS.index(case.currency, TIERS.band_floor(case.currency, band),
                       case.age_days) == index


def test_a_per_currency_threshold_in_minor_units_overrides_the_major_unit_amount():
    p = policy(aging={"tiers": [
        {"name": "critical", "min_amount": "100000.00", "min_amount_minor": {"JPY": 15_000_000},
         "due": "4h"},
        {"name": "low", "due": "5 business days"}]})
    tiers = Tiers(p.aging)
    assert p.aging.tiers[tiers.index("JPY", 14_999_999, 0)].name == "low"
    assert p.aging.tiers[tiers.index("JPY", 15_000_000, 0)].name == "critical"
    assert p.aging.tiers[tiers.index("CNY", 10_000_000, 0)].name == "critical"


def test_a_fractional_threshold_is_rounded_up_in_a_currency_without_minor_units():
    p = policy(aging={"tiers": [{"name": "big", "min_amount": "1000.50", "due": "4h"},
                                {"name": "small", "due": "1d"}]})
    assert p.aging.tiers[0].threshold_minor("JPY", 0) == 1001
    assert p.aging.tiers[0].threshold_minor("CNY", 2) == 100_050
    assert p.aging.tiers[0].threshold_minor("KWD", 3) == 1_000_500


@pytest.mark.parametrize("aging, message", [
    ({"tiers": [{"name": "critical", "min_amount": 100000.0, "due": "4h"},
                {"name": "low", "due": "1d"}]}, "never a float"),
    ({"tiers": [{"name": "critical", "min_amount": "100000.00", "due": "4h"}]},
     "the last tier takes every finding"),
    ({"tiers": [{"name": "low", "due": "4h"}, {"name": "lower", "due": "4h"}]},
     "only the last tier may"),
    ({"tiers": [{"name": "a", "min_age_days": 1, "due": "4h"}, {"name": "a", "due": "4h"}]},
     "used by an earlier tier"),
    ({"tiers": [{"name": "a", "min_age_days": 1, "due": "soon"}, {"name": "b", "due": "4h"}]},
     "business days"),
    ({"tiers": [{"name": "Critical!", "min_age_days": 1, "due": "4h"},
                {"name": "b", "due": "4h"}]}, "lower-case word"),
    ({"tiers": [{"name": "a", "min_amount_minor": {"XYZ": 1}, "due": "4h"},
                {"name": "b", "due": "4h"}]}, "ISO 4217"),
    ({"horizon": "0m"}, "longer than 0"),
    ({"tiers": [{"name": "a", "min_age": 1, "due": "4h"}, {"name": "b", "due": "4h"}]},
     "min_age_days"),
])
def test_a_bad_aging_table_is_refused_with_the_key_that_is_wrong(aging, message):
    with pytest.raises(PolicyError, match="aging") as err:
        policy(aging=aging)
    assert message in str(err.value)


def test_the_shipped_policy_file_spells_out_the_default_tiers():
    shipped = default_policy().aging
    assert [t.name for t in shipped.tiers] == ["critical", "high", "medium", "low"]
    assert shipped == policy().aging  # the file's [aging] equals the built-in default


# Due times: counted from when the finding entered its tier.
def test_a_tier_reached_by_amount_is_due_its_duration_after_the_finding():
    d = describe(CAL, TIERS, "CNY", 10_000_000, ms("2026-11-13 15:00"), ms("2026-11-13 16:00"))
    assert d == {"age_days": 0, "tier": "critical", "entered_ms": ms("2026-11-13 15:00"),
                 "due_ms": ms("2026-11-13 19:00")}


def test_a_high_finding_raised_on_friday_is_due_on_monday_at_the_same_time():
    d = describe(CAL, TIERS, "CNY", 1_000_000, ms("2026-11-13 15:00"), ms("2026-11-13 16:00"))
    assert (d["tier"], d["due_ms"]) == ("high", ms("2026-11-16 15:00"))


def test_a_tier_reached_by_age_is_entered_at_midnight_of_that_business_day():
    # 10.00 CNY missing since Friday: low on the weekend, medium from Monday 00:00, due in two
    # business days (Wednesday 00:00)
    opened = ms("2026-11-13 15:00")
    assert describe(CAL, TIERS, "CNY", 1_000, opened, ms("2026-11-15 12:00"))["tier"] == "low"
    d = describe(CAL, TIERS, "CNY", 1_000, opened, ms("2026-11-16 12:00"))
    assert d == {"age_days": 1, "tier": "medium", "entered_ms": ms("2026-11-16 00:00"),
                 "due_ms": ms("2026-11-18 00:00")}
    # five business days later: critical from Friday 11-20 00:00, due 04:00
    d = describe(CAL, TIERS, "CNY", 1_000, opened, ms("2026-11-20 09:00"))
    assert d == {"age_days": 5, "tier": "critical", "entered_ms": ms("2026-11-20 00:00"),
                 "due_ms": ms("2026-11-20 04:00")}


# ---- the reconciler keeps the book --------------------------------------------------------

def _aging(r: Reconciler) -> dict:
    return r.aging_summary()


def test_a_missing_sale_is_open_from_its_close_until_its_credit_comes():
    r = Reconciler(P, aging=True)
    r.on_event(sale("A1", "2026-11-16 10:00", 50_000))  # +30m, no grace: closes at 10:30
    r.advance_to(ms("2026-11-16 10:30"))
    assert _aging(r) == {}
    findings = r.advance_to(ms("2026-11-16 10:31"))
    assert [f.kind for f in findings] == [FindingKind.MISSING]
    assert _aging(r) == {("acq-fast", "CNY", "low"): (1, net(50_000))}
    # the next business day it is medium
    r.advance_to(ms("2026-11-17 00:00"))
    assert _aging(r) == {("acq-fast", "CNY", "medium"): (1, net(50_000))}
    out = r.on_event(credit("C1", "2026-11-17 01:00", net(50_000), auth_ids=("A1",)))
    out += r.advance_to(ms("2026-11-17 02:00"))
    assert (FindingKind.MISSING, Status.RESOLVED) in [(f.kind, f.status) for f in out]
    assert _aging(r) == {}
    assert r.aging.entries == {}


def test_a_late_credit_is_not_aged_and_a_credit_on_time_opens_nothing():
    r = Reconciler(P, aging=True)
    r.on_event(sale("A1", "2026-11-16 10:00", 50_000))
    r.on_event(credit("C1", "2026-11-16 10:20", net(50_000), auth_ids=("A1",)))
    r.on_event(sale("A2", "2026-11-16 10:00", 50_000))
    r.on_event(credit("C2", "2026-11-16 12:00", net(50_000), auth_ids=("A2",)))
    findings = r.advance_to(ms("2026-11-16 13:00"))
    kinds = sorted(f.kind.value for f in r.advance_to(ms("2026-11-16 13:00")) + findings)
    assert "late" in kinds
    assert _aging(r) == {}


def test_an_underpaid_credit_ages_by_its_difference_until_the_aging_horizon():
    r = Reconciler(P, aging=True)
    r.on_event(sale("A1", "2026-11-16 10:00", 5_000_000))
    r.on_event(credit("C1", "2026-11-16 10:10", net(5_000_000) - 1_200_000, auth_ids=("A1",)))
    findings = r.advance_to(ms("2026-11-16 10:31"))
    (under,) = [f for f in findings if f.kind is FindingKind.UNDERPAID]
    assert _aging(r) == {("acq-fast", "CNY", "high"): (1, 1_200_000)}
    end = under.event_time_ms + P.aging.horizon_ms
    r.advance_to(end)
    assert _aging(r) == {("acq-fast", "CNY", "critical"): (1, 1_200_000)}  # 9 business days
    r.advance_to(end + 1)  # once the clock has passed the horizon
    assert _aging(r) == {}
    assert r.aging.expired == 1


def test_an_orphan_credit_ages_by_what_was_received():
    r = Reconciler(P, aging=True)
    r.on_event(credit("C9", "2026-11-16 10:00", 123_456, auth_ids=("nobody",)))
    r.advance_to(ms("2026-11-17 10:01"))  # orphan_after 1d
    assert _aging(r) == {("acq-fast", "CNY", "medium"): (1, 123_456)}


def test_a_missing_finding_leaves_the_view_with_its_item_at_the_missing_horizon():
    p = replace(P, missing_horizon_ms=3 * DAY)
    r = Reconciler(p, aging=True)
    r.on_event(sale("A1", "2026-11-16 10:00", 50_000))
    r.advance_to(ms("2026-11-16 10:31"))
    r.advance_to(ms("2026-11-19 10:30"))
    assert sum(n for n, _ in _aging(r).values()) == 1
    r.advance_to(ms("2026-11-19 10:31"))
    assert _aging(r) == {}
    assert r.stats.missing_expired == 1


def test_a_reconciler_without_aging_keeps_no_book_and_writes_no_aging_state():
    r = Reconciler(P, track_changes=True)
    r.on_event(sale("A1", "2026-11-16 10:00", 50_000))
    r.advance_to(ms("2026-11-16 11:00"))
    assert r.aging is None and r.aging_summary() == {}
    assert not [k for k in r.take_changes() if k.split("\x1f")[1] == "g"]


# ---- the counters against a brute-force recount --------------------------------------------

AGED = {"missing", "underpaid", "overpaid", "duplicate", "orphan"}


def recount(findings, clock_ms: int, policy_=POLICY) -> dict:
    """Open findings by replaying every finding, then each one's tier on its own."""
    open_: dict = {}
    for f in findings:
        if f.kind.value not in AGED:
            continue
        if f.status is Status.RESOLVED:
            open_.pop(f.anomaly_id, None)
        else:
            open_[f.anomaly_id] = f
    cal, tiers = Calendar(policy_), Tiers(policy_.aging)
    out: dict = {}
    for f in open_.values():
        horizon = (policy_.missing_horizon_ms if f.kind is FindingKind.MISSING
                   else policy_.aging.horizon_ms)
        if f.event_time_ms + horizon < clock_ms:
            continue
        stake = (abs(f.expected_minor) if f.kind is FindingKind.MISSING
                 else abs(f.difference_minor) if f.kind in (FindingKind.UNDERPAID,
                                                             FindingKind.OVERPAID)
                 else f.received_minor)
        tier = describe(cal, tiers, f.currency, stake, f.event_time_ms, clock_ms)["tier"]
        n, amount = out.get((f.acquirer, f.currency, tier), (0, 0))
        out[(f.acquirer, f.currency, tier)] = (n + 1, amount + stake)
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), every=st.integers(40, 600))
def test_the_aging_counters_equal_a_recount_of_the_open_findings_at_any_point(seed, every):
    r = Reconciler(POLICY, aging=True)
    findings = []
    for n, e in enumerate(_stream(seed)):
        findings += r.on_event(e)
        if n % every == every - 1:
            assert r.aging_summary() == recount(findings, r.clock_ms)
    for day in range(1, 9):  # and as the clock runs on, past the horizons of some
        findings += r.advance_to(START + 3 * DAY + day * DAY)
        assert r.aging_summary() == recount(findings, r.clock_ms)
    assert findings, "the stream raised findings"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_with_nothing_resolved_a_findings_tier_only_rises_as_time_passes(seed):
    r = Reconciler(POLICY, aging=True)
    r.on_events(_stream(seed, hours=30))
    book = r.aging
    assert book.entries
    previous: dict = {}
    for hours in range(0, 12 * 24, 7):
        clock = r.clock_ms + hours * HOUR
        for aid, e in book.entries.items():
            index = [t.name for t in POLICY.aging.tiers].index(book.describe(aid, clock)["tier"])
            assert index <= previous.get(aid, index)  # 0 is the most severe
            previous[aid] = index


def test_a_scrape_reads_counters_not_findings():
    # 2,000 open findings of one acquirer, opened over 3 days: a handful of counter keys
    r = Reconciler(P, aging=True)
    for k in range(2_000):
        r.on_event(sale(f"A{k}", ms("2026-11-16 10:00") + k * 2 * MIN, 20_000 + k % 7))
    r.advance_to(ms("2026-11-19 12:00"))
    assert len(r.aging.entries) == 2_000
    assert len(r.aging.counters) <= 3 * 4
    assert sum(n for n, _ in r.aging_summary().values()) == 2_000


# ---- the live worker's per-change state -----------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.floats(0.05, 0.95))
def test_the_aging_book_comes_back_whole_from_the_per_change_state(seed, cut):
    events = _stream(seed)
    whole = Reconciler(POLICY, aging=True)
    r = Reconciler(POLICY, aging=True, track_changes=True)
    table: dict = {}
    k = int(cut * len(events))
    for n, e in enumerate(events):
        whole.on_event(e)
        r.on_event(e)
        if n % 53 == 0:
            apply(table, r.take_changes())
        if n == k:
            apply(table, r.take_changes())
            back = Reconciler(POLICY, aging=True)
            back.restore_changes(list(table.items()))
            back.restore_clock(r.snapshot_clock())
            back.drain()
            assert back.aging.entries == r.aging.entries
            assert back.aging.counters == r.aging.counters
            r = back
            r.take_changes()
    whole.advance_to(UNTIL)
    r.advance_to(UNTIL)
    apply(table, r.take_changes())
    assert r.aging_summary() == whole.aging_summary()
    assert r.aging.entries == whole.aging.entries
    # what the table holds of the book is exactly the open entries
    held = {key.split("\x1f")[2]: v for key, v in table.items() if key.split("\x1f")[1] == "g"}
    assert held == {aid: json.loads(json.dumps(AgingBook.to_plain(e)))
                    for aid, e in whole.aging.entries.items()}


def test_an_underpaid_credit_read_after_its_horizon_never_enters_the_view():
    # The credit is booked on time but read 20 days later (late data): its underpaid finding is
    # older than aging.horizon when it is raised, so it is not open in the aging view.
    r = Reconciler(P, aging=True)
    r.on_event(sale("A1", "2026-11-02 10:00", 5_000_000))
    r.on_event(sale("Z1", "2026-11-22 10:00", 1_000, merchant="m2"))
    r.on_event(credit("Z2", "2026-11-22 10:05", net(1_000), auth_ids=("Z1",), merchant="m2"))
    r.advance_to(ms("2026-11-22 11:00"))
    out = r.on_event(credit("C1", "2026-11-02 10:10", net(5_000_000) - 1_200_000,
                            auth_ids=("A1",)))
    # it resolves the sale's missing finding (booked on time) and is short
    assert [(f.kind, f.status) for f in out] == [(FindingKind.MISSING, Status.RESOLVED),
                                                 (FindingKind.UNDERPAID, Status.OPEN)]
    assert r.aging.entries == {} and r.aging_summary() == {}
