"""`settlewatch bench early-warning`: the early warning measured on simulated weeks (one line).

Two runs of the same simulated traffic (same seed) through the pure reconciler with an
:class:`~streams.core.earlywarning.EarlyWarning` on its observer hooks:

- steady: no slowdown. Every warning raised is false: reported per acquirer-week (an
  acquirer-week is one acquirer over 7 days of event time; a warning is one acquirer's
  deadline, whatever the number of channels that warned on it).
- slowed: from day ``--slow-from-day`` the acquirer ``--slowed`` books its credits
  ``--delay`` later. Lead time = the event time of the first "missing" finding for it minus
  the step of its first early warning for a slowed deadline (the simulator slows the credits
  of the deadlines from that day on; a per-sale acquirer's warning can come the day before).

The fixed rule that exists today (SettlewatchSettlementDelayAnomalous in
alerts/settlewatch.rules.yaml) is evaluated on the same two runs, over the same observations
its metric gets: `settlewatch_settlement_delay_seconds` is observed when the reconciler reports
an item settled (`on_settled`: at the item's close for a credit booked in time, on arrival for
one after it), in the DELAY_BUCKETS of streams/live/metrics.py. Every 15 minutes of event time
the bench computes both recording rules (`histogram_quantile(0.9, ...)` over the increase of the
buckets in the last 6h, and over the 7d before those 6h; the same linear interpolation inside a
bucket as Prometheus) and the alert's three conditions with the thresholds read from the rules
file; the alert fires once its expression has held for its `for:` (15m: two evaluations).
"""
from __future__ import annotations

import bisect
import math
import re
import time
from collections import defaultdict
from pathlib import Path

from streams.core.earlywarning import EarlyWarning
from streams.core.events import FindingKind, Status
from streams.core.policy import Policy
from streams.core.reconcile import Reconciler
from streams.live.metrics import DELAY_BUCKETS
from streams.sim.simulator import SimConfig, Simulation, parse_faults

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
WEEK = 7 * DAY
START_MS = 1_772_928_000_000  # 2026-03-08T00:00:00Z, a Sunday after the Spring Festival
RULES = Path(__file__).resolve().parents[2] / "alerts" / "settlewatch.rules.yaml"
NOISE = "late=0.5%,missing=0.3%,duplicate=0.3%,underpaid=0.5%,refund_netted=0.3%"


class _Observer:
    """The reconciler's observer in the bench: the early warning's hooks, and the
    settlement-delay observations the old rule's histogram gets."""

    def __init__(self, ew: EarlyWarning) -> None:
        self.ew = ew
        self.on_sale_due = ew.on_sale_due
        self.on_sale_paid = ew.on_sale_paid
        self.delays: list[tuple[str, int]] = []  # (acquirer, delay ms) since the last take

    def on_settled(self, acquirer, currency, delay_ms, amount_minor, channel=""):
        self.delays.append((acquirer, delay_ms))

    def on_item_opened(self, acquirer, currency, channel=""):
        pass

    def on_item_closed(self, acquirer, matched, channel=""):
        pass

    def on_late_data(self, source):
        pass

    def on_redelivery(self, source):
        pass


def _thresholds() -> dict[str, float]:
    text = RULES.read_text()
    out = {}
    for name in ("delay_factor", "delay_excess_seconds", "delay_min_settled_6h"):
        m = re.search(rf"record: settlewatch:alert_threshold:{name}\s+expr: vector\(([\d.]+)\)",
                      text)
        if not m:
            raise RuntimeError(f"alerts/settlewatch.rules.yaml has no threshold {name}")
        out[name] = float(m.group(1))
    return out


