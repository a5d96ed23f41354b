"""The settlement policy: config loading, fees, trade dates and T+N deadlines (DESIGN section 3).

Calendar used by most tests (mainland China 2026, from the State Council notice): the National
Day week 2026-10-01 (Thursday) to 10-07 is a holiday; Sunday 2026-09-20 and Saturday 2026-10-10
are make-up workdays. 2026-11-13 is an ordinary Friday.
"""
from __future__ import annotations

import copy
import random
import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.policy import (
    BATCH,
    BUSINESS,
    DURATION,
    PER_SALE,
    FeeRule,
    Policy,
    PolicyError,
    Tolerance,
    default_policy,
    load_policy,
    parse_duration_ms,
    policy_from_dict,
)

REPO = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc

BASE: dict = {
    "timezone": "Asia/Shanghai",
    "holidays": [f"2026-10-0{d}" for d in range(1, 8)],
    "workdays": ["2026-09-20", "2026-10-10"],
    "tolerance": {"absolute_minor": 1, "relative_bps": 0},
    "fees": {
        "debit": {"bps": 50, "cap_minor": 2000},
        "credit": {"bps": 60},
        "qr": {"bps": 38},
        "qr_large": {"bps": 55},
    },
    "cycles": [
        {"acquirer": "acq-t1", "mode": "batch", "due": "T+1 10:00", "cutoff": "23:00", "grace": "1h"},
        {"acquirer": "acq-d0", "mode": "batch", "due": "T+0 18:00", "cutoff": "15:00"},
        {"acquirer": "acq-instant", "mode": "per_sale", "due": "+30m"},
        {"acquirer": "acq-vip", "merchant_id": "m-vip-*", "mode": "per_sale", "due": "+5m"},
        {"acquirer": "acq-vip", "mode": "per_sale", "due": "T+2 09:30"},
        {"acquirer": "acq-berlin", "mode": "batch", "due": "T+1 10:00", "timezone": "Europe/Berlin"},
        {"acquirer": "*", "mode": "per_sale", "due": "T+1 12:00", "cutoff": "23:00"},
    ],
    "time": {"lateness": "10m", "orphan_after": "1d", "max_future": "15m", "keep_settled": "7d"},
}


def make(**changes) -> Policy:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return policy_from_dict(doc)


P = make()
T1 = P.cycle_for("acq-t1", "m1")
D0 = P.cycle_for("acq-d0", "m1")
INSTANT = P.cycle_for("acq-instant", "m1")
ANY = P.cycle_for("acq-other", "m1")
BERLIN_T1 = P.cycle_for("acq-berlin", "m1")


def ms(local: str, tz: ZoneInfo = SHANGHAI) -> int:
    """'2026-11-13 10:00' local -> epoch ms."""
    return int(datetime.fromisoformat(local).replace(tzinfo=tz).timestamp() * 1000)


def local(epoch_ms: int, tz: ZoneInfo = SHANGHAI) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz).strftime("%Y-%m-%d %H:%M %a")


def day(iso: str) -> int:
    return date.fromisoformat(iso).toordinal()


def due(sale_local: str, cycle=T1, policy: Policy = P, tz: ZoneInfo = SHANGHAI) -> str:
    return local(policy.deadline_ms(ms(sale_local, tz), cycle), tz)


# ---- loading ---------------------------------------------------------------------------------


def test_the_shipped_sample_config_loads():
    policy = load_policy(REPO / "settlewatch.toml")
    assert policy.timezone == "Asia/Shanghai"
    assert [c.acquirer for c in policy.cycles][-1] == "*"
    assert policy.fee_bps("qr_large") == 55
    assert date(2026, 10, 1) in policy.holidays and date(2026, 10, 10) in policy.workdays


def test_the_packaged_copy_of_the_sample_is_identical_to_the_repo_root_one():
    packaged = REPO / "streams" / "data" / "settlewatch.toml"
    assert packaged.read_bytes() == (REPO / "settlewatch.toml").read_bytes()


