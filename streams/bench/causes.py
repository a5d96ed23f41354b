"""How often the reconciler names the right probable cause: a confusion table.

    settlewatch bench causes [--days 6] [--seed 7] [--fault-share 0.04] [--fee-table-bps 30]

A clean simulated stream (default policy, every cycle, no holidays in the period) gets one fault
per settlement credit it touches, and each credit's under- or over-paid finding is compared with
the fault put in:

- from the simulator (streams.sim.simulator): ``fee_table`` (every channel charged its agreed
  rate + 30 bps, or ``--fee-table-bps``: a wrong fee table at the acquirer) and ``underpaid`` (one wrong rate, 60 or
  78 bps, for every sale);
- applied here to credits of the clean stream: ``refund_netted`` (a refund of a sale paid days
  before is netted into this credit), ``refund_not_netted`` (a refund before the close that the
  credit ignores), ``reversal_not_netted`` (a partial reversal the credit ignores),
  ``missing_sale`` (a batch credit leaves one sale out), ``declined_sale`` (a batch credit pays a
  declined sale), ``overpaid`` (a random surplus: nothing explains it, so the right answer is
  ``unknown``), and, under a zero tolerance, ``rounding_ceil`` (fees rounded up per sale).

Prints the table (rows: fault put in; columns: cause found, "-" for no finding) and one JSON line
with the share of each row found right. Pure computation: no Kafka, no files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from streams.core.events import AUTHORISATION, DECLINED, REFUND, REVERSAL, Credit, PosEvent
from streams.core.policy import Policy, Tolerance, default_policy
from streams.core.reconcile import Reconciler, feed
from streams.sim.simulator import SimConfig, Simulation

DAY_MS = 86_400_000
START_MS = 1_794_441_600_000  # 2026-11-12T00:00:00Z: no holiday within two weeks

# fault put in -> the probable cause that is right for it
RIGHT = {
    "fee_table": "fee_rate_mismatch",
    "underpaid": "fee_rate_mismatch",
    "refund_netted": "refund_netted",
    "refund_not_netted": "refund_not_netted",
    "reversal_not_netted": "reversal_not_netted",
    "missing_sale": "missing_sale",
    "declined_sale": "declined_sale",
    "overpaid": "unknown",
    "rounding_ceil": "rounding_rule",
}
HERE = ("refund_netted", "refund_not_netted", "reversal_not_netted", "missing_sale",
        "declined_sale", "overpaid")


@dataclasses.dataclass
class _Paid:
    """One credit of the clean stream and the sales of the item it pays."""

    credit: Credit
    subject: str
    batch: bool
    sales: list[PosEvent]  # approved and not voided
    declined: list[PosEvent]


def _fee(policy: Policy, channel: str, amount: int, rounding: str = "half_up") -> int:
    rule = policy.fee_rule(channel)
    if rounding == "ceil":
        fee = -(-amount * rule.bps // 10_000)
    else:
        fee = (amount * rule.bps + 5_000) // 10_000
    return fee if rule.cap_minor is None else min(fee, rule.cap_minor)


def _paid_items(events: list, injected: set[str]) -> list[_Paid]:
    sales: dict[str, PosEvent] = {}
    voided: set[str] = set()
    by_batch: dict[str, list[PosEvent]] = defaultdict(list)
    out = []
    for e in events:
        if isinstance(e, PosEvent):
            if e.type == AUTHORISATION:
                sales[e.auth_id] = e
                if e.batch_id is not None:
                    by_batch[e.batch_id].append(e)
            elif e.type == REVERSAL:
                voided.add(e.auth_id)
    for e in events:
        if not isinstance(e, Credit):
            continue
        batch = e.batch_id is not None
        subject = e.batch_id if batch else e.auth_ids[0]
        if subject in injected:
            continue
        members = by_batch[e.batch_id] if batch else [sales[a] for a in e.auth_ids]
        ok = [s for s in members if s.status != DECLINED and s.auth_id not in voided]
        bad = [s for s in members if s.status == DECLINED]
        out.append(_Paid(e, subject, batch, ok, bad))
    return out


Run = tuple[tuple[str, ...], int, float]  # acquirers, merchants, sales per second


def _config(run: Run, days: float, seed: int, faults: dict[str, float],
            fee_table_bps: int = 30) -> SimConfig:
    acquirers, merchants, sales_per_second = run
    return SimConfig(start_ms=START_MS, end_ms=START_MS + int(days * DAY_MS), merchants=merchants,
                     sales_per_second=sales_per_second, seed=seed, void_rate=0.0,
                     acquirers=acquirers, faults=faults, fee_table_bps=fee_table_bps)


def _faulted_stream(policy: Policy, run: Run, days: float, seed: int, fault_share: float,
                    fee_table_bps: int = 30) -> tuple[list, dict[str, str], dict[str, str]]:
    """The stream with faults, the fault per subject, and each subject's mode (_modes)."""
    sim = Simulation(_config(run, days, seed, {"fee_table": fault_share,
                                               "underpaid": fault_share}, fee_table_bps), policy)
    events = list(sim.events())
    truth = {f.subject: f.kind for f in sim.injected}
    rng = random.Random(seed)
    paid = _paid_items(events, set(truth))
    modes = _modes(events)
    replace: dict[str, Credit] = {}  # credit_id -> its faulted version
    extra: list[PosEvent] = []
    ids = iter(range(1, 1 << 30))
    # refunds netted into a later credit: sales paid at least 4 days before (their items closed)
    paid_before = sorted(((p.credit.event_time_ms, p) for p in paid if p.sales),
                         key=lambda t: (t[0], t[1].credit.credit_id))
    for p in paid:
        if not p.sales or rng.random() >= len(HERE) * fault_share:
            continue
        kind = HERE[rng.randrange(len(HERE))]
        c = p.credit
        s = p.sales[rng.randrange(len(p.sales))]
        if kind == "refund_netted":
            earlier = [q for t, q in paid_before if t < c.event_time_ms - 4 * DAY_MS
                       and q.credit.merchant_id == c.merchant_id
                       and q.credit.acquirer == c.acquirer and q.subject not in truth]
            if not earlier:
                continue
            q = earlier[rng.randrange(len(earlier))]
            old = q.sales[rng.randrange(len(q.sales))]
            amount = max(1, old.amount_minor // 2)
            if amount >= c.amount_minor:
                continue
            extra.append(PosEvent(REFUND, f"RH{next(ids)}", old.auth_id, old.merchant_id,
                                  old.terminal_id, old.acquirer, old.channel, amount,
                                  old.currency, c.event_time_ms - 3_600_000,
                                  batch_id=old.batch_id))
            replace[c.credit_id] = c._replace(amount_minor=c.amount_minor - amount)
        elif kind == "refund_not_netted":
            amount = max(1, s.amount_minor // 3)
            extra.append(PosEvent(REFUND, f"RH{next(ids)}", s.auth_id, s.merchant_id,
                                  s.terminal_id, s.acquirer, s.channel, amount, s.currency,
                                  s.event_time_ms + 60_000, batch_id=s.batch_id))
        elif kind == "reversal_not_netted":
            amount = max(1, s.amount_minor // 2)
            extra.append(PosEvent(REVERSAL, f"VH{next(ids)}", s.auth_id, s.merchant_id,
                                  s.terminal_id, s.acquirer, s.channel, amount, s.currency,
                                  s.event_time_ms + 60_000, batch_id=s.batch_id))
        elif kind == "missing_sale":
            if not p.batch or len(p.sales) < 2:
                continue
            lost = s.amount_minor - _fee(policy, s.channel, s.amount_minor)
            replace[c.credit_id] = c._replace(amount_minor=c.amount_minor - lost)
        elif kind == "declined_sale":
            if not p.batch or not p.declined:
                continue
            d = p.declined[rng.randrange(len(p.declined))]
            paid_for = d.amount_minor - _fee(policy, d.channel, d.amount_minor)
            replace[c.credit_id] = c._replace(amount_minor=c.amount_minor + paid_for)
        else:  # overpaid: a surplus nothing explains
            replace[c.credit_id] = c._replace(
                amount_minor=c.amount_minor + rng.randrange(500, 5_000))
        truth[p.subject] = kind
    out = [replace.get(e.credit_id, e) if isinstance(e, Credit) else e for e in events]
    return out + extra, truth, modes


def _modes(events: list) -> dict[str, str]:
    """subject -> "per_sale", "batch<=5" or "batch>5" (by its number of sales)."""
    sizes: Counter = Counter()
    modes = {}
    for e in events:
        if isinstance(e, PosEvent) and e.type == AUTHORISATION:
            if e.batch_id is None:
                modes[e.auth_id] = "per_sale"
            else:
                sizes[e.batch_id] += 1
    modes.update({b: "batch<=5" if n <= 5 else "batch>5" for b, n in sizes.items()})
    return modes


def _rounding_stream(policy: Policy, run: Run, days: float, seed: int,
                     fault_share: float) -> tuple[list, dict[str, str], dict[str, str]]:
    """Under the given policy (zero tolerance), some credits take their fees rounded up."""
    events = list(Simulation(_config(run, days, seed, {}), policy).events())
    rng = random.Random(seed + 1)
    truth: dict[str, str] = {}
    replace: dict[str, Credit] = {}
    for p in _paid_items(events, set()):
        if not p.sales or rng.random() >= fault_share:
            continue
        ceil = sum(s.amount_minor - _fee(policy, s.channel, s.amount_minor, "ceil")
                   for s in p.sales)
        half = sum(s.amount_minor - _fee(policy, s.channel, s.amount_minor) for s in p.sales)
        if ceil == half:
            continue  # no sale's fee had a fraction below one half: nothing to see
        replace[p.credit.credit_id] = p.credit._replace(
            amount_minor=p.credit.amount_minor - half + ceil)
        truth[p.subject] = "rounding_ceil"
    return ([replace.get(e.credit_id, e) if isinstance(e, Credit) else e for e in events],
            truth, _modes(events))


def confusion(policy: Policy, events: list, truth: dict[str, str], modes: dict[str, str],
              until_ms: int) -> dict[tuple[str, str], Counter]:
    """(fault, mode) -> Counter of the cause found ("-": no amount finding)."""
    events = sorted(events, key=lambda e: e.event_time_ms)
    found: dict[str, str] = {}
    for f in feed(Reconciler(policy), events, until_ms):
        if f.kind.value in ("underpaid", "overpaid") and f.subject in truth:
            found.setdefault(f.subject, f.probable_cause or "-")
    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for subject, kind in truth.items():
        table[(kind, modes.get(subject, "?"))][found.get(subject, "-")] += 1
    return table


def render(table: dict[tuple[str, str], Counter]) -> tuple[str, dict]:
    causes = sorted({c for row in table.values() for c in row})
    rows = sorted(table, key=lambda k: (list(RIGHT).index(k[0]), k[1]))
    head = ["fault put in", "mode", "n"] + causes + ["right"]
    lines = [head]
    shares = {}
    for kind, mode in rows:
        row = table[(kind, mode)]
        n = sum(row.values())
        right = row[RIGHT[kind]] / n if n else 0.0
        shares[f"{kind}/{mode}"] = round(right, 3)
        lines.append([kind, mode, str(n)] + [str(row[c]) if row[c] else "." for c in causes]
                     + [f"{100 * right:.0f}%"])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))) for r in lines)
    return text, shares


