"""Completeness markers (contract v1.1): a settlement_file_complete closes and checks a file.

Policy: shop m1 is paid per sale by acq-t1s, T+1 12:00 with 2h grace (so Friday Oct 9's sales
are due on the make-up Saturday Oct 10 12:00, closed at 14:00), and by acq-batch in batches
T+1 10:00 + 1h; acq-t1s's file for a settle date is expected by 13:00 that day.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import FileComplete, FindingKind, Status
from streams.core.reconcile import Reconciler, feed

from .builders import DAY, HOUR, MIN, TEST_POLICY, credit, ms, net, policy, sale

POLICY = policy(
    cycles=[
        {"acquirer": "acq-batch", "mode": "batch", "due": "T+1 10:00", "cutoff": "23:00",
         "grace": "1h"},
        {"acquirer": "acq-t1s", "mode": "per_sale", "due": "T+1 12:00", "cutoff": "23:00",
         "grace": "2h"},
        *TEST_POLICY["cycles"][1:],
    ],
    settlement_files=[{"acquirer": "acq-t1s", "expected": "T+0 13:00"}],
)
D = "2026-10-10"  # the make-up Saturday: Friday Oct 9's T+1 sales are due then


def marker(marker_id: str, at: str, count: int, total: int, *, settle: str = D,
           merchant: str = "m1", acquirer: str = "acq-t1s",
           currency: str = "CNY") -> FileComplete:
    return FileComplete(marker_id, merchant, acquirer, date.fromisoformat(settle).toordinal(),
                        count, total, currency, ms(at))


def s(auth_id: str, at: str, amount: int, **kw):
    return sale(auth_id, at, amount, acquirer=kw.pop("acquirer", "acq-t1s"), **kw)


def cr(credit_id: str, at: str, amount: int, auth_id: str, **kw):
    return credit(credit_id, at, amount, auth_ids=(auth_id,),
                  acquirer=kw.pop("acquirer", "acq-t1s"), **kw)


@dataclass
class Case:
    name: str
    events: list
    until: str
    # (kind, status, subject, event time "YYYY-MM-DD HH:MM" local, probable_cause)
    expected: list[tuple] = field(default_factory=list)


def findings(events, until, p=POLICY):
    return feed(Reconciler(p), events, ms(until))


def summary(found) -> list[tuple]:
    from datetime import datetime
    from zoneinfo import ZoneInfo
    zone = ZoneInfo("Asia/Shanghai")

    def local(t):
        return datetime.fromtimestamp(t / 1000, zone).strftime("%Y-%m-%d %H:%M")
    return [(f.kind.value, f.status.value, f.subject, local(f.event_time_ms), f.probable_cause)
            for f in found]


CASES = [
    Case(
        # The file for Oct 10 is complete at 12:20 and S1 is not in it: missing at 12:20,
        # not at 14:00 (deadline + grace).
        "a marker makes an unpaid item due on its date missing at once",
        [s("S1", "2026-10-09 10:00", 10_000), s("S2", "2026-10-09 11:00", 20_000),
         cr("c2", "2026-10-10 09:00", net(20_000), "S2"),
         marker("F1", "2026-10-10 12:20", 1, net(20_000))],
        "2026-10-10 16:00",
        [("missing", "open", "S1", "2026-10-10 12:20", "not_in_settlement_file")],
    ),
    Case(
        # Without the marker, the same feed finds S1 missing at deadline + grace.
        "without a marker the item waits for deadline plus grace",
        [s("S1", "2026-10-09 10:00", 10_000)],
        "2026-10-10 16:00",
        [("missing", "open", "S1", "2026-10-10 14:00", None)],
    ),
    Case(
        # S2 is paid (and short): it closes at its normal time and is judged then.
        "an item already paid closes at its normal time and not at the marker",
        [s("S2", "2026-10-09 11:00", 20_000),
         cr("c2", "2026-10-10 09:00", net(20_000) - 500, "S2"),
         marker("F1", "2026-10-10 12:20", 1, net(20_000) - 500)],
        "2026-10-10 16:00",
        [("underpaid", "open", "S2", "2026-10-10 14:00", "unknown")],
    ),
    Case(
        # S3 is due on Monday Oct 12 (Saturday's sale), S4 is another acquirer's: untouched.
        "a marker leaves items due on another date or of another acquirer alone",
        [s("S3", "2026-10-10 09:00", 10_000),
         sale("S4", "2026-10-10 09:00", 10_000, acquirer="acq-other"),
         marker("F1", "2026-10-10 12:20", 0, 0)],
        "2026-10-10 16:00",
        [("missing", "open", "S4", "2026-10-10 09:30", None)],
    ),
    Case(
        # The credit comes after the marker but is booked before 14:00: it resolves the missing
        # and is not late.
        "a credit after the marker but booked on time resolves the missing and is not late",
        [s("S1", "2026-10-09 10:00", 10_000),
         marker("F1", "2026-10-10 12:20", 0, 0),
         cr("c1", "2026-10-10 13:00", net(10_000), "S1")],
        "2026-10-10 16:00",
        [("missing", "open", "S1", "2026-10-10 12:20", "not_in_settlement_file"),
         ("missing", "resolved", "S1", "2026-10-10 13:00", None)],
    ),
    Case(
        "a credit booked after deadline plus grace resolves the missing and is late",
        [s("S1", "2026-10-09 10:00", 10_000),
         marker("F1", "2026-10-10 12:20", 0, 0),
         cr("c1", "2026-10-10 15:00", net(10_000), "S1")],
        "2026-10-10 16:00",
        [("missing", "open", "S1", "2026-10-10 12:20", "not_in_settlement_file"),
         ("missing", "resolved", "S1", "2026-10-10 15:00", None),
         ("late", "open", "S1", "2026-10-10 15:00", None)],
    ),
    Case(
        # The feed lost c3: each credit that came is right, the file says there were three.
        "a marker counting more credits than were seen is a file_incomplete finding",
        [s("S1", "2026-10-09 10:00", 10_000), s("S2", "2026-10-09 11:00", 20_000),
         cr("c1", "2026-10-10 09:00", net(10_000), "S1"),
         cr("c2", "2026-10-10 09:05", net(20_000), "S2"),
         marker("F1", "2026-10-10 12:20", 3, net(10_000) + net(20_000) + 7_000)],
        "2026-10-10 16:00",
        [("file_incomplete", "open", "F1", "2026-10-10 12:20", "file_short")],
    ),
    Case(
        "as many credits as the file with another total is file_total_mismatch",
        [s("S1", "2026-10-09 10:00", 10_000),
         cr("c1", "2026-10-10 09:00", net(10_000), "S1"),
         marker("F1", "2026-10-10 12:20", 1, net(10_000) + 1)],
        "2026-10-10 16:00",
        [("file_incomplete", "open", "F1", "2026-10-10 12:20", "file_total_mismatch")],
    ),
    Case(
        "more credits seen than the file lists is file_extra",
        [s("S1", "2026-10-09 10:00", 10_000),
         cr("c1", "2026-10-10 09:00", net(10_000), "S1"),
         marker("F1", "2026-10-10 12:20", 0, 0)],
        "2026-10-10 16:00",
        [("file_incomplete", "open", "F1", "2026-10-10 12:20", "file_extra")],
    ),
    Case(
        # Released in event-time order, credits before markers at equal times.
        "a credit booked at the marker's own time is in the file",
        [s("S1", "2026-10-09 10:00", 10_000),
         marker("F1", "2026-10-10 12:20", 1, net(10_000)),
         cr("c1", "2026-10-10 12:20", net(10_000), "S1")],
        "2026-10-10 16:00",
        [],
    ),
    Case(
        # Credits of Oct 9 (booked the day before) are not Oct 10's file; nor other currencies.
        "credits of another date or currency are not counted for the file",
        [s("S1", "2026-10-08 10:00", 10_000),  # due Fri Oct 9
         cr("c1", "2026-10-09 09:00", net(10_000), "S1"),
         s("S2", "2026-10-09 10:00", 10_000, currency="USD"),
         cr("c2", "2026-10-10 09:00", net(10_000), "S2", currency="USD"),
         marker("F1", "2026-10-10 12:20", 0, 0)],
        "2026-10-10 16:00",
        [],
    ),
    Case(
        "the same marker again is a redelivery and finds nothing more",
        [s("S1", "2026-10-09 10:00", 10_000),
         marker("F1", "2026-10-10 12:20", 2, 5_000),
         marker("F1", "2026-10-10 12:25", 2, 5_000)],
        "2026-10-10 16:00",
        [("missing", "open", "S1", "2026-10-10 12:20", "not_in_settlement_file"),
         ("file_incomplete", "open", "F1", "2026-10-10 12:20", "file_short")],
    ),
    Case(
        # A batch due Oct 10 10:00 (closes 11:00 without a marker) closes at 10:15.
        "a marker closes an unpaid batch due on its date",
        [sale("B1", "2026-10-09 12:00", 10_000, acquirer="acq-batch", batch_id="BATCH-1"),
         marker("F1", "2026-10-10 10:15", 0, 0, acquirer="acq-batch")],
        "2026-10-10 16:00",
        [("missing", "open", "BATCH-1", "2026-10-10 10:15", "not_in_settlement_file")],
    ),
    Case(
        # A declined sale expects nothing: no missing, marker or not.
        "a marker leaves an item expecting nothing to close as it would",
        [s("S1", "2026-10-09 10:00", 10_000, status="declined"),
         marker("F1", "2026-10-10 12:20", 0, 0)],
        "2026-10-10 16:00",
        [],
    ),
]


def test_every_case_has_a_sentence_for_a_name():
    assert len({c.name for c in CASES}) == len(CASES)


def _run_case(case: Case):
    return summary(findings(case.events, case.until))


for _case in CASES:
    def _test(case=_case):
        assert _run_case(case) == case.expected
    _test.__name__ = "test_" + "".join(ch if ch.isalnum() else "_" for ch in _case.name)
    globals()[_test.__name__] = _test
del _case, _test


def test_a_file_incomplete_finding_carries_both_totals_and_both_counts():
    events = [s("S1", "2026-10-09 10:00", 10_000), cr("c1", "2026-10-10 09:00", 9_940, "S1"),
              marker("F1", "2026-10-10 12:20", 3, 30_000)]
    f, = findings(events, "2026-10-10 16:00")
    assert (f.kind, f.status, f.subject) == (FindingKind.FILE_INCOMPLETE, Status.OPEN, "F1")
    assert (f.expected_minor, f.received_minor, f.difference_minor) == (30_000, 9_940, -20_060)
    assert (f.expected_count, f.received_count) == (3, 1)
    assert f.deadline_ms == ms("2026-10-10 13:00")  # when the file was expected by
    assert f.evidence["marker"]["settle_date"] == D
    again, = findings(events, "2026-10-10 16:00")
    assert again.anomaly_id == f.anomaly_id  # deterministic


def test_the_missing_a_marker_raised_names_the_marker_in_its_evidence():
    events = [s("S1", "2026-10-09 10:00", 10_000), marker("F1", "2026-10-10 12:20", 0, 0)]
    f, = findings(events, "2026-10-10 12:40")
    assert f.evidence["cause_detail"]["marker"]["marker_id"] == "F1"
    # the same anomaly_id as the missing found at deadline + grace without the marker
    g, = findings(events[:1], "2026-10-10 16:00")
    assert f.anomaly_id == g.anomaly_id


def test_a_redelivered_marker_is_counted_as_a_redelivery():
    r = Reconciler(POLICY)
    feed(r, [marker("F1", "2026-10-10 12:20", 0, 0), marker("F1", "2026-10-10 12:21", 0, 0)],
         ms("2026-10-10 13:00"))
    assert r.stats.redeliveries == 1


def test_a_marker_moves_the_settlements_watermark_like_a_credit():
    r = Reconciler(POLICY)
    r.on_event(marker("F1", "2026-10-10 12:20", 0, 0))
    assert r.watermarks()["settlements"] == ms("2026-10-10 12:10")


# -- files expected by a time -----------------------------------------------------------------

def overdue(events, until):
    r = Reconciler(POLICY)
    feed(r, events, ms(until))
    return {(acq, date.fromordinal(d).isoformat()): n for (acq, d), n in r.files_overdue().items()}


def test_a_file_not_come_by_its_expected_time_is_overdue_for_each_merchant_expecting_it():
    events = [s("S1", "2026-10-09 10:00", 10_000), s("S2", "2026-10-09 10:00", 10_000,
                                                   merchant="m2")]
    assert overdue(events, "2026-10-10 12:59") == {}
    assert overdue(events, "2026-10-10 13:01") == {("acq-t1s", D): 2}


def test_a_file_that_came_is_not_overdue():
    events = [s("S1", "2026-10-09 10:00", 10_000), s("S2", "2026-10-09 10:00", 10_000,
                                                   merchant="m2"),
              marker("F1", "2026-10-10 12:20", 0, 0)]
    assert overdue(events, "2026-10-10 13:30") == {("acq-t1s", D): 1}
    late = marker("F2", "2026-10-10 15:00", 0, 0, merchant="m2")
    assert overdue([*events, late], "2026-10-10 15:30") == {}


def test_a_credit_booked_on_a_date_makes_the_merchant_expect_that_dates_file():
    events = [cr("c9", "2026-10-12 09:00", 1_000, "nothing")]
    assert overdue(events, "2026-10-12 13:30") == {("acq-t1s", "2026-10-12"): 1}


def test_acquirers_without_a_settlement_files_entry_are_never_overdue():
    events = [sale("S1", "2026-10-09 12:00", 10_000, acquirer="acq-batch", batch_id="B")]
    assert overdue(events, "2026-10-12 00:00") == {}


def test_file_records_are_dropped_after_the_redelivery_window():
    events = [s("S1", "2026-10-09 10:00", 10_000)]
    assert overdue(events, "2026-11-14 00:00") == {("acq-t1s", D): 1}  # 35d after Oct 10
    assert overdue(events, "2026-11-15 09:00") == {}


# -- live state -------------------------------------------------------------------------------

def _apply(table, changes):
    for k, v in changes.items():
        if v is None:
            table.pop(k, None)
        else:
            table[k] = json.loads(json.dumps(v))


def test_marker_state_round_trips_through_take_changes_and_restore_changes():
    before = [s("S1", "2026-10-09 10:00", 10_000), s("S2", "2026-10-09 11:00", 20_000),
              cr("c2", "2026-10-10 09:00", net(20_000), "S2"),
              s("S3", "2026-10-09 11:00", 20_000, merchant="m2")]
    after = [marker("F1", "2026-10-10 12:20", 2, 2 * net(20_000)),
             marker("F1", "2026-10-10 12:21", 2, 2 * net(20_000))]
    whole = Reconciler(POLICY)
    expected = feed(whole, before + after, ms("2026-10-10 16:00"))
    r = Reconciler(POLICY, track_changes=True)
    for e in before:
        r.on_event(e)
    table: dict = {}
    _apply(table, r.take_changes())
    assert any("\x1ft\x1f" in k for k in table)  # the file records are state keys
    back = Reconciler(POLICY)
    back.restore_changes(table.items())
    back.restore_clock(r.snapshot_clock())
    out = back.drain()
    out += feed(back, after, ms("2026-10-10 16:00"))
    assert summary(out) == summary(expected)
    assert back.files_overdue() == whole.files_overdue()
    assert back.stats.redeliveries == 1


# -- properties -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(amounts=st.lists(st.integers(1, 10**7), max_size=8),
       minutes=st.lists(st.integers(0, 23 * 60 + 59), min_size=8, max_size=8))
def test_a_marker_whose_totals_equal_the_credits_never_raises_file_incomplete(amounts, minutes):
    day0 = ms("2026-10-10 00:00")
    events = [credit(f"c{n}", day0 + minutes[n] * MIN, a, auth_ids=(f"A{n}",),
                     acquirer="acq-t1s") for n, a in enumerate(amounts)]
    events.append(FileComplete("F", "m1", "acq-t1s", date(2026, 10, 10).toordinal(),
                               len(amounts), sum(amounts), "CNY", day0 + DAY))
    found = feed(Reconciler(POLICY), events, day0 + DAY + HOUR)
    assert not [f for f in found if f.kind == FindingKind.FILE_INCOMPLETE]


@settings(max_examples=40, deadline=None)
@given(dropped=st.integers(1, 5), kept=st.integers(0, 5))
def test_a_file_whose_credits_were_partly_lost_is_always_caught(dropped, kept):
    day0 = ms("2026-10-10 00:00")
    credits = [credit(f"c{n}", day0 + n * MIN, 1_000 + n, auth_ids=(f"A{n}",),
                      acquirer="acq-t1s") for n in range(kept + dropped)]
    total = sum(c.amount_minor for c in credits)
    events = [*credits[:kept], FileComplete("F", "m1", "acq-t1s", date(2026, 10, 10).toordinal(),
                                            len(credits), total, "CNY", day0 + DAY)]
    found = [f for f in feed(Reconciler(POLICY), events, day0 + DAY + HOUR)
             if f.kind == FindingKind.FILE_INCOMPLETE]
    assert [(f.expected_count, f.received_count, f.probable_cause) for f in found] == [
        (kept + dropped, kept, "file_short")]


def test_a_feed_without_markers_keeps_no_file_records_in_its_state():
    r = Reconciler(POLICY, track_changes=True)
    feed(r, [sale("S1", "2026-10-09 10:00", 10_000, acquirer="acq-other"),
             credit("c1", "2026-10-09 10:10", net(10_000), auth_ids=("S1",),
                    acquirer="acq-other")], ms("2026-10-09 12:00"))
    assert not [k for k in r.take_changes() if k.split("\x1f")[1] == "t"]


def test_after_a_first_marker_the_credits_of_later_dates_are_counted_as_they_come():
    events = [s("S1", "2026-10-09 10:00", 10_000), cr("c1", "2026-10-10 09:00", net(10_000), "S1"),
              marker("F1", "2026-10-10 12:20", 1, net(10_000)),
              s("S2", "2026-10-12 10:00", 20_000),  # Monday: due Tuesday Oct 13 12:00
              cr("c2", "2026-10-13 09:00", net(20_000), "S2"),
              marker("F2", "2026-10-13 12:20", 2, net(20_000) + 5_000, settle="2026-10-13")]
    assert summary(findings(events, "2026-10-13 16:00")) == [
        ("file_incomplete", "open", "F2", "2026-10-13 12:20", "file_short")]