def test_default_policy_is_the_packaged_sample():
    assert default_policy() == load_policy(REPO / "settlewatch.toml")


def test_the_sample_pays_a_national_day_sale_after_the_holiday_week():
    policy = default_policy()
    t1 = policy.cycle_for("acq-t1", "any-merchant")
    assert due("2026-10-03 12:00", t1, policy) == "2026-10-08 10:00 Thu"


def test_a_minimal_config_gets_the_documented_defaults():
    policy = policy_from_dict(
        {"timezone": "UTC", "cycles": [{"acquirer": "*", "mode": "per_sale", "due": "+1h"}]}
    )
    assert policy.holidays == frozenset() and policy.workdays == frozenset()
    assert policy.tolerance == Tolerance(0, 0)
    assert policy.fees == {}
    assert policy.lateness_ms == 600_000
    assert policy.orphan_after_ms == 86_400_000
    assert policy.max_future_ms == 900_000
    assert policy.keep_settled_ms == 7 * 86_400_000
    (cycle,) = policy.cycles
    assert (cycle.merchant_id, cycle.grace_ms, cycle.cutoff_minute, cycle.timezone) == (
        "*", 0, None, "UTC")


def test_toml_dates_and_quoted_dates_are_both_accepted():
    doc = tomllib.loads(
        'timezone = "UTC"\nholidays = [2026-10-01, "2026-10-02"]\n'
        '[[cycles]]\nacquirer = "*"\nmode = "per_sale"\ndue = "+1h"\n'
    )
    assert policy_from_dict(doc).holidays == {date(2026, 10, 1), date(2026, 10, 2)}


def test_a_cycle_is_resolved_into_its_fields():
    assert T1.index == 0 and T1.mode == BATCH and T1.due_kind == BUSINESS
    assert (T1.due_days, T1.due_minute, T1.cutoff_minute, T1.grace_ms) == (1, 600, 1380, 3_600_000)
    assert INSTANT.mode == PER_SALE and INSTANT.due_kind == DURATION
    assert INSTANT.due_after_ms == 1_800_000
    assert BERLIN_T1.timezone == "Europe/Berlin" and T1.timezone == "Asia/Shanghai"


def test_durations_combine_units_largest_first():
    assert parse_duration_ms("1h30m", "k") == 5_400_000
    assert parse_duration_ms("1d2h3m4s5ms", "k") == 93_784_005
    assert parse_duration_ms("0m", "k") == 0
    assert parse_duration_ms("250ms", "k") == 250


# ---- cycle lookup ----------------------------------------------------------------------------


def test_the_first_matching_cycle_wins():
    assert P.cycle_for("acq-t1", "m1") is P.cycles[0]
    assert P.cycle_for("acq-t1x", "m1") is P.cycles[-1]  # globs match the whole name
    assert P.cycle_for("acq-other", "m1") is P.cycles[-1]


def test_a_merchant_glob_picks_a_cycle_before_the_acquirer_wide_one():
    assert P.cycle_for("acq-vip", "m-vip-7").due_after_ms == 300_000
    assert P.cycle_for("acq-vip", "m-plain").due_days == 2
    # asked again (memoised), the answers stay the same
    assert P.cycle_for("acq-vip", "m-vip-7").index == 3
    assert P.cycle_for("acq-vip", "m-plain").index == 4


# ---- trade dates and T+N ---------------------------------------------------------------------


def test_business_days_are_weekdays_minus_holidays_plus_workdays():
    assert P.is_business_day(day("2026-11-13"))  # Friday
    assert not P.is_business_day(day("2026-11-14"))  # Saturday
    assert not P.is_business_day(day("2026-11-15"))  # Sunday
    assert not P.is_business_day(day("2026-10-01"))  # Thursday, National Day
    assert P.is_business_day(day("2026-10-10"))  # Saturday, make-up workday
    assert P.is_business_day(day("2026-09-20"))  # Sunday, make-up workday


