"""Probable causes, explanation by explanation: each case is a credit and the cause it gets.

Fees agreed (as in tests/core/builders.py): credit 60 bps, debit 50 bps capped at 20.00, QR 38
bps. Candidate rates an acquirer may charge by mistake: the policy's and common market rates.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field

import pytest

from streams.core.causes import (
    CHANCE_WEIGHT,
    COST,
    CreditFacts,
    Deduction,
    Equation,
    Sale,
    Terms,
    explain,
    fit_channel_rates,
)
from streams.core.policy import Tolerance, default_policy
from streams.core.reconcile import COMMON_FEE_BPS, Reconciler, feed
from streams.sim.simulator import SimConfig, Simulation

from .builders import credit, ms, net, policy, refund, reversal, sale

TERMS = {"credit": Terms(60), "debit": Terms(50, 2000), "qr": Terms(38)}
CANDIDATES = tuple(sorted({38, 50, 60} | set(COMMON_FEE_BPS)))


def fee(amount: int, bps: int, cap: int | None = None, rounding: str = "half_up") -> int:
    raw = amount * bps
    f = -(-raw // 10_000) if rounding == "ceil" else (raw + 5_000) // 10_000
    return f if cap is None else min(f, cap)


def expected_net(sales: list[Sale], offset: int = 0, rounding: str = "half_up",
                 rates: dict[str, int] | None = None) -> int:
    """What the sales credit at the agreed rates + offset (or at `rates`), per-sale rounding."""
    total = 0
    for s in sales:
        if not s.approved:
            continue
        captured = max(s.amount_minor - s.reversed_minor, 0)
        t = TERMS[s.channel]
        bps = rates[s.channel] if rates else t.bps + offset
        total += captured - fee(captured, bps, t.cap_minor, rounding) - s.refunded_minor
    return total


MIXED = [Sale("s1", "credit", 120_000), Sale("s2", "debit", 80_000), Sale("s3", "qr", 45_000),
         Sale("s4", "credit", 33_300), Sale("s5", "qr", 9_900)]
ONE_QR = [Sale("q1", "qr", 100_000)]
E_MIXED = expected_net(MIXED)


@dataclass
class Case:
    name: str
    sales: list[Sale]
    received: int
    cause: str
    detail: dict = field(default_factory=dict)  # keys the detail must hold, with these values
    tolerance: int = 5
    fee_minor: int | None = None
    deductions: tuple = ()
    expected: int | None = None  # default: the sales at the agreed terms


CASES = [
    # A wrong fee table: every channel at its agreed rate + 30 bps. One credit cannot tell
    # the channels' rates apart, but it pins a common offset.
    Case("a batch with every channel charged 30 bps over its rate is a fee rate mismatch",
         MIXED, expected_net(MIXED, 30), "fee_rate_mismatch",
         {"model": "common_offset", "offset_bps": 30, "per_channel": False,
          "fee_bps_charged": {"credit": 90, "debit": 80, "qr": 68},
          "agreed_bps": {"credit": 60, "debit": 50, "qr": 38}}),
    Case("a wrong fee table 15 bps over is found as well",
         MIXED, expected_net(MIXED, 15), "fee_rate_mismatch",
         {"model": "common_offset", "offset_bps": 15}),
    Case("a sharply pinned offset that is not a multiple of 5 is still named",
         [Sale("b1", "credit", 4_000_000)], expected_net([Sale("b1", "credit", 4_000_000)], 17),
         "fee_rate_mismatch", {"model": "common_offset", "offset_bps": 17,
                               "fee_bps_charged": {"credit": 77}, "per_channel": True}),
    Case("the old single-rate guess still names a QR sale charged the credit rate",
         ONE_QR, net(100_000, 60), "fee_rate_mismatch",
         {"model": "one_rate", "fee_bps_charged": {"qr": 60}}),
    Case("a batch charged one common market rate on every channel is a fee rate mismatch",
         MIXED, expected_net(MIXED, rates={"credit": 78, "debit": 78, "qr": 78}),
         "fee_rate_mismatch", {"model": "one_rate",
                               "fee_bps_charged": {"credit": 78, "debit": 78, "qr": 78}}),
    Case("one channel charged another candidate rate is named with its channel",
         MIXED, expected_net(MIXED, rates={"credit": 60, "debit": 50, "qr": 100}),
         "fee_rate_mismatch", {"model": "one_channel", "channel": "qr",
                               "fee_bps_charged": {"credit": 60, "debit": 50, "qr": 100}}),
    Case("one channel at another rate is not named when so many guesses would catch the sum",
         MIXED, expected_net(MIXED, rates={"credit": 60, "debit": 50, "qr": 50}), "unknown"),
    Case("a debit sale charged its rate without the cap is a fee rate mismatch, cap ignored",
         [Sale("d1", "debit", 800_000), Sale("c1", "credit", 20_000)],
         800_000 - 4_000 + net(20_000), "fee_rate_mismatch",
         {"model": "cap_ignored", "caps_minor": {"debit": 2000}}),
    Case("a stated fee that explains the credit is a fee rate mismatch with the implied rate",
         ONE_QR, net(100_000, 38) - 77, "fee_rate_mismatch",
         {"model": "stated_fee", "fee_minor_stated": 457, "fee_minor_agreed": 380,
          "fee_bps_charged": {"qr": 45.7}}, tolerance=1, fee_minor=457),
    Case("a stated fee that differs but explains nothing is still a fee rate mismatch",
         ONE_QR, net(100_000, 38) - 9_999, "fee_rate_mismatch",
         {"model": "stated_fee_only", "explains_credit": False}, tolerance=1, fee_minor=457),
    Case("a stated fee as agreed rules out a fee explanation",
         [Sale("c1", "credit", 100_000)], net(100_000) - 300, "unknown", {"model": "none"},
         tolerance=1, fee_minor=600),
    # Returns.
    Case("a refund of an earlier sale netted into the credit is refund netted",
         MIXED, E_MIXED - 2_500, "refund_netted",
         {"model": "netted", "netted": {"type": "refund", "auth_id": "old1",
                                        "amount_minor": 2_500, "event_id": "r-old1"}},
         deductions=(Deduction("refund", "old1", 2_500, "r-old1"),)),
    Case("a reversal of an earlier sale netted into the credit is reversal netted",
         MIXED, E_MIXED - 7_000, "reversal_netted", {"model": "netted"},
         deductions=(Deduction("refund", "old1", 2_500, "r-old1"),
                     Deduction("reversal", "old2", 7_000, "v-old2"))),
    Case("a netted refund on top of a wrong fee table is named with both",
         MIXED, expected_net(MIXED, 30) - 2_500, "fee_rate_mismatch",
         {"model": "common_offset", "offset_bps": 30,
          "with": {"cause": "refund_netted", "model": "netted",
                   "netted": {"type": "refund", "auth_id": "old1", "amount_minor": 2_500,
                              "event_id": "r-old1"}}},
         deductions=(Deduction("refund", "old1", 2_500, "r-old1"),)),
    Case("a loose fee offset is not paired with one of many refunds that could fit by chance",
         [Sale("p1", "credit", 9_000)], net(9_000, 90) - 700, "unknown", tolerance=1,
         deductions=tuple(Deduction("refund", f"o{n}", 700 + n, f"r{n}") for n in (1, 2, 3))),
    Case("a credit that ignores the item's refund is refund not netted",
         [Sale("a1", "credit", 10_000, refunded_minor=3_000)], net(10_000), "refund_not_netted",
         {"refunded_minor": 3_000}, tolerance=1),
    Case("an item's refund netted a second time is refund netted",
         [Sale("a1", "credit", 10_000, refunded_minor=3_000)], net(10_000) - 6_000,
         "refund_netted", {"model": "refund_netted_twice"}, tolerance=1),
    Case("a credit that ignores a partial reversal is reversal not netted",
         [Sale("a1", "credit", 10_000, reversed_minor=4_000)], net(10_000),
         "reversal_not_netted", {"reversed_minor": 4_000}, tolerance=1),
    # Sales of a batch.
    Case("a batch credit that leaves one sale out is a missing sale, naming the sale",
         MIXED, E_MIXED - (45_000 - fee(45_000, 38)), "missing_sale",
         {"auth_id": "s3", "sales_that_fit": 1}),
    Case("a batch credit that pays a declined sale is a declined sale, naming the sale",
         MIXED + [Sale("d1", "credit", 25_000, approved=False)],
         E_MIXED + net(25_000), "declined_sale", {"auth_id": "d1"}),
    # Rounding: only beyond the tolerance when the tolerance is nil.
    Case("fees rounded up on every sale under a zero tolerance is a rounding rule",
         [Sale("r1", "credit", 10_010), Sale("r2", "credit", 20_030), Sale("r3", "qr", 7_710)],
         expected_net([Sale("r1", "credit", 10_010), Sale("r2", "credit", 20_030),
                       Sale("r3", "qr", 7_710)], rounding="ceil"),
         "rounding_rule", {"rounding": "ceil"}, tolerance=0),
    # What stays unknown.
    Case("an unexplained shortfall on one sale stays unknown",
         [Sale("a1", "credit", 10_000)], net(10_000) - 1_234, "unknown",
         {"difference_minor": -1_234}, tolerance=1),
    Case("a random surplus on a batch is not blamed on a lower fee table",
         MIXED, E_MIXED + 777, "unknown", {"model": "none"}),
    Case("a shortfall of two minor units is not a 2 bps fee table",
         [Sale("a1", "credit", 10_000)], net(10_000) - 2, "unknown", tolerance=1),
    Case("an offset beyond 1 percent is not a fee table",
         [Sale("a1", "credit", 10_000), Sale("a2", "credit", 10_000)],
         2 * net(10_000) - 300, "unknown", tolerance=2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case):
    expected = expected_net(case.sales) if case.expected is None else case.expected
    cause, detail = explain(case.sales, TERMS,
                            CreditFacts(case.received, expected, case.tolerance, case.fee_minor),
                            deductions=case.deductions, candidate_bps=CANDIDATES)
    assert cause == case.cause, detail
    assert {k: detail.get(k) for k in case.detail} == case.detail, detail
    # plain JSON data: it goes into the evidence files as it is (no numpy scalars)
    assert json.loads(json.dumps(detail)) == detail


def test_the_same_input_gives_the_same_explanation_whatever_the_order_of_candidates():
    facts = CreditFacts(expected_net(MIXED, 30), E_MIXED, 5)
    a = explain(MIXED, TERMS, facts, candidate_bps=CANDIDATES)
    b = explain(list(MIXED), dict(reversed(list(TERMS.items()))), facts,
                candidate_bps=tuple(reversed(CANDIDATES)))
    assert a == b


def test_the_detail_names_the_runners_up_and_the_winner_has_the_lowest_score():
    # A refund netted and a missing sale both fit exactly: the aggregate change (one guess)
    # beats one sale of two (two guesses, a higher prior).
    sales = [Sale("x1", "credit", 50_000), Sale("x2", "credit", 2_515)]
    lost = 2_515 - fee(2_515, 60)
    cause, detail = explain(sales, TERMS, CreditFacts(expected_net(sales) - lost,
                                                      expected_net(sales), 2),
                            deductions=(Deduction("refund", "old", lost, "r-old"),))
    assert cause == "refund_netted"
    [runner] = [a for a in detail["alternatives"] if a["cause"] == "missing_sale"]
    # score = cost + CHANCE_WEIGHT x chance of a random fit + |residual| / (tolerance + 1)
    assert detail["score"] == COST["netted"] + CHANCE_WEIGHT * detail["chance_fit"]
    assert detail["score"] < runner["score"]


def test_amounts_beyond_the_int64_range_are_explained_exactly():
    huge = [Sale("h1", "credit", 10**17), Sale("h2", "qr", 3 * 10**16)]
    cause, detail = explain(huge, TERMS, CreditFacts(expected_net(huge, 30), expected_net(huge),
                                                     2))
    assert (cause, detail["offset_bps"], detail["residual_minor"]) == ("fee_rate_mismatch", 30, 0)


def test_several_credits_with_different_channel_mixes_give_each_channels_rate():
    rates = {"credit": 95, "debit": 72, "qr": 41}  # no common offset: only several credits tell
    rng = random.Random(3)
    eqs = []
    for n in range(4):
        sales = [Sale(f"e{n}-{k}", ch, rng.randrange(5_000, 200_000))
                 for k, ch in enumerate(["credit", "debit", "qr"] * (n + 1)) if rng.random() < .8]
        eqs.append(Equation(sales, sum(fee(s.amount_minor, rates[s.channel],
                                           TERMS[s.channel].cap_minor) for s in sales)))
    fitted = fit_channel_rates(eqs, TERMS)
    assert fitted is not None and fitted["fee_bps_charged"] == rates
    first = eqs[0].sales
    cause, detail = explain(first, TERMS,
                            CreditFacts(expected_net(first, rates=rates), expected_net(first),
                                        len(first)),
                            others=eqs[1:])
    assert (cause, detail["model"], detail["fee_bps_charged"]) == (
        "fee_rate_mismatch", "per_channel", rates)


def test_one_credit_cannot_give_rates_per_channel():
    sales = [Sale("a", "credit", 50_000), Sale("b", "qr", 50_000)]
    assert fit_channel_rates([Equation(sales, 600)], TERMS) is None
    # two credits with the same mix are one equation twice: still not identifiable
    assert fit_channel_rates([Equation(sales, 600), Equation(sales, 600)], TERMS) is None


# ---- through the reconciler -----------------------------------------------------------------


def _batch_findings(events, until="2026-10-10 00:00"):
    return [f for f in feed(Reconciler(policy()), events, ms(until))
            if f.kind.value in ("underpaid", "overpaid")]


def _b(auth_id, at, amount, channel, **kw):
    return sale(auth_id, at, amount, acquirer="acq-batch", batch_id="B1", channel=channel, **kw)


BATCH = [_b("b1", "2026-10-08 10:00", 120_000, "credit"),
         _b("b2", "2026-10-08 11:00", 80_000, "debit"),
         _b("b3", "2026-10-08 12:00", 45_000, "qr"),
         _b("b4", "2026-10-08 13:00", 9_900, "qr")]
BATCH_NET = net(120_000) + net(80_000, 50, 2000) + net(45_000, 38) + net(9_900, 38)


def test_a_batch_charged_30_bps_over_on_every_channel_names_the_rates_in_the_evidence():
    received = net(120_000, 90) + net(80_000, 80, 2000) + net(45_000, 68) + net(9_900, 68)
    [f] = _batch_findings(BATCH + [credit("cb", "2026-10-09 09:00", received, batch_id="B1",
                                          acquirer="acq-batch")])
    assert (f.kind.value, f.subject, f.probable_cause) == ("underpaid", "B1", "fee_rate_mismatch")
    d = f.evidence["cause_detail"]
    assert (d["model"], d["offset_bps"]) == ("common_offset", 30)
    assert d["fee_bps_charged"] == {"credit": 90, "debit": 80, "qr": 68}
    assert d["agreed_bps"] == {"credit": 60, "debit": 50, "qr": 38}


def test_a_batch_credit_without_one_sale_is_a_missing_sale():
    [f] = _batch_findings(BATCH + [credit("cb", "2026-10-09 09:00", BATCH_NET - net(45_000, 38),
                                          batch_id="B1", acquirer="acq-batch")])
    assert (f.probable_cause, f.evidence["cause_detail"]["auth_id"]) == ("missing_sale", "b3")


def test_a_batch_credit_paying_a_declined_sale_is_a_declined_sale():
    events = BATCH + [_b("b5", "2026-10-08 14:00", 30_000, "credit", status="declined"),
                      credit("cb", "2026-10-09 09:00", BATCH_NET + net(30_000), batch_id="B1",
                             acquirer="acq-batch")]
    [f] = _batch_findings(events)
    assert (f.kind.value, f.probable_cause) == ("overpaid", "declined_sale")


def test_a_netted_refund_is_consumed_by_the_credit_it_explains():
    events = [sale("a1", "2026-10-09 10:00", 10_000),
              credit("c1", "2026-10-09 10:20", net(10_000), auth_ids=("a1",)),
              refund("a1", "2026-10-09 10:40", 2_500),
              sale("a2", "2026-10-09 11:00", 20_000),
              credit("c2", "2026-10-09 11:20", net(20_000) - 2_500, auth_ids=("a2",)),
              sale("a3", "2026-10-09 12:00", 20_000),
              credit("c3", "2026-10-09 12:20", net(20_000) - 2_500, auth_ids=("a3",))]
    found = [(f.subject, f.probable_cause) for f in _batch_findings(events, "2026-10-12 00:00")]
    assert found == [("a2", "refund_netted"), ("a3", "unknown")]


def test_a_reversal_the_credit_ignores_is_reversal_not_netted_in_a_batch_too():
    events = BATCH + [reversal("b1", "2026-10-08 10:05", 20_000, acquirer="acq-batch",
                               batch_id="B1"),
                      credit("cb", "2026-10-09 09:00", BATCH_NET, batch_id="B1",
                             acquirer="acq-batch")]
    [f] = _batch_findings(events)
    assert (f.kind.value, f.probable_cause) == ("overpaid", "reversal_not_netted")


def test_the_simulators_wrong_fee_table_is_found_in_nine_batches_of_ten():
    p = default_policy()
    start = ms("2026-11-12T00:00:00Z")
    cfg = SimConfig(start_ms=start, end_ms=start + 3 * 86_400_000, merchants=300,
                    sales_per_second=0.05, seed=5, acquirers=("acq-t1", "acq-d0"),
                    faults={"fee_table": 0.2})
    sim = Simulation(cfg, p)
    events = sorted(sim.events(), key=lambda e: e.event_time_ms)
    put_in = {f.subject for f in sim.injected if f.kind == "fee_table"}
    assert len(put_in) >= 50
    found = {f.subject: f.probable_cause for f in feed(Reconciler(p), events,
                                                       start + 12 * 86_400_000)
             if f.kind.value == "underpaid"}
    right = sum(found.get(s) == "fee_rate_mismatch" for s in put_in)
    assert right >= 0.9 * len(put_in), (right, len(put_in))


def test_under_a_zero_tolerance_the_simulators_clean_credits_raise_nothing():
    # bench causes puts rounding faults into this traffic: without them it must be silent
    exact = dataclasses.replace(default_policy(), tolerance=Tolerance(0, 0))
    start = ms("2026-11-12T00:00:00Z")
    cfg = SimConfig(start_ms=start, end_ms=start + 86_400_000, merchants=50,
                    sales_per_second=0.02, seed=2)
    events = sorted(Simulation(cfg, exact).events(), key=lambda e: e.event_time_ms)
    assert [f for f in feed(Reconciler(exact), events, start + 10 * 86_400_000)
            if f.kind.value in ("underpaid", "overpaid")] == []


def test_short_batches_under_one_wrong_table_give_each_channels_rate_once_they_confirm_it():
    # credit 60 -> 85 and qr 38 -> 45 bps, debit as agreed: not a common offset, and no
    # single credit of several channels can tell; four batches of differing mixes can.
    charged = {"credit": 85, "debit": 50, "qr": 45}
    mixes = [(300_000, 200_000, 100_000), (50_000, 400_000, 250_000),
             (420_000, 0, 90_000), (130_000, 170_000, 600_000)]
    events = []
    for day, mix in enumerate(mixes):
        date = f"2026-10-{12 + day}"
        batch = f"W{day}"
        received = 0
        for channel, amount in zip(("credit", "debit", "qr"), mix):
            if amount:
                events.append(sale(f"{batch}-{channel}", f"{date} 10:00", amount,
                                   acquirer="acq-batch", batch_id=batch, channel=channel))
                cap = 2000 if channel == "debit" else None
                received += net(amount, charged[channel], cap)
        events.append(credit(f"c{batch}", f"{date} 23:30", received, batch_id=batch,
                             acquirer="acq-batch"))
    found = _batch_findings(events, "2026-10-20 00:00")
    assert [f.subject for f in found] == ["W0", "W1", "W2", "W3"]
    # alone, the first batch is not explained (three channels, one equation)
    assert found[0].probable_cause == "unknown"
    last = found[-1].evidence["cause_detail"]
    assert found[-1].probable_cause == "fee_rate_mismatch"
    assert (last["model"], last["fee_bps_charged"], last["credits"]) == (
        "per_channel", charged, 4)
