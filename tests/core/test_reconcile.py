"""The reconciler, rule by rule: each case is a stream of events and the exact findings it gives.

Cycles under test (tests/core/builders.py): acquirer ``acq-batch`` settles batches T+1 10:00
local, cut-off 23:00, grace 1h; every other acquirer settles each sale within 30 minutes, no
grace. Local time is Asia/Shanghai; Oct 1-2 and 5-7 2026 are holidays, Oct 10 a make-up day.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streams.core.events import FindingKind, Status, anomaly_id
from streams.core.reconcile import Reconciler, feed

from .builders import (DAY, HOUR, MIN, credit, ms, net, policy, refund, reversal, sale)


@dataclass
class Case:
    name: str
    events: list
    until: str
    # (kind, status, subject, expected_minor, received_minor, probable_cause)
    expected: list = field(default_factory=list)
    overrides: dict = field(default_factory=dict)


def run(case: Case):
    r = Reconciler(policy(**case.overrides))
    return r, feed(r, case.events, ms(case.until))


def summary(findings):
    return [(f.kind.value, f.status.value, f.subject, f.expected_minor, f.received_minor,
             f.probable_cause) for f in findings]


CASES = [
    Case("a sale credited in full on time raises nothing",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         "2026-10-12 00:00"),
    # The credit is due 10:30; nothing came, so once the clock passes it the sale is missing.
    Case("a sale with no credit is missing once the clock passes its deadline",
         [sale("a1", "2026-10-09 10:00", 10_000)],
         "2026-10-09 12:00",
         [("missing", "open", "a1", net(10_000), 0, None)]),
    Case("a sale is not missing before the clock passes deadline plus grace",
         [sale("a1", "2026-10-09 10:00", 10_000)],
         "2026-10-09 10:30",  # exactly the deadline: not passed yet
         []),
    Case("a credit booked after deadline plus grace resolves the missing and is late",
         [sale("a1", "2026-10-09 10:00", 10_000),
          sale("a2", "2026-10-09 12:00", 500),  # moves the sales watermark past 10:30
          credit("c0", "2026-10-09 12:00", net(500), auth_ids=("a2",)),
          credit("c1", "2026-10-09 13:00", net(10_000), auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("missing", "open", "a1", net(10_000), 0, None),
          ("missing", "resolved", "a1", net(10_000), net(10_000), None),
          ("late", "open", "a1", net(10_000), net(10_000), None)]),
    Case("a credit booked exactly at deadline plus grace is on time",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:30", net(10_000), auth_ids=("a1",))],
         "2026-10-09 14:00"),
    Case("an underpayment matching another fee rate is a fee rate mismatch",
         [sale("a1", "2026-10-09 10:00", 100_000, channel="qr"),  # 38 bps agreed
          credit("c1", "2026-10-09 10:20", net(100_000, 60), auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("underpaid", "open", "a1", net(100_000, 38), net(100_000, 60), "fee_rate_mismatch")]),
    Case("a credit whose stated fee is not the agreed one is a fee rate mismatch",
         [sale("a1", "2026-10-09 10:00", 100_000, channel="qr"),
          credit("c1", "2026-10-09 10:20", net(100_000, 38) - 77, auth_ids=("a1",),
                 fee_minor=457)],
         "2026-10-09 14:00",
         [("underpaid", "open", "a1", net(100_000, 38), net(100_000, 38) - 77,
           "fee_rate_mismatch")]),
    Case("an unexplained shortfall is underpaid with an unknown cause",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000) - 1234, auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("underpaid", "open", "a1", net(10_000), net(10_000) - 1234, "unknown")]),
    Case("a credit above the expected net is overpaid",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000) + 999, auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("overpaid", "open", "a1", net(10_000), net(10_000) + 999, "unknown")]),
    # Tolerance = absolute_minor x sales in the credit + expected x relative_bps / 10,000.
    Case("a difference within the tolerance raises nothing",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000) - 1, auth_ids=("a1",))],
         "2026-10-09 14:00"),
    Case("the tolerance grows with the sales in the credit",
         [sale("a1", "2026-10-09 10:00", 10_000), sale("a2", "2026-10-09 10:01", 10_000),
          credit("c1", "2026-10-09 10:20", 2 * net(10_000) - 2, auth_ids=("a1", "a2"))],
         "2026-10-09 14:00"),
    Case("the relative tolerance is in basis points of the expected net",
         [sale("a1", "2026-10-09 10:00", 1_000_000),
          credit("c1", "2026-10-09 10:20", net(1_000_000) - 99, auth_ids=("a1",))],
         "2026-10-09 14:00", [],
         {"tolerance": {"absolute_minor": 0, "relative_bps": 1}}),
    Case("a shortfall just beyond the tolerance is underpaid",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000) - 2, auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("underpaid", "open", "a1", net(10_000), net(10_000) - 2, "unknown")]),
    # Duplicates: the earliest credit by event time pays; each later one is a duplicate.
    Case("a second credit for the same sale is a duplicate, not also overpaid",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c2", "2026-10-09 10:25", net(10_000), auth_ids=("a1",)),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("duplicate", "open", "a1", net(10_000), net(10_000), "duplicate_credit")]),
    Case("between credits booked at the same time the smaller credit_id pays",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("cB", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
          credit("cA", "2026-10-09 10:20", net(10_000) - 500, auth_ids=("a1",))],
         "2026-10-09 14:00",
         [("duplicate", "open", "a1", net(10_000), net(10_000), "duplicate_credit"),
          ("underpaid", "open", "a1", net(10_000), net(10_000) - 500, "unknown")]),
    Case("a credit for an already settled sale is a duplicate when it comes after the close",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
          credit("c2", "2026-10-10 09:00", net(10_000), auth_ids=("a1",))],
         "2026-10-10 12:00",
         [("duplicate", "open", "a1", net(10_000), net(10_000), "duplicate_credit")]),
    Case("a redelivered sale, refund or credit is counted, never a finding",
         [sale("a1", "2026-10-09 10:00", 10_000), sale("a1", "2026-10-09 10:00", 10_000),
          refund("a1", "2026-10-09 10:05", 1_000, event_id="r1"),
          refund("a1", "2026-10-09 10:05", 1_000, event_id="r1"),
          credit("c1", "2026-10-09 10:20", net(10_000) - 1_000, auth_ids=("a1",)),
          credit("c1", "2026-10-09 10:20", net(10_000) - 1_000, auth_ids=("a1",)),
          credit("c1", "2026-10-09 10:20", net(10_000) - 1_000, auth_ids=("a1",))],
         "2026-10-12 00:00"),
    # Orphans wait orphan_after (1d) of event time for their sale.
    Case("a credit that matches no sale is an orphan after orphan_after",
         [credit("c9", "2026-10-09 10:00", 4_321, auth_ids=("nope",))],
         "2026-10-10 10:01",
         [("orphan", "open", "c9", 0, 4_321, None)]),
    Case("a credit that matches no sale is not an orphan before orphan_after",
         [credit("c9", "2026-10-09 10:00", 4_321, auth_ids=("nope",))],
         "2026-10-10 10:00"),
    Case("a credit that comes before its sale waits for it and pays it",
         [credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
          sale("a1", "2026-10-09 11:00", 10_000)],
         "2026-10-12 00:00"),
    # Declines and voids expect nothing.
    Case("a declined sale expects no credit",
         [sale("a1", "2026-10-09 10:00", 10_000, status="declined")],
         "2026-10-12 00:00"),
    Case("a fully reversed sale expects no credit",
         [sale("a1", "2026-10-09 10:00", 10_000),
          reversal("a1", "2026-10-09 10:01", 10_000)],
         "2026-10-12 00:00"),
    Case("a credit for a fully reversed sale is overpaid, the reversal not netted",
         [sale("a1", "2026-10-09 10:00", 10_000),
          reversal("a1", "2026-10-09 10:01", 10_000),
          credit("c1", "2026-10-09 11:00", net(10_000), auth_ids=("a1",))],
         "2026-10-12 00:00",
         [("overpaid", "open", "a1", 0, net(10_000), "reversal_not_netted")]),
    Case("a credit for a declined sale is overpaid, cause declined sale",
         [sale("a1", "2026-10-09 10:00", 10_000, status="declined"),
          credit("c1", "2026-10-09 11:00", net(10_000), auth_ids=("a1",))],
         "2026-10-12 00:00",
         [("overpaid", "open", "a1", 0, net(10_000), "declined_sale")]),
    Case("a partial reversal is netted before the fee",
         [sale("a1", "2026-10-09 10:00", 10_000),
          reversal("a1", "2026-10-09 10:01", 4_000),
          credit("c1", "2026-10-09 10:20", net(6_000), auth_ids=("a1",))],
         "2026-10-12 00:00"),
    Case("a refund before the credit is netted from the expected credit",
         [sale("a1", "2026-10-09 10:00", 10_000),
          refund("a1", "2026-10-09 10:05", 3_000),
          credit("c1", "2026-10-09 10:20", net(10_000) - 3_000, auth_ids=("a1",))],
         "2026-10-12 00:00"),
    Case("a credit that ignores a refund is overpaid, refund not netted",
         [sale("a1", "2026-10-09 10:00", 10_000),
          refund("a1", "2026-10-09 10:05", 3_000),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         "2026-10-12 00:00",
         [("overpaid", "open", "a1", net(10_000) - 3_000, net(10_000), "refund_not_netted")]),
    # A refund of a sale already paid is netted by the acquirer into a later credit.
    Case("a refund of a paid sale netted into a later credit is underpaid, refund netted",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
          refund("a1", "2026-10-09 10:40", 2_500),
          sale("a2", "2026-10-09 11:00", 20_000),
          credit("c2", "2026-10-09 11:20", net(20_000) - 2_500, auth_ids=("a2",))],
         "2026-10-12 00:00",
         [("underpaid", "open", "a2", net(20_000), net(20_000) - 2_500, "refund_netted")]),
    Case("a reversal of a paid sale netted into a later credit is underpaid, reversal netted",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
          reversal("a1", "2026-10-09 10:40", 10_000),
          sale("a2", "2026-10-09 11:00", 20_000),
          credit("c2", "2026-10-09 11:20", net(20_000) - 10_000, auth_ids=("a2",))],
         "2026-10-12 00:00",
         [("underpaid", "open", "a2", net(20_000), net(20_000) - 10_000, "reversal_netted")]),
    # A credit with no reference is matched by amount among the merchant's unpaid sales.
    Case("a credit without references pays the unpaid sale whose net it matches",
         [sale("a1", "2026-10-09 10:00", 10_000), sale("a2", "2026-10-09 10:01", 30_000),
          credit("c1", "2026-10-09 10:20", net(30_000)),
          credit("c2", "2026-10-09 10:21", net(10_000))],
         "2026-10-12 00:00"),
    Case("a credit without references that matches no amount is an orphan",
         [sale("a1", "2026-10-09 10:00", 10_000),
          credit("c1", "2026-10-09 10:20", 777)],
         "2026-10-11 00:00",
         [("missing", "open", "a1", net(10_000), 0, None),
          ("orphan", "open", "c1", 0, 777, None)]),
    # Batches: due T+1 10:00 (local) by the latest sale's trade date, plus 1h grace.
    Case("a batch credited in full by batch_id raises nothing",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          sale("b2", "2026-10-09 15:00", 20_000, acquirer="acq-batch", batch_id="B1",
               channel="debit"),
          credit("cb", "2026-10-10 09:00", net(10_000) + net(20_000, 50, 2000),
                 batch_id="B1", acquirer="acq-batch")],
         "2026-10-13 00:00"),
    # Friday Oct 9's batch is due Monday Oct 12 10:00 (Oct 10 is a make-up Saturday: due then).
    Case("a friday batch before a make-up saturday is due on the saturday",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1")],
         "2026-10-10 11:01",
         [("missing", "open", "B1", net(10_000), 0, None)]),
    Case("a batch is not missing before deadline plus grace",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1")],
         "2026-10-10 11:00"),
    # A sale at 23:30 is past the 23:00 cut-off: trade date Oct 10, due Mon Oct 12 10:00.
    Case("a sale after the cut-off moves its batch to the next trade date",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          sale("b2", "2026-10-09 23:30", 10_000, acquirer="acq-batch", batch_id="B1")],
         "2026-10-12 11:00"),
    Case("a batch after the cut-off goes missing after its later deadline",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          sale("b2", "2026-10-09 23:30", 10_000, acquirer="acq-batch", batch_id="B1")],
         "2026-10-12 11:01",
         [("missing", "open", "B1", 2 * net(10_000), 0, None)]),
    Case("without a batch_id the batch is the merchant, acquirer and trade date",
         [sale("b1", "2026-10-08 10:00", 10_000, acquirer="acq-batch"),
          sale("b2", "2026-10-08 11:00", 10_000, acquirer="acq-batch")],
         "2026-10-09 11:01",
         [("missing", "open", "m1:acq-batch:2026-10-08", 2 * net(10_000), 0, None)]),
    # A sale on the first day of the National Day week (a holiday) is due the next business
    # day after the holiday: Thu Oct 1 -> T+1 skips Oct 1-7 (weekend Oct 3-4) -> Thu Oct 8.
    Case("a sale on the first day of a holiday week is due after the holiday",
         [sale("b1", "2026-10-01 12:00", 10_000, acquirer="acq-batch", batch_id="H1"),
          credit("ch", "2026-10-08 10:30", net(10_000), batch_id="H1", acquirer="acq-batch")],
         "2026-10-09 00:00"),
    Case("a holiday batch credited on its deadline after the holiday week is on time",
         [sale("b1", "2026-09-30 12:00", 10_000, acquirer="acq-batch", batch_id="H0"),
          credit("ch", "2026-10-08 10:30", net(10_000), batch_id="H0", acquirer="acq-batch")],
         "2026-10-09 00:00"),
    # Fri Oct 9 is due on the make-up Saturday Oct 10; an acquirer that skips it pays Monday.
    Case("a batch credited over a non-business day after its deadline is late, holiday delay",
         [sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          credit("cb", "2026-10-12 09:00", net(10_000), batch_id="B1", acquirer="acq-batch")],
         "2026-10-13 00:00",
         [("missing", "open", "B1", net(10_000), 0, None),
          ("missing", "resolved", "B1", net(10_000), net(10_000), None),
          ("late", "open", "B1", net(10_000), net(10_000), "holiday_delay")]),
    Case("a batch credited by the auth_ids of its sales is matched to the batch",
         [sale("b1", "2026-10-08 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          sale("b2", "2026-10-08 11:00", 10_000, acquirer="acq-batch", batch_id="B1"),
          credit("cb", "2026-10-09 09:00", 2 * net(10_000) - 300, auth_ids=("b1", "b2"),
                 acquirer="acq-batch")],
         "2026-10-10 00:00",
         [("underpaid", "open", "B1", 2 * net(10_000), 2 * net(10_000) - 300, "unknown")]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case):
    _, findings = run(case)
    assert summary(findings) == case.expected


# ---- the clock -------------------------------------------------------------------------------


def test_the_clock_is_the_lower_of_the_two_watermarks():
    r = Reconciler(policy())
    r.on_event(sale("a1", "2026-10-09 10:00", 10_000))
    r.on_event(sale("a2", "2026-10-09 18:00", 10_000))
    assert r.watermarks()["settlements"] is None
    # The settlement feed has said nothing: no sale can be missing yet, however late it is.
    assert r.clock_ms < ms("2026-10-09 10:00")
    findings = r.on_event(credit("c2", "2026-10-09 12:00", 1, auth_ids=("zz",)))
    assert r.clock_ms == ms("2026-10-09 12:00") - 10 * MIN
    assert summary(findings) == [("missing", "open", "a1", net(10_000), 0, None)]


def test_a_silent_settlement_feed_still_gives_missing_once_the_clock_is_advanced():
    r = Reconciler(policy())
    assert r.on_event(sale("a1", "2026-10-09 10:00", 10_000)) == []
    assert r.advance_to(ms("2026-10-09 10:30")) == []
    assert summary(r.advance_to(ms("2026-10-09 10:30") + 1)) == [
        ("missing", "open", "a1", net(10_000), 0, None)]


def test_the_clock_never_goes_back():
    r = Reconciler(policy())
    r.advance_to(ms("2026-10-09 12:00"))
    r.advance_to(ms("2026-10-09 11:00"))
    r.on_event(sale("a1", "2026-10-09 09:00", 1_000))
    assert r.clock_ms == ms("2026-10-09 12:00")


def test_an_event_older_than_the_clock_is_applied_and_counted_as_late_data():
    r = Reconciler(policy())
    r.advance_to(ms("2026-10-09 10:10"))
    # An offline terminal uploads a sale from 10:00; its item is still open (due 10:30).
    assert r.on_event(sale("a1", "2026-10-09 10:00", 10_000)) == []
    assert r.stats.late_data == 1
    assert r.on_event(credit("c1", "2026-10-09 10:05", net(10_000), auth_ids=("a1",))) == []
    assert r.advance_to(ms("2026-10-10 00:00")) == []


def test_a_credit_booked_on_time_but_read_late_resolves_the_missing_and_is_not_late():
    r = Reconciler(policy())
    r.on_event(sale("a1", "2026-10-09 10:00", 10_000))
    missing = r.advance_to(ms("2026-10-09 11:00"))
    assert summary(missing) == [("missing", "open", "a1", net(10_000), 0, None)]
    resolved = r.on_event(credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)))
    assert summary(resolved) == [
        ("missing", "resolved", "a1", net(10_000), net(10_000), None)]
    assert resolved[0].anomaly_id == missing[0].anomaly_id
    assert r.stats.late_data == 1


def test_a_refund_read_within_the_lateness_still_counts():
    r = Reconciler(policy())
    events = [sale("a1", "2026-10-09 10:00", 10_000),
              credit("c1", "2026-10-09 10:20", net(10_000) - 3_000, auth_ids=("a1",)),
              # the refund is older than the credit but arrives after it, within lateness
              refund("a1", "2026-10-09 10:15", 3_000)]
    assert feed(r, events, ms("2026-10-12 00:00")) == []


def test_a_sale_read_after_its_deadline_with_no_credit_is_missing_at_once():
    r = Reconciler(policy())
    r.advance_to(ms("2026-10-09 12:00"))
    findings = r.on_event(sale("a1", "2026-10-09 10:00", 10_000))
    assert summary(findings) == [("missing", "open", "a1", net(10_000), 0, None)]


# ---- findings in the contract's shape --------------------------------------------------------


def test_anomaly_ids_are_a_hash_of_kind_merchant_subject_and_credit():
    _, findings = run(CASES[5])
    (f,) = findings
    assert f.anomaly_id == anomaly_id("underpaid", "m1", "a1", "c1")
    assert f.credit_ids == ("c1",) and f.auth_ids == ("a1",)
    assert f.difference_minor == f.received_minor - f.expected_minor


def test_a_missing_finding_carries_deadline_and_event_time_of_the_close():
    _, findings = run(CASES[1])
    (f,) = findings
    assert f.deadline_ms == ms("2026-10-09 10:30")
    assert f.event_time_ms == ms("2026-10-09 10:30")
    assert f.detected_at_ms == ms("2026-10-09 12:00")
    assert f.evidence["sales"][0]["pan_masked"] == "622848******1234"
    assert f.evidence["sales"][0]["fee_bps"] == 60


def test_a_duplicate_names_the_paying_credit_and_the_duplicate():
    _, findings = run(CASES[13])
    (f,) = findings
    assert f.credit_ids == ("c1", "c2")
    assert f.anomaly_id == anomaly_id("duplicate", "m1", "a1", "c2")


def test_only_missing_findings_change_status():
    for case in CASES:
        _, findings = run(case)
        for f in findings:
            if f.status == Status.RESOLVED:
                assert f.kind == FindingKind.MISSING


# ---- memory stays bounded -----------------------------------------------------------------


def test_settled_items_are_dropped_after_keep_settled():
    r = Reconciler(policy())
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         ms("2026-10-09 12:00"))
    assert r.merchants["m1"].items
    r.advance_to(ms("2026-10-09 10:30") + 7 * DAY + 1)
    assert "m1" not in r.merchants


def test_a_credit_for_a_dropped_sale_is_an_orphan():
    r = Reconciler(policy())
    feed(r, [sale("a1", "2026-10-09 10:00", 10_000),
             credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",))],
         ms("2026-10-20 00:00"))
    r.on_event(credit("c2", "2026-10-20 00:00", net(10_000), auth_ids=("a1",)))
    assert [f.kind for f in r.advance_to(ms("2026-10-22 00:00"))] == [FindingKind.ORPHAN]


# ---- snapshots: a restart gives the same findings ----------------------------------------------


@pytest.mark.parametrize("cut", [1, 3, 5, 8])
def test_a_reconciler_restored_from_snapshots_gives_the_same_findings(cut):
    events = [sale("a1", "2026-10-09 10:00", 10_000),
              sale("b1", "2026-10-09 10:00", 10_000, acquirer="acq-batch", batch_id="B1"),
              refund("a1", "2026-10-09 10:05", 1_000),
              credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
              sale("a2", "2026-10-09 10:21", 5_000, merchant="m2"),
              credit("c9", "2026-10-09 10:22", 123, auth_ids=("zz",), merchant="m2"),
              sale("a3", "2026-10-09 11:30", 5_000),
              credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
              credit("c3", "2026-10-09 12:00", net(5_000), auth_ids=("a3",)),
              credit("cb", "2026-10-12 09:00", net(10_000), batch_id="B1", acquirer="acq-batch")]
    until = ms("2026-10-14 00:00")
    whole = feed(Reconciler(policy()), events, until)

    first = Reconciler(policy())
    before = []
    for e in events[:cut]:
        before += first.on_event(e)
    snaps = {mid: first.snapshot_merchant(mid) for mid in first.take_dirty()}
    clock = first.snapshot_clock()

    second = Reconciler(policy())
    second.restore_clock(clock)
    for mid, snap in snaps.items():
        if snap is not None:
            second.restore_merchant(mid, snap)
    after = second.drain()
    after += feed(second, events[cut:], until)
    assert summary(before + after) == summary(whole)
    assert [f.anomaly_id for f in before + after] == [f.anomaly_id for f in whole]


def test_a_snapshot_is_plain_json():
    import json
    r = Reconciler(policy())
    r.on_event(sale("a1", "2026-10-09 10:00", 10_000))
    r.on_event(credit("c1", "2026-10-09 10:20", 1, auth_ids=("a1",)))
    snap = r.snapshot_merchant("m1")
    assert json.loads(json.dumps(snap)) == snap


def test_the_hour_constants_agree():
    assert HOUR == 60 * MIN and DAY == 24 * HOUR