def test_the_trade_date_of_a_sale_is_its_local_calendar_date():
    # 2026-11-13 00:30 in Shanghai is still 2026-11-12 in UTC
    assert P.trade_day(ms("2026-11-13 00:30"), T1) == day("2026-11-13")


def test_a_sale_at_the_cutoff_belongs_to_the_next_trade_date():
    assert P.trade_day(ms("2026-11-12 23:00"), T1) == day("2026-11-13")
    assert P.trade_day(ms("2026-11-12 23:00") - 1, T1) == day("2026-11-12")


def test_without_a_cutoff_the_trade_date_turns_at_midnight():
    assert P.trade_day(ms("2026-11-12 23:59"), INSTANT) == day("2026-11-12")
    assert P.trade_day(ms("2026-11-13 00:00"), INSTANT) == day("2026-11-13")


def test_with_t1_a_friday_sale_is_due_monday():
    assert due("2026-11-13 14:00") == "2026-11-16 10:00 Mon"


def test_with_t1_saturday_and_sunday_sales_are_due_monday():
    assert due("2026-11-14 14:00") == "2026-11-16 10:00 Mon"
    assert due("2026-11-15 14:00") == "2026-11-16 10:00 Mon"


def test_a_thursday_sale_after_the_cutoff_trades_friday_and_is_due_monday():
    assert due("2026-11-12 23:30") == "2026-11-16 10:00 Mon"
    assert due("2026-11-12 22:59") == "2026-11-13 10:00 Fri"


def test_a_sale_on_the_first_day_of_a_week_long_holiday_is_due_the_first_business_day_after_it():
    assert due("2026-10-01 09:00") == "2026-10-08 10:00 Thu"


def test_a_sale_on_the_last_business_day_before_a_holiday_is_due_after_it():
    assert due("2026-09-30 12:00") == "2026-10-08 10:00 Thu"


def test_a_make_up_saturday_workday_counts_as_a_business_day():
    # Friday 10-09 -> the 1st business day after it is the make-up Saturday 10-10
    assert due("2026-10-09 12:00") == "2026-10-10 10:00 Sat"
    # a sale on the make-up Saturday is due Monday
    assert due("2026-10-10 12:00") == "2026-10-12 10:00 Mon"


def test_a_make_up_sunday_workday_counts_as_a_business_day():
    assert due("2026-09-19 12:00") == "2026-09-20 10:00 Sun"


def test_t0_on_a_business_day_is_the_trade_date_itself():
    assert due("2026-11-13 14:59", D0) == "2026-11-13 18:00 Fri"


def test_t0_on_a_non_business_trade_date_is_the_next_business_day():
    assert due("2026-11-14 10:00", D0) == "2026-11-16 18:00 Mon"
    # after the 15:00 cut-off on Friday the trade date is Saturday
    assert due("2026-11-13 15:00", D0) == "2026-11-16 18:00 Mon"
    assert due("2026-10-02 10:00", D0) == "2026-10-08 18:00 Thu"


def test_a_per_sale_duration_due_is_the_event_time_plus_the_duration():
    sale = ms("2026-10-01 09:00")  # holidays do not matter to a duration
    assert P.deadline_ms(sale, INSTANT) == sale + 30 * 60_000
    assert P.deadline_ms(sale + 1, INSTANT) == sale + 1 + 30 * 60_000


def test_a_per_sale_business_due_follows_t_plus_n_from_the_sales_trade_date():
    assert due("2026-11-13 22:00", ANY) == "2026-11-16 12:00 Mon"
    # acq-vip: T+2 09:30, Thursday -> Monday
    vip = P.cycle_for("acq-vip", "m-plain")
    assert due("2026-11-12 10:00", vip) == "2026-11-16 09:30 Mon"


def test_a_batch_is_due_by_its_latest_sales_trade_date():
    sales = [ms("2026-11-11 09:00"), ms("2026-11-12 23:30"), ms("2026-11-12 12:00")]
    latest = max(P.trade_day(t, T1) for t in sales)
    assert latest == day("2026-11-13")
    assert local(P.batch_deadline_ms(latest, T1)) == "2026-11-16 10:00 Mon"


