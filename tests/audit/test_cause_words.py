"""Evidence files name what the probable cause found: the rates charged, the refund netted."""
from __future__ import annotations

from streams.audit.evidence import _evidence_for_people
from streams.core.reconcile import Reconciler, feed
from tests.core.builders import credit, ms, net, policy, refund, sale


def _findings(events, until):
    return [f for f in feed(Reconciler(policy()), events, ms(until))
            if f.kind.value in ("underpaid", "overpaid")]


def test_the_evidence_of_a_wrong_fee_table_states_the_rates_charged_and_agreed():
    b = dict(acquirer="acq-batch", batch_id="B1")
    events = [sale("b1", "2026-10-08 10:00", 120_000, channel="credit", **b),
              sale("b2", "2026-10-08 11:00", 45_000, channel="qr", **b),
              credit("cb", "2026-10-09 09:00", net(120_000, 90) + net(45_000, 68),
                     batch_id="B1", acquirer="acq-batch")]
    [f] = _findings(events, "2026-10-10 00:00")
    ev = _evidence_for_people(f.evidence, f, policy())
    assert ev["cause_detail"]["fee_bps_charged"] == {"credit": 90, "qr": 68}
    last = ev["statement"][-1]
    assert last.startswith("expected ")
    assert ("probable cause: fee_rate_mismatch (fee charged credit 90 bps, qr 68 bps; agreed "
            "credit 60 bps, qr 38 bps; a common offset") in last


def test_the_evidence_of_a_netted_refund_names_the_refund():
    events = [sale("a1", "2026-10-09 10:00", 10_000),
              credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
              refund("a1", "2026-10-09 10:40", 2_500, event_id="r-a1"),
              sale("a2", "2026-10-09 11:00", 20_000),
              credit("c2", "2026-10-09 11:20", net(20_000) - 2_500, auth_ids=("a2",))]
    [f] = _findings(events, "2026-10-12 00:00")
    last = _evidence_for_people(f.evidence, f, policy())["statement"][-1]
    assert last.endswith("probable cause: refund_netted (refund r-a1 of sale a1, 25.00 CNY, "
                         "netted in)")


def test_no_statement_line_reads_as_a_card_number_when_a_masked_card_meets_a_large_amount():
    from streams import wire
    # "411111******1111: 1,234,567.89" would join 1111 and the amount's digits into 13 digits
    # (1111 then 123456794 passes Luhn)
    events = [sale("big", "2026-10-09 10:00", 123_456_794, pan_masked="411111******1111")]
    [f] = [f for f in feed(Reconciler(policy()), events, ms("2026-10-20 00:00"))
           if f.kind.value == "missing"]
    ev = _evidence_for_people(f.evidence, f, policy())
    for line in ev["statement"]:
        assert not wire.text_has_pan(line), line