def _histogram_quantile(q: float, counts: list[float]) -> float:
    """Prometheus' histogram_quantile over cumulative-free bucket counts (le = DELAY_BUCKETS
    then +Inf): linear inside the bucket, the highest finite bound for +Inf, NaN if empty."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    cum = 0.0
    for i, c in enumerate(counts):
        if cum + c >= rank:
            if i == len(DELAY_BUCKETS):
                return float(DELAY_BUCKETS[-1])
            lo = 0.0 if i == 0 else float(DELAY_BUCKETS[i - 1])
            hi = float(DELAY_BUCKETS[i])
            return lo + (hi - lo) * ((rank - cum) / c if c else 0.0)
        cum += c
    return float(DELAY_BUCKETS[-1])


class _OldRule:
    """SettlewatchSettlementDelayAnomalous over 15-minute slices of bucket counts."""

    SLICE = 15 * MIN

    def __init__(self) -> None:
        self.t = _thresholds()
        # acquirer -> slice number -> bucket counts
        self.slices: dict[str, dict[int, list[int]]] = defaultdict(dict)
        self.held: dict[str, bool] = {}
        self.fired: list[tuple[str, int]] = []  # (acquirer, event time the alert fired)

    def observe(self, acquirer: str, delay_ms: int, at_ms: int) -> None:
        n = at_ms // self.SLICE
        row = self.slices[acquirer].get(n)
        if row is None:
            row = self.slices[acquirer][n] = [0] * (len(DELAY_BUCKETS) + 1)
        row[bisect.bisect_left(DELAY_BUCKETS, delay_ms / 1000)] += 1

    def _sum(self, acquirer: str, first: int, last: int) -> list[int]:
        out = [0] * (len(DELAY_BUCKETS) + 1)
        for n, row in self.slices[acquirer].items():
            if first <= n < last:
                for i, c in enumerate(row):
                    out[i] += c
        return out

    def evaluate(self, at_ms: int) -> None:
        n = at_ms // self.SLICE
        six_h, week = 6 * HOUR // self.SLICE, WEEK // self.SLICE
        for acquirer in self.slices:
            recent = self._sum(acquirer, n - six_h, n)
            before = self._sum(acquirer, n - six_h - week, n - six_h)
            p90, p90_before = (_histogram_quantile(0.9, recent),
                               _histogram_quantile(0.9, before))
            holds = (not math.isnan(p90) and not math.isnan(p90_before)
                     and p90 > p90_before * self.t["delay_factor"]
                     and p90 - p90_before > self.t["delay_excess_seconds"]
                     and sum(recent) >= self.t["delay_min_settled_6h"])
            if holds and self.held.get(acquirer):  # held at the previous evaluation: for 15m
                if not self.fired or self.fired[-1][0] != acquirer or \
                        self.fired[-1][1] < at_ms - self.SLICE:
                    self.fired.append((acquirer, at_ms))
            self.held[acquirer] = holds


def _run(policy: Policy, weeks: float, seed: int, merchants: int, rate: float,
         slowdowns: tuple[tuple[str, int, int], ...]) -> dict:
    cfg = SimConfig(start_ms=START_MS, end_ms=START_MS + int(weeks * WEEK), merchants=merchants,
                    sales_per_second=rate, seed=seed, jitter_ms=2 * MIN,
                    faults=parse_faults(NOISE), slowdowns=slowdowns)
    ew = EarlyWarning(policy)
    obs = _Observer(ew)
    rec = Reconciler(policy, obs)
    old = _OldRule()
    warnings: list = []
    missing: list[tuple[str, int]] = []
    next_eval = START_MS + _OldRule.SLICE
    chunk: list = []
    events = 0

    def step(findings) -> None:
        nonlocal next_eval
        for f in findings:
            if f.kind == FindingKind.MISSING and f.status == Status.OPEN:
                missing.append((f.acquirer, f.event_time_ms))
        clock = rec.clock_ms
        for acquirer, delay in obs.delays:
            old.observe(acquirer, delay, clock)
        obs.delays.clear()
        warnings.extend(ew.advance_to(clock))
        while next_eval <= clock:
            old.evaluate(next_eval)
            next_eval += _OldRule.SLICE

    for e in Simulation(cfg, policy).events():
        chunk.append(e)
        events += 1
        if len(chunk) >= 100:  # about 7 minutes of event time: less than a step
            step(rec.on_events(chunk))
            chunk = []
    step(rec.on_events(chunk))
    step(rec.advance_to(cfg.end_ms + 3 * DAY))
    acquirers = sorted({w.acquirer for w in warnings} | {a for a, _ in missing}
                       | set(old.slices))
    return {"events": events, "warnings": warnings, "missing": missing, "old": old.fired,
            "acquirers": acquirers, "ew": ew}


def _per_acquirer_week(raised: set[tuple[str, int]], acquirers: list[str], weeks: float) -> float:
    return round(len(raised) / (len(acquirers) * weeks), 3) if acquirers else 0.0


def run(policy: Policy, *, weeks: float = 5.0, seed: int = 11, merchants: int = 200,
        rate: float = 0.1, slowed: str = "acq-t1", slow_from_day: int = 28,
        delay_ms: int = 3 * HOUR) -> dict:
    started = time.perf_counter()
    steady = _run(policy, weeks, seed, merchants, rate, ())
    slow_from = START_MS + slow_from_day * DAY
    slow = _run(policy, weeks, seed, merchants, rate, ((slowed, slow_from, delay_ms),))
    cfg = policy.early_warning
    warm = START_MS + (cfg.min_history + 2) * DAY  # before this no acquirer can warn yet

    steady_raised = {(w.acquirer, w.deadline_ms) for w in steady["warnings"]}
    by_acq: dict[str, int] = {a: 0 for a in steady["acquirers"]}
    for a, _ in steady_raised:
        by_acq[a] = by_acq.get(a, 0) + 1
    # weeks in which a warning could be raised at all (after min_history settle days)
    live_weeks = (START_MS + weeks * WEEK - warm) / WEEK

    first_missing = min((t for a, t in slow["missing"] if a == slowed and t >= slow_from),
                        default=None)
    # the simulator slows the credits of the deadlines from slow_from on: a warning for one of
    # them is a true one even when it comes before slow_from (a per-sale acquirer's day before)
    first_warning = min((w for w in slow["warnings"] if w.acquirer == slowed
                         and w.deadline_ms >= slow_from), key=lambda w: w.at_ms, default=None)
    first_old = min((t for a, t in slow["old"] if a == slowed and t >= slow_from), default=None)
    others_false = {(w.acquirer, w.deadline_ms) for w in slow["warnings"]
                    if w.acquirer != slowed or w.deadline_ms < slow_from}

    def lead(t: int | None) -> float | None:
        if t is None or first_missing is None:
            return None
        return round((first_missing - t) / HOUR, 2)

    return {
        "bench": "early-warning",
        "weeks": weeks, "seed": seed, "merchants": merchants, "sales_per_s": rate,
        "events_per_run": steady["events"],
        "acquirers": steady["acquirers"],
        "slowed": slowed, "slow_from": _iso(slow_from), "delay_h": round(delay_ms / HOUR, 2),
        "first_missing": _iso(first_missing),
        "first_warning": _iso(first_warning.at_ms if first_warning else None),
        "lead_time_h": lead(first_warning.at_ms if first_warning else None),
        "warning_text": first_warning.text if first_warning else None,
        "false_warnings_steady": len(steady_raised),
        "false_warnings_steady_by_acquirer": by_acq,
        "false_warnings_per_acquirer_week": _per_acquirer_week(
            steady_raised, steady["acquirers"], live_weeks),
        "false_warnings_slowed_run_other": len(others_false),
        "old_rule_first_fire": _iso(first_old),
        "old_rule_lead_time_h": lead(first_old),
        "old_rule_fires_steady": len(steady["old"]),
        "old_rule_false_per_acquirer_week": round(
            len(steady["old"]) / (len(steady["acquirers"]) * live_weeks), 3),
        "weeks_after_warm_up": round(live_weeks, 2),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    from streams.wire.times import format_time_ms
    return format_time_ms(ms)