def test_batch_deadline_of_a_trade_date_equals_the_deadline_of_a_sale_on_it():
    for d in range(day("2026-09-15"), day("2026-10-20")):
        sale = ms(f"{date.fromordinal(d)} 11:00")
        assert P.batch_deadline_ms(d, T1) == P.deadline_ms(sale, T1)


def test_a_duration_cycle_has_no_batch_deadline():
    with pytest.raises(ValueError, match="duration"):
        P.batch_deadline_ms(day("2026-11-13"), INSTANT)


def test_a_cycle_time_zone_overrides_the_policy_time_zone():
    # 2026-11-13 23:30 in Shanghai is 16:30 in Berlin: Berlin trade date 11-13, due Monday 10:00
    sale = ms("2026-11-13 23:30")
    assert P.trade_day(sale, BERLIN_T1) == day("2026-11-13")
    assert local(P.deadline_ms(sale, BERLIN_T1), BERLIN) == "2026-11-16 10:00 Mon"


def test_holidays_between_sees_a_non_business_day_strictly_inside():
    assert P.holidays_between(ms("2026-09-30 10:00"), ms("2026-10-08 10:00"))
    assert P.holidays_between(ms("2026-11-13 10:00"), ms("2026-11-16 10:00"))  # a weekend


def test_holidays_between_is_false_over_business_days_only():
    assert not P.holidays_between(ms("2026-11-16 10:00"), ms("2026-11-20 18:00"))
    # Friday 10-09 to the make-up Saturday 10-10: both business days
    assert not P.holidays_between(ms("2026-10-09 10:00"), ms("2026-10-10 18:00"))
    # ... but on to Monday, Sunday 10-11 lies inside
    assert P.holidays_between(ms("2026-10-09 10:00"), ms("2026-10-12 09:00"))


def test_holidays_between_excludes_both_ends_of_the_interval():
    saturday, monday = ms("2026-11-14 00:00"), ms("2026-11-16 00:00")
    assert not P.holidays_between(ms("2026-11-13 10:00"), saturday)
    assert P.holidays_between(ms("2026-11-13 10:00"), saturday + 1)
    assert not P.holidays_between(monday - 1, ms("2026-11-16 12:00"))
    assert P.holidays_between(monday - 2, ms("2026-11-16 12:00"))
    assert not P.holidays_between(monday, monday)


# ---- daylight saving time (Europe/Berlin: 2026-03-29 and 2026-10-25 are change days) --------


def berlin_policy(**cycle) -> Policy:
    return make(
        timezone="Europe/Berlin",
        holidays=[],
        workdays=["2026-03-29", "2026-10-25"],  # Sundays made workdays, to land dues on DST days
        cycles=[{"acquirer": "*", "mode": "batch", **cycle}],
    )


def test_on_a_dst_day_the_trade_date_follows_the_new_offset():
    policy = berlin_policy(due="T+1 10:00")
    cycle = policy.cycles[0]
    # 22:30 UTC on 03-29 is 00:30 CEST on 03-30 (it would still be 03-29 at the winter offset)
    assert policy.trade_day(ms("2026-03-29 22:30", UTC), cycle) == day("2026-03-30")
    assert policy.trade_day(ms("2026-03-28 22:30", UTC), cycle) == day("2026-03-28")
    # 22:30 UTC on 10-25 is 23:30 CET, still 10-25 (at the summer offset it would be 10-26)
    assert policy.trade_day(ms("2026-10-25 22:30", UTC), cycle) == day("2026-10-25")