BATCH = ("acq-t1", "acq-d0")
PER_SALE = ("acq-instant", "acq-std")
# (acquirers, merchants, sales per second): small batches (~3 sales), larger ones (~20), and
# per-sale credits
RUNS: tuple[Run, ...] = ((BATCH, 1_000, 0.035), (BATCH, 1_000, 0.23), (PER_SALE, 100, 0.02))


def run(days: float = 6, seed: int = 7, fault_share: float = 0.04,
        fee_table_bps: int = 30) -> tuple[str, dict]:
    policy = default_policy()
    until = START_MS + int((days + 10) * DAY_MS)
    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    exact = dataclasses.replace(policy, tolerance=Tolerance(0, 0))
    for n, one in enumerate(RUNS):
        events, truth, modes = _faulted_stream(policy, one, days, seed + n, fault_share,
                                               fee_table_bps)
        _merge(table, confusion(policy, events, truth, modes, until))
        # the same traffic, over a shorter period, with no tolerance and fees rounded up
        events, truth, modes = _rounding_stream(exact, one, days / 3, seed + n, fault_share)
        _merge(table, confusion(exact, events, truth, modes, until))
    return render(table)


def _merge(into: dict[tuple[str, str], Counter], more: dict[tuple[str, str], Counter]) -> None:
    for key, row in more.items():
        into[key].update(row)


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fault-share", type=float, default=0.04,
                    help="share of credits per fault kind")
    ap.add_argument("--fee-table-bps", type=int, default=30,
                    help="what the fault fee_table adds to every agreed rate")
    a = ap.parse_args(list(argv) if argv is not None else None)
    text, shares = run(a.days, a.seed, a.fault_share, a.fee_table_bps)
    print(text)
    print(json.dumps({"bench": "causes", "right": shares}))


if __name__ == "__main__":
    main()