def test_a_deadline_keeps_its_local_hour_across_a_dst_change():
    policy = berlin_policy(due="T+1 10:00")
    cycle = policy.cycles[0]
    # Friday 03-27 -> the 1st business day after is the workday Sunday 03-29, 10:00 CEST
    assert policy.deadline_ms(ms("2026-03-27 12:00", BERLIN), cycle) == ms("2026-03-29 08:00", UTC)
    assert policy.deadline_ms(ms("2026-03-20 12:00", BERLIN), cycle) == ms("2026-03-23 09:00", UTC)
    assert policy.deadline_ms(ms("2026-10-23 12:00", BERLIN), cycle) == ms("2026-10-25 09:00", UTC)


def test_a_due_time_inside_the_spring_forward_gap_is_read_after_the_gap():
    policy = berlin_policy(due="T+0 02:30")  # 02:30 does not exist on 2026-03-29
    deadline = policy.batch_deadline_ms(day("2026-03-29"), policy.cycles[0])
    assert deadline == ms("2026-03-29 01:30", UTC)  # 03:30 CEST


def test_a_due_time_inside_the_autumn_overlap_is_read_as_its_later_occurrence():
    policy = berlin_policy(due="T+0 02:30")  # 02:30 happens twice on 2026-10-25
    deadline = policy.batch_deadline_ms(day("2026-10-25"), policy.cycles[0])
    assert deadline == ms("2026-10-25 01:30", UTC)  # 02:30 CET, not 02:30 CEST (00:30 UTC)


def reference_trade_day(epoch_ms: int, tz: ZoneInfo, cutoff_minute: int | None) -> int:
    when = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)).astimezone(tz)
    d = when.date().toordinal()
    if cutoff_minute is not None and when.hour * 60 + when.minute >= cutoff_minute:
        d += 1
    return d


@settings(max_examples=300, deadline=None)
@given(
    tz=st.sampled_from(["Europe/Berlin", "Asia/Shanghai", "Asia/Kolkata", "Australia/Lord_Howe",
                        "America/St_Johns"]),
    cutoff=st.sampled_from([None, "23:00", "15:07", "02:30"]),
    # instants around the 2026 DST changes (either hemisphere), in any order
    offsets=st.lists(st.integers(-3 * 86_400_000, 3 * 86_400_000), min_size=1, max_size=40),
    anchor=st.sampled_from(["2026-03-29 01:00", "2026-10-25 01:00", "2026-04-05 15:00",
                            "2026-10-03 15:30", "2026-03-08 10:00", "2026-11-01 06:00"]),
)
def test_cached_trade_dates_agree_with_zoneinfo(tz, cutoff, offsets, anchor):
    cycle = {"acquirer": "*", "mode": "per_sale", "due": "T+1 10:00"}
    if cutoff:
        cycle["cutoff"] = cutoff
    policy = make(timezone=tz, cycles=[cycle])
    c = policy.cycles[0]
    base = ms(anchor, UTC)
    for off in offsets:
        t = base + off
        assert policy.trade_day(t, c) == reference_trade_day(t, ZoneInfo(tz), c.cutoff_minute)


def test_an_offset_change_inside_a_15_minute_bucket_is_handled_exactly():
    # Africa/Monrovia left UTC-0:44:30 for UTC at 1972-01-07 00:44:30 UTC, mid-bucket.
    policy = make(
        timezone="Africa/Monrovia",
        cycles=[{"acquirer": "*", "mode": "per_sale", "due": "T+1 10:00", "cutoff": "00:30"}],
    )
    c = policy.cycles[0]
    just_after = ms("1972-01-07 00:44:40", UTC)  # 00:44:40 local: after the cut-off
    just_before = ms("1972-01-07 00:44:20", UTC)  # 23:59:50 local on 01-06: after the cut-off
    for t in (just_before, just_after, just_before, just_after):  # cached or not, same answer
        expected = reference_trade_day(t, ZoneInfo("Africa/Monrovia"), 30)
        assert policy.trade_day(t, c) == expected
    assert policy.trade_day(just_after, c) == day("1972-01-08")
    assert policy.trade_day(just_before, c) == day("1972-01-07")


def test_deadlines_do_not_depend_on_the_order_sales_are_seen():
    times = [ms("2026-09-01 00:00") + i * 7_919_000 for i in range(2_000)]  # about 6 months
    in_order = make()
    expected = [in_order.deadline_ms(t, in_order.cycles[0]) for t in times]
    shuffled = list(zip(times, expected))
    random.Random(1).shuffle(shuffled)
    fresh = make()
    assert all(fresh.deadline_ms(t, fresh.cycles[0]) == e for t, e in shuffled)


# ---- fees and tolerance ----------------------------------------------------------------------


def test_a_fee_is_rounded_half_up():
    assert P.fee_minor("debit", 100) == 1  # 0.5 -> 1
    assert P.fee_minor("debit", 99) == 0  # 0.495 -> 0
    assert P.fee_minor("debit", 300) == 2  # 1.5 -> 2
    assert P.fee_minor("qr", 132) == 1  # 0.5016 -> 1
    assert P.fee_minor("qr", 131) == 0  # 0.4978 -> 0
    assert P.fee_minor("credit", 10_000) == 60


def test_a_fee_is_capped():
    assert P.fee_minor("debit", 399_899) == 1999  # 1999.495
    assert P.fee_minor("debit", 399_900) == 2000  # 1999.5 -> 2000
    assert P.fee_minor("debit", 400_100) == 2000  # 2000.5 capped
    assert P.fee_minor("debit", 10**9) == 2000


def test_fee_arithmetic_is_exact_for_huge_amounts():
    amount = 10**17 + 50  # float would lose the last digits
    assert P.fee_minor("credit", amount) == (amount * 60 + 5_000) // 10_000
    assert FeeRule(bps=38).fee_minor(amount) == P.fee_minor("qr", amount)


def test_an_unknown_channel_pays_no_fee_unless_a_default_is_configured():
    assert P.fee_minor("wallet", 10_000) == 0 and P.fee_bps("wallet") == 0
    fees = {**BASE["fees"], "default": {"bps": 70, "cap_minor": 50}}
    policy = make(fees=fees)
    assert policy.fee_bps("wallet") == 70
    assert policy.fee_minor("wallet", 10_000) == 50  # 70 capped at 50
    assert policy.fee_minor("qr", 10_000) == 38


def test_all_fee_bps_lists_every_configured_rate():
    assert P.all_fee_bps() == frozenset({50, 60, 38, 55})
    assert P.fee_rule("debit") == FeeRule(50, 2000)


def test_tolerance_allows_an_absolute_amount_per_sale_plus_a_relative_part_rounded_down():
    assert Tolerance(1, 0).allowed_minor(expected_minor=10_000, sales=3) == 3
    assert Tolerance(1, 25).allowed_minor(expected_minor=10_000, sales=3) == 3 + 25
    assert Tolerance(0, 1).allowed_minor(expected_minor=19_999, sales=1) == 1  # 1.9999 -> 1


# ---- every bad value is a PolicyError naming its key -----------------------------------------


def with_cycle(i: int, **changes) -> dict:
    doc = copy.deepcopy(BASE)
    doc["cycles"][i].update(changes)
    return doc


def without(doc: dict, *path) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return doc


def changed(**changes) -> dict:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return doc


BAD = [
    # (doc, key, words in the message)
    (changed(timezon="UTC"), "timezon", "did you mean 'timezone'"),
    (without(BASE, "timezone"), "timezone", "required"),
    (changed(timezone="Mars/Olympus"), "timezone", "unknown time zone"),
    (changed(timezone=8), "timezone", "IANA"),
    (changed(holidays="2026-10-01"), "holidays", "list of dates"),
    (changed(holidays=["2026-10-01", "2026-13-01"]), "holidays[1]", "YYYY-MM-DD"),
    (changed(holidays=["20261001"]), "holidays[0]", "YYYY-MM-DD"),
    (changed(holidays=[datetime(2026, 10, 1, 12)]), "holidays[0]", "YYYY-MM-DD"),
    (changed(workdays=["2026-09-21"]), "workdays[0]", "Monday, already a business day"),
    (changed(workdays=["2026-10-10", "2026-10-03"]), "workdays[1]", "also listed in holidays"),
    (changed(tolerance={"absolute": 1}), "tolerance.absolute", "unknown key"),
    (changed(tolerance={"relative_bps": 10_001}), "tolerance.relative_bps", "from 0 to 10000"),
    (changed(tolerance={"absolute_minor": -1}), "tolerance.absolute_minor", "at least 0"),
    (changed(fees={"qr": {"bps": 10_001}}), "fees.qr.bps", "from 0 to 10000"),
    (changed(fees={"qr": {"bps": -1}}), "fees.qr.bps", "from 0 to 10000"),
    (changed(fees={"qr": {"bps": True}}), "fees.qr.bps", "integer"),
    (changed(fees={"qr": {"bps": 0.38}}), "fees.qr.bps", "integer"),
    (changed(fees={"qr": {"cap_minor": 5}}), "fees.qr.bps", "required"),
    (changed(fees={"qr": {"bps": 38, "cap_minor": -5}}), "fees.qr.cap_minor", "at least 0"),
    (changed(fees={"qr": {"bps": 38, "cap": 5}}), "fees.qr.cap", "did you mean 'cap_minor'"),
    (changed(fees={"qr": 38}), "fees.qr", "expected a table"),
    (changed(fees=[]), "fees", "expected a table"),
    (without(BASE, "cycles"), "cycles", "at least one"),
    (changed(cycles=[]), "cycles", "at least one"),
    (with_cycle(1, mode="daily"), "cycles[1].mode", "'batch' or 'per_sale'"),
    (with_cycle(1, due="tomorrow"), "cycles[1].due", "expected 'T+N HH:MM' or '+<duration>', got 'tomorrow'"),
    (with_cycle(1, due="T+1 24:00"), "cycles[1].due", "HH:MM"),
    (with_cycle(1, due="T+1"), "cycles[1].due", "T+N HH:MM"),
    (with_cycle(1, due=1), "cycles[1].due", "T+N HH:MM"),
    (with_cycle(2, due="+30 minutes"), "cycles[2].due", "duration"),
    (with_cycle(2, due="+-5m"), "cycles[2].due", "negative"),
    (with_cycle(0, due="+30m"), "cycles[0].due", "batch cycle needs a 'T+N HH:MM' due"),
    (without(with_cycle(0), "cycles", 0, "due"), "cycles[0].due", "required"),
    (without(with_cycle(0), "cycles", 0, "mode"), "cycles[0].mode", "required"),
    (without(with_cycle(0), "cycles", 0, "acquirer"), "cycles[0].acquirer", "required"),
    (with_cycle(0, cutoff="24:00"), "cycles[0].cutoff", "HH:MM"),
    (with_cycle(0, cutoff="11pm"), "cycles[0].cutoff", "HH:MM"),
    (with_cycle(0, cutoff="00:00"), "cycles[0].cutoff", "leave cutoff out"),
    (with_cycle(0, grace="-5m"), "cycles[0].grace", "negative"),
    (with_cycle(0, grace=60), "cycles[0].grace", "duration string"),
    (with_cycle(0, grace="30m1h"), "cycles[0].grace", "largest first"),
    (with_cycle(0, grace="1m30m"), "cycles[0].grace", "largest first"),
    (with_cycle(0, grace="1.5h"), "cycles[0].grace", "duration"),
    (with_cycle(0, acquirer="acq-[12"), "cycles[0].acquirer", "never closed"),
    (with_cycle(0, acquirer=""), "cycles[0].acquirer", "non-empty glob"),
    (with_cycle(0, merchant_id=["m1"]), "cycles[0].merchant_id", "glob"),
    (with_cycle(0, timezone="Europe/Nowhere"), "cycles[0].timezone", "unknown time zone"),
    (with_cycle(0, cut_off="23:00"), "cycles[0].cut_off", "did you mean 'cutoff'"),
    (with_cycle(6, acquirer="acq-*"), "cycles[6]", "last cycle must match every sale"),
    (with_cycle(6, merchant_id="m-*"), "cycles[6]", "last cycle must match every sale"),
    (changed(time={"lateness": "-1m"}), "time.lateness", "negative"),
    (changed(time={"orphan_after": "1 day"}), "time.orphan_after", "duration"),
    (changed(time={"max_future": 15}), "time.max_future", "duration string"),
    (changed(time={"keep_setled": "7d"}), "time.keep_setled", "did you mean 'keep_settled'"),
]


@pytest.mark.parametrize(
    "doc,key,words", BAD, ids=[f"{key}:{words[:30]}" for _, key, words in BAD]
)
def test_every_bad_value_is_a_policy_error_naming_its_key(doc, key, words):
    with pytest.raises(PolicyError) as caught:
        policy_from_dict(doc)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert words in str(caught.value)


def test_a_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


def test_load_policy_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    text = (REPO / "settlewatch.toml").read_text().replace('due = "+30m"', 'due = "tomorrow"')
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.key == "cycles[2].due"
    assert str(caught.value) == (
        f"{path}: cycles[2].due: expected 'T+N HH:MM' or '+<duration>', got 'tomorrow'"
    )


def test_load_policy_reports_broken_toml_and_missing_files(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("timezone = \n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")


# ---- a cycle that can never apply is an error, not silence (issue 14 item 12) ----------------


def cycles_doc(*cycles: dict) -> dict:
    return changed(cycles=[{"mode": "per_sale", "due": "+1h", **c} for c in cycles])


UNREACHABLE = [
    # (cycles, the unreachable one, the one that takes its sales)
    (({"acquirer": "*"}, {"acquirer": "acq-t1"}, {"acquirer": "*"}), 1, 0),
    (({"acquirer": "acq-*"}, {"acquirer": "acq-t1"}, {"acquirer": "*"}), 1, 0),
    (({"acquirer": "acq-*"}, {"acquirer": "acq-t?"}, {"acquirer": "*"}), 1, 0),
    (({"acquirer": "acq-t1"}, {"acquirer": "acq-t1", "merchant_id": "m-*"}, {"acquirer": "*"}),
     1, 0),
    (({"acquirer": "acq-t1", "merchant_id": "m-*"}, {"acquirer": "acq-t1", "merchant_id": "m-1"},
      {"acquirer": "*"}), 1, 0),
    (({"acquirer": "a"}, {"acquirer": "b"}, {"acquirer": "a"}, {"acquirer": "*"}), 2, 0),
]


@pytest.mark.parametrize("cycles,hidden,by", UNREACHABLE)
def test_a_cycle_covered_by_an_earlier_one_is_reported_unreachable(cycles, hidden, by):
    with pytest.raises(PolicyError) as caught:
        policy_from_dict(cycles_doc(*cycles))
    assert caught.value.key == f"cycles[{hidden}]"
    assert f"cycles[{by}]" in caught.value.message


def test_specific_cycles_before_general_ones_are_fine():
    policy = policy_from_dict(cycles_doc(
        {"acquirer": "acq-t1", "merchant_id": "m-vip-*"}, {"acquirer": "acq-t1"},
        {"acquirer": "acq-t?"}, {"acquirer": "acq-*", "merchant_id": "m-1"}, {"acquirer": "acq-*"},
        {"acquirer": "*", "merchant_id": "m-2"}, {"acquirer": "*"}))
    assert len(policy.cycles) == 7


@pytest.mark.parametrize("name", ["Asia", "Europe", "A" * 300, "../etc/passwd", "Asia/\x00x"])
def test_a_time_zone_that_is_a_directory_too_long_or_a_path_is_a_policy_error(name):
    with pytest.raises(PolicyError) as caught:
        policy_from_dict(changed(timezone=name))
    assert caught.value.key == "timezone" and "unknown time zone" in caught.value.message
    assert len(str(caught.value)) < 200
