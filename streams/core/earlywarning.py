"""Early warning: each acquirer's own settlement baseline, and today's credits running behind it.

Theory of operation
===================

"Missing" fires at deadline + grace; by then the merchant has noticed. This module says earlier,
while the deadline is still ahead, that an acquirer (and channel) is paying later than it usually
does. It is pure: the reconciler reports sales and credits through two optional observer hooks
(``on_sale_due``, ``on_sale_paid``: the sale's acquirer, channel, currency, its item's deadline
and amount), and the shell moves its clock with :meth:`EarlyWarning.advance_to` (event time:
the reconciler's clock). It reads no clock and does no I/O.

What is learned. The normalisation is the item's *deadline*: the policy's calendar already moves
deadlines over weekends and holidays, so "how much of what is due by this deadline was paid by
this long before it" is comparable from one settle day to the next without a weekday model.
For every (acquirer, channel, deadline) the module keeps counters of the approved sales due and
of those whose item was credited (counts and minor units per currency: the figures the warning
quotes, never a scan of the state), and samples the *paid share* every ``step`` from
``lookback`` before the deadline until it. When the clock reaches the deadline that settle day's
curve (one share per step) joins the acquirer's history; days older than ``window`` leave it.
Why a sampled curve rather than quantiles of booking times: sales keep arriving while credits
come (a per-sale T+1 acquirer pays yesterday morning's sales before the evening's are made), so
the share of the sales *known by then* that were paid *by then* is the quantity that is the same
every usual day; a quantile of final booking times would expect payments for sales not made yet.

The baseline. Per step, across the learned days: the median (the usual day) and the
``band_pct`` percentile (a slow usual day, the lower band), by numpy over the days (robust to
an odd day; a day without due sales at a step is left out of it). The counters are kept per
trade date as well (a Monday deadline pays Friday's, Saturday's and Sunday's sales, each its
own curve), and days are kept apart by their *kind*: the calendar days from trade date to
deadline, "1d" (the usual next day, or D+0), "2d" and "3d+" (a weekend or a holiday between).
A kind with fewer than ``min_history`` days borrows the pooled curve of all kinds.

When it warns. At each step, for every deadline still ahead, with at least ``min_history``
days learned and ``min_due_sales`` sales due: where the usual day has paid at least
``min_expected_pct`` % by now, find how long ago the *lower band* passed today's share; when
that is ``min_lag`` or more, today is behind even a slow usual day by that much, and the
deadline warns. Its words: how much later than the usual day it pays (the same reading against
the median), the usual time (when the median day has paid half), and the sales and amounts
still due by the deadline. A warning stays while the condition holds and ends when the share
catches up or the deadline comes (then "missing", at deadline + grace, takes over). Each
(acquirer, channel, deadline) is *raised* at most once: :meth:`take_raised`.

Per-sale acquirers. An acquirer that pays each sale on its own over the whole day moves its
share curve only a little when it slows (the evening sales with the shortest windows go missing
before the curve falls behind). For per-sale items the reconciler also passes each sale's
event time (``sale_ms``), and the module learns, per settle day, the distribution of each
credit's *elapsed fraction* of its sale's window, ``(credit - sale) / (deadline - sale)``, as a
CDF on a grid of ``FRACTION_GRID`` points (a sale still unpaid at its deadline counts as never
paid). Across the learned days, per grid point: the median (the usual day) and the
``band_pct`` percentile (the slow day). At each step the *expected* number of a deadline's
sales paid by now is the sum of that CDF at each due sale's elapsed fraction: each sale is
judged against its own window, so the figure is exact for today's mix of sales and its noise
is binomial, not a day-to-day spread. It warns when at least ``min_shortfall_pct`` points
fewer are paid than the usual day expects, that shortfall is ``SIGNIFICANCE`` (4) binomial
standard deviations or more (not the chance of a small day), and the slow day's expectation must be moved back
``min_lag`` or more to come down to today's count (today is that far behind it): absence of
credits is itself the signal, hours before deadline + grace. A per-sale deadline is judged this
way once ``min_history`` per-sale days are learned (by the curve before). A batch's sales pass
no sale time, so batch acquirers are judged by the curve alone, as before.

State and restarts. The learned history, curves and per-sale days, is plain data
(:meth:`snapshot` / :meth:`restore`): a versioned envelope that names the ``step``, ``lookback``
and grid its rows were sampled on, so a snapshot taken under other settings, of another format,
or damaged, is refused whole with a :class:`SnapshotError` that says why (the module is left as
it was and relearns). :meth:`restore` merges: a deadline the module has learned already keeps
its own days. The live worker persists the snapshot in its changelog (streams.live.ewstate) and
restores it before its partitions serve metrics. The open deadlines' counters are not in it: a
restored module warns for the deadlines whose sales it sees from its start, and a settle day
is learned only when the module saw its whole lookback (its first sample at or after the
module's first clock) and nothing disturbed it (:meth:`disrupt`: a partition moved to or from
this worker, so the counters of the open deadlines no longer cover the same sales); a
disturbed deadline neither learns nor warns. This is stated in the README and tested
(tests/core/test_earlywarning.py).

Imports: stdlib, numpy and the core's policy only.
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from .currencies import minor_digits
from .policy import EarlyWarningConfig, Policy

NEVER = -(1 << 62)
# Kinds of settle day: calendar days from the trade date to its deadline (D+0 counts as 1).
ORDINARY = "1d"  # due the next day (or the same)
AFTER_BREAK = "2d"  # a weekend day or a holiday between; "3d+": longer breaks
KINDS = (ORDINARY, AFTER_BREAK, "3d+")
HALF = 0.5
FRACTION_GRID = 101  # the per-sale CDF of elapsed fractions: 0, 0.01, ..., 1
_GRID = np.linspace(0.0, 1.0, FRACTION_GRID)
SIGNIFICANCE = 4.0  # per-sale: the shortfall must be this many binomial standard deviations
SNAPSHOT_FORMAT = 1  # the envelope of snapshot(); restore() refuses any other


class SnapshotError(ValueError):
    """A snapshot :meth:`EarlyWarning.restore` refuses whole. `kind` is ``corrupt`` (not the
    shape this module writes) or ``incompatible`` (another format, or sampled on another
    step, lookback or grid); the message says what exactly."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class EarlyWarningEvent:
    """One deadline of one acquirer and channel running behind its baseline."""

    acquirer: str
    channel: str
    deadline_ms: int
    at_ms: int  # the step (event time) it was read at
    later_ms: int  # how much later than the usual (median) day: at least this
    behind_band_ms: int  # how far behind the lower band (>= min_lag)
    usual_ms: int | None  # when the usual day has paid half of what is due (absolute time)
    due_sales: int  # sales due by the deadline and not yet credited
    due_minor: tuple[tuple[str, int], ...]  # (currency, minor units) still due, sorted
    paid_share: float  # of the sales due by the deadline, paid by now
    expected_share: float  # what the usual day has paid by now
    text: str  # the sentence for ops


@dataclass(frozen=True, slots=True)
class Band:
    """The baseline band of one open deadline, as read at the latest step."""

    acquirer: str
    channel: str
    deadline_ms: int
    trade_day: int  # the sales' trade date (ordinal): a deadline has one band per trade date
    kind: str  # 1d, 2d, 3d+: calendar days from trade date to deadline
    history: int  # settle days the band is learned from
    expected_share: float  # median day, paid share by now
    low_share: float  # lower band
    paid_share: float  # today
    later_ms: int  # today's lag behind the median day
    usual_ms: int | None
    sales: int  # sales due by the deadline, paid or not
    due_sales: int  # of those, not paid yet
    due_minor: tuple[tuple[str, int], ...]
    warning: bool


class _Deadline:
    __slots__ = ("acquirer", "channel", "deadline_ms", "trade_day", "due_sales", "paid_sales",
                 "due_minor", "paid_minor", "shares", "clean", "warned", "active", "recent",
                 "sale_ms", "fractions")

    def __init__(self, acquirer: str, channel: str, deadline_ms: int, trade_day: int,
                 steps: int) -> None:
        self.acquirer = acquirer
        self.channel = channel
        self.deadline_ms = deadline_ms
        self.trade_day = trade_day
        self.due_sales = 0
        self.paid_sales = 0
        self.due_minor: dict[str, int] = {}
        self.paid_minor: dict[str, int] = {}
        self.shares = [math.nan] * steps  # paid share at each step before the deadline
        self.clean = True
        self.warned = False  # raised once already
        self.active: EarlyWarningEvent | None = None
        # credits booked after the last step sampled: a clock that jumps several steps (a
        # backlog, a quiet input) samples each step with only the credits booked by then
        self.recent: list[int] = []
        # per-sale items only: each due sale's event time, and each credit's elapsed fraction
        self.sale_ms: list[int] = []
        self.fractions: list[float] = []

    def unpaid_minor(self) -> tuple[tuple[str, int], ...]:
        paid = self.paid_minor
        return tuple(sorted((c, v - paid.get(c, 0)) for c, v in self.due_minor.items()
                            if v - paid.get(c, 0) > 0))


@dataclass
class _Baseline:
    days: int
    median: np.ndarray
    low: np.ndarray
    usual_index: int | None  # first step at which the median day has paid half


@dataclass
class _History:
    days: deque = field(default_factory=deque)  # (deadline_ms, kind, shares tuple)
    version: int = 0
    # per-sale settle days: (deadline_ms, CDF of elapsed fractions on the grid)
    fraction_days: deque = field(default_factory=deque)


@dataclass
class _FractionBaseline:
    days: int
    median: np.ndarray  # CDF of the usual day on the grid
    low: np.ndarray  # the slow day's


class EarlyWarning:
    """Learns each (acquirer, channel)'s paid-share curve per deadline and warns when today's
    runs behind it. Feed it through the reconciler's observer hooks and :meth:`advance_to`."""

    def __init__(self, policy: Policy, config: EarlyWarningConfig | None = None) -> None:
        self.policy = policy
        self.config = cfg = config or policy.early_warning
        self._steps = max(1, cfg.lookback_ms // cfg.step_ms)
        self._span_ms = self._steps * cfg.step_ms
        self.clock_ms = NEVER
        self.started_ms = NEVER  # the first clock: deadlines sampled from then on may learn
        self._step_done = NEVER  # the last step time sampled
        # (acquirer, channel, deadline, trade date) -> its counters and curve
        self._open: dict[tuple[str, str, int, int], _Deadline] = {}
        self._history: dict[tuple[str, str], _History] = {}
        self._cache: dict[tuple[str, str, str], tuple[int, _Baseline | None]] = {}
        self._fraction_cache: dict[tuple[str, str], tuple[int, _FractionBaseline | None]] = {}
        self._kinds: dict[int, str] = {}  # local date ordinal -> ORDINARY | AFTER_BREAK
        self._raised: list[EarlyWarningEvent] = []
        self._currencies: dict[tuple[str, str], set[str]] = {}  # every key heard of
        self._zone = ZoneInfo(policy.timezone)
        self.revision = 0  # moves whenever the learned history changes (what snapshot() holds)

    # -- the reconciler's hooks ------------------------------------------------------------------

    def on_sale_due(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
                    amount_minor: int, sales: int = 1, paid: bool = False,
                    trade_day: int = 0, sale_ms: int | None = None) -> None:
        if deadline_ms <= self.clock_ms:
            return  # that deadline has come: its day is learned already
        d = self._deadline(acquirer, channel, deadline_ms, trade_day)
        if sale_ms is not None and sales == 1 and not paid:
            d.sale_ms.append(sale_ms)
        if currency not in d.due_minor:
            self._currencies.setdefault((acquirer, channel), set()).add(currency)
        d.due_sales += sales
        d.due_minor[currency] = d.due_minor.get(currency, 0) + sales * amount_minor
        if paid:
            d.paid_sales += sales
            d.paid_minor[currency] = d.paid_minor.get(currency, 0) + sales * amount_minor

    def on_sale_paid(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
                     amount_minor: int, credit_ms: int, trade_day: int = 0,
                     sale_ms: int | None = None) -> None:
        if deadline_ms <= self.clock_ms:
            return
        d = self._deadline(acquirer, channel, deadline_ms, trade_day)
        if sale_ms is not None:
            d.fractions.append((credit_ms - sale_ms) / max(deadline_ms - sale_ms, 1))
        d.paid_sales += 1
        d.paid_minor[currency] = d.paid_minor.get(currency, 0) + amount_minor
        if credit_ms > self._step_done:
            d.recent.append(credit_ms)

    def _deadline(self, acquirer: str, channel: str, deadline_ms: int,
                  trade_day: int) -> _Deadline:
        key = (acquirer, channel, deadline_ms, trade_day)
        d = self._open.get(key)
        if d is None:
            d = self._open[key] = _Deadline(acquirer, channel, deadline_ms, trade_day,
                                            self._steps)
        return d

    # -- time ------------------------------------------------------------------------------------

    def advance_to(self, clock_ms: int) -> list[EarlyWarningEvent]:
        """Move the clock (event time, never backwards): sample every step passed, learn the
        deadlines reached, and return the warnings raised for the first time."""
        if clock_ms <= self.clock_ms:
            return []
        step = self.config.step_ms
        if self.clock_ms == NEVER:
            self.started_ms = clock_ms
            self._step_done = clock_ms // step * step
        self.clock_ms = clock_ms
        last = clock_ms // step * step
        g = self._step_done + step
        if self._open and g <= last:
            # Only the steps some open deadline samples: a long jump costs its deadlines, not
            # its length.
            for at in self._sample_times(g, last):
                self._sample(at)
        self._step_done = last
        for d in self._open.values():
            if d.recent:
                d.recent = [t for t in d.recent if t > last]
        self._learn_reached(clock_ms)
        if not self.config.enabled:
            self._raised.clear()
        raised, self._raised = self._raised, []
        return raised

    def _sample_times(self, first: int, last: int) -> list[int]:
        step, span = self.config.step_ms, self._span_ms
        times: set[int] = set()
        for d in self._open.values():
            lo = max(first, d.deadline_ms - span)
            hi = min(last, d.deadline_ms - 1)
            if lo > hi:
                continue
            lo = -(-lo // step) * step  # round up to a step
            if hi - lo > span:
                lo = hi - hi % step - span
            times.update(range(lo, hi + 1, step))
        return sorted(times)

    def _sample(self, at: int) -> None:
        step, span = self.config.step_ms, self._span_ms
        for d in self._open.values():
            if not d.deadline_ms - span <= at < d.deadline_ms:
                continue
            i = (at - (d.deadline_ms - span)) // step
            if d.due_sales > 0:
                d.shares[i] = self._paid_by(d, at) / d.due_sales
            self._judge(d, i, at)

    @staticmethod
    def _paid_by(d: _Deadline, at: int) -> int:
        if not d.recent:
            return d.paid_sales
        return d.paid_sales - sum(1 for t in d.recent if t > at)

    def _learn_reached(self, clock_ms: int) -> None:
        reached = [k for k, d in self._open.items() if d.deadline_ms <= clock_ms]
        for key in reached:
            d = self._open.pop(key)
            if (d.clean and d.deadline_ms - self._span_ms >= self.started_ms
                    and d.due_sales >= self.config.min_due_sales):
                h = self._history.setdefault((d.acquirer, d.channel), _History())
                h.days.append((d.deadline_ms, self._kind(d), tuple(d.shares)))
                if self._per_sale(d):
                    h.fraction_days.append((d.deadline_ms, _fraction_cdf(d)))
                h.version += 1
                self.revision += 1
        window = self.config.window_ms
        for h in self._history.values():
            while h.days and h.days[0][0] < clock_ms - window:
                h.days.popleft()
                h.version += 1
                self.revision += 1
            while h.fraction_days and h.fraction_days[0][0] < clock_ms - window:
                h.fraction_days.popleft()
                h.version += 1
                self.revision += 1

    @staticmethod
    def _per_sale(d: _Deadline) -> bool:
        """Every sale due by this deadline is a per-sale item the hooks gave the time of."""
        return bool(d.sale_ms) and len(d.sale_ms) == d.due_sales

    def disrupt(self) -> None:
        """The sales behind the open deadlines' counters changed under them (a partition came
        to this worker with items it did not see open, or left with items it did): those
        deadlines neither learn nor warn."""
        for d in self._open.values():
            d.clean = False
            d.active = None

    # -- the baseline ----------------------------------------------------------------------------

    def _kind(self, d: _Deadline) -> str:
        """1d: due at most a day after its trade date; 2d, 3d+: a weekend or a holiday lies
        between (a Saturday's sales due on Monday, a Friday's)."""
        span = self.policy.local_day(d.deadline_ms) - d.trade_day
        return KINDS[min(max(span, 1), 3) - 1]

    def baseline(self, acquirer: str, channel: str, kind: str) -> _Baseline | None:
        """The band for a deadline of this kind: its own kind's days, or both kinds pooled when
        its kind has fewer than min_history; None without min_history days at all."""
        h = self._history.get((acquirer, channel))
        if h is None:
            return None
        key = (acquirer, channel, kind)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == h.version:
            return hit[1]
        need = self.config.min_history
        rows = [s for _, k, s in h.days if k == kind]
        if len(rows) < need:
            rows = [s for _, _, s in h.days]
        base = self._band(rows) if len(rows) >= need else None
        self._cache[key] = (h.version, base)
        return base

    def fraction_baseline(self, acquirer: str, channel: str) -> _FractionBaseline | None:
        """The per-sale band: median and slow-day CDF of the elapsed fractions over the learned
        per-sale days; None with fewer than min_history of them."""
        h = self._history.get((acquirer, channel))
        if h is None or len(h.fraction_days) < self.config.min_history:
            return None
        key = (acquirer, channel)
        hit = self._fraction_cache.get(key)
        if hit is not None and hit[0] == h.version:
            return hit[1]
        m = np.array([c for _, c in h.fraction_days], dtype=float)
        base = _FractionBaseline(len(m), np.median(m, axis=0),
                                 np.percentile(m, self.config.band_pct, axis=0))
        self._fraction_cache[key] = (h.version, base)
        return base

    def _band(self, rows: list[tuple[float, ...]]) -> _Baseline:
        m = np.array(rows, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a step no day sampled: NaN
            median = np.nanmedian(m, axis=0)
            low = np.nanpercentile(m, self.config.band_pct, axis=0)
        half = np.nonzero(median >= HALF)[0]
        return _Baseline(len(rows), median, low, int(half[0]) if half.size else None)

    @staticmethod
    def _behind(curve: np.ndarray, i: int, share: float) -> int | None:
        """Steps since the curve first went above today's share (None: it never did by step
        i, so today is not behind it)."""
        above = np.nonzero(curve[: i + 1] > share)[0]
        return None if not above.size else i - int(above[0])

    # -- the warning -----------------------------------------------------------------------------

    def _judge(self, d: _Deadline, i: int, at: int) -> None:
        cfg = self.config
        d.active = None
        if not d.clean or d.due_sales < cfg.min_due_sales:
            return
        per_sale = self._per_sale(d) and self.fraction_baseline(d.acquirer, d.channel)
        # a per-sale deadline with its baseline learned is judged sale by sale, else by the curve
        w = self._judge_per_sale(d, at) if per_sale else self._judge_curve(d, i, at)
        if w is None:
            return
        d.active = w
        if not d.warned:
            d.warned = True
            self._raised.append(w)

    def _judge_curve(self, d: _Deadline, i: int, at: int) -> EarlyWarningEvent | None:
        cfg = self.config
        base = self.baseline(d.acquirer, d.channel, self._kind(d))
        if base is None:
            return None
        expected = float(base.median[i])
        if math.isnan(expected) or expected * 100 < cfg.min_expected_pct:
            return None
        share = self._paid_by(d, at) / d.due_sales
        if (expected - share) * 100 < cfg.min_shortfall_pct:
            return None  # a tail of a few unpaid sales is for "missing" to judge, not a slowdown
        behind = self._behind(base.low, i, share)
        if behind is None or behind * cfg.step_ms < cfg.min_lag_ms:
            return None
        later = (self._behind(base.median, i, share) or 0) * cfg.step_ms
        usual = (None if base.usual_index is None
                 else d.deadline_ms - self._span_ms + base.usual_index * cfg.step_ms)
        return self._event(d, at, later, behind * cfg.step_ms, usual, share, expected)

    def _judge_per_sale(self, d: _Deadline, at: int) -> EarlyWarningEvent | None:
        """Each due sale against the learned CDF of its own elapsed fraction (module doc)."""
        cfg = self.config
        base = self.fraction_baseline(d.acquirer, d.channel)
        if base is None:
            return None
        sale = np.asarray(d.sale_ms, dtype=float)
        window = np.maximum(d.deadline_ms - sale, 1.0)
        n = len(sale)
        paid = self._paid_by(d, at)
        p = np.interp((at - sale) / window, _GRID, base.median, left=0.0,
                      right=float(base.median[-1]))
        expected = float(p.sum())
        if (expected - paid) * 100 < cfg.min_shortfall_pct * n:
            return None
        # and beyond chance: so many standard deviations of the sales' own coin tosses
        if expected - paid < SIGNIFICANCE * math.sqrt(float((p * (1 - p)).sum())):
            return None
        behind = self._lag(sale, window, at, base.low, paid)
        if behind is None or behind < cfg.min_lag_ms:
            return None
        later = self._lag(sale, window, at, base.median, paid) or 0
        curve = self.baseline(d.acquirer, d.channel, self._kind(d))
        usual = (None if curve is None or curve.usual_index is None
                 else d.deadline_ms - self._span_ms + curve.usual_index * cfg.step_ms)
        return self._event(d, at, later, behind, usual, paid / n, expected / n)

    def _lag(self, sale: np.ndarray, window: np.ndarray, at: int, cdf: np.ndarray,
             paid: int) -> int | None:
        """How far back (a whole number of steps, within the lookback) the CDF's expectation
        must be read to come down to today's paid count (None: not within the lookback)."""
        step = self.config.step_ms
        times = at - step * np.arange(self._steps + 1, dtype=float)
        down = np.nonzero(_expected_paid(sale, window, times, cdf) <= paid + 1e-9)[0]
        return None if not down.size else int(down[0]) * step

    def _event(self, d: _Deadline, at: int, later: int, behind: int, usual: int | None,
               share: float, expected: float) -> EarlyWarningEvent:
        # the words quote everything still due by that deadline, whatever its trade date
        sales, due = self._still_due(d.acquirer, d.channel, d.deadline_ms)
        return EarlyWarningEvent(
            d.acquirer, d.channel, d.deadline_ms, at, later, behind, usual, sales, due, share,
            expected,
            self.sentence(d.acquirer, d.channel, later, usual, sales, due, d.deadline_ms, at))

    def _still_due(self, acquirer: str, channel: str,
                   deadline_ms: int) -> tuple[int, tuple[tuple[str, int], ...]]:
        sales = 0
        minor: dict[str, int] = {}
        for d in self._open.values():
            if d.deadline_ms == deadline_ms and d.acquirer == acquirer and d.channel == channel:
                sales += d.due_sales - d.paid_sales
                for c, v in d.unpaid_minor():
                    minor[c] = minor.get(c, 0) + v
        return sales, tuple(sorted(minor.items()))

    def take_raised(self) -> list[EarlyWarningEvent]:
        raised, self._raised = self._raised, []
        return raised

    def active(self) -> list[EarlyWarningEvent]:
        """The warnings holding at the latest step, by acquirer, channel and deadline."""
        if not self.config.enabled:
            return []
        return sorted((d.active for d in self._open.values() if d.active is not None),
                      key=lambda w: (w.acquirer, w.channel, w.deadline_ms))

    def bands(self) -> list[Band]:
        """Every open deadline inside its lookback with a learned baseline, read now."""
        out = []
        step, span = self.config.step_ms, self._span_ms
        at = self._step_done
        for d in self._open.values():
            if not d.deadline_ms - span <= at < d.deadline_ms or d.due_sales <= 0:
                continue
            base = self.baseline(d.acquirer, d.channel, self._kind(d))
            if base is None:
                continue
            i = (at - (d.deadline_ms - span)) // step
            share = d.paid_sales / d.due_sales
            usual = (None if base.usual_index is None
                     else d.deadline_ms - span + base.usual_index * step)
            expected, low = _num(base.median[i]), _num(base.low[i])
            later = (self._behind(base.median, i, share) or 0) * step
            per_sale = self._per_sale(d) and self.fraction_baseline(d.acquirer, d.channel)
            if per_sale:  # the band the per-sale rule judges by: today's sales, each its window
                expected, low, later = self._per_sale_band(d, per_sale, at)
            out.append(Band(d.acquirer, d.channel, d.deadline_ms, d.trade_day, self._kind(d),
                            base.days, expected, low, share, later, usual,
                            d.due_sales, d.due_sales - d.paid_sales, d.unpaid_minor(),
                            d.active is not None and self.config.enabled))
        return sorted(out, key=lambda b: (b.acquirer, b.channel, b.deadline_ms, b.trade_day))

    def _per_sale_band(self, d: _Deadline, base: _FractionBaseline,
                       at: int) -> tuple[float, float, int]:
        sale = np.asarray(d.sale_ms, dtype=float)
        window = np.maximum(d.deadline_ms - sale, 1.0)
        now = np.array([at])
        usual = _expected_paid(sale, window, now, base.median)[0]
        slow = _expected_paid(sale, window, now, base.low)[0]
        later = self._lag(sale, window, at, base.median, d.paid_sales) or 0
        n = len(sale)
        return float(usual) / n, float(slow) / n, later

    def known(self) -> dict[tuple[str, str], set[str]]:
        """Every (acquirer, channel) a sale was due for since the start, with its currencies."""
        return self._currencies

    def history_days(self, acquirer: str, channel: str) -> int:
        h = self._history.get((acquirer, channel))
        return len(h.days) if h else 0

    def learned(self) -> list[tuple[str, str]]:
        """Every (acquirer, channel) with a learned settle day (restored ones included)."""
        return sorted(k for k, h in self._history.items() if h.days or h.fraction_days)

    # -- words -----------------------------------------------------------------------------------

    def sentence(self, acquirer: str, channel: str, later_ms: int, usual_ms: int | None,
                 due_sales: int, due_minor: tuple[tuple[str, int], ...], deadline_ms: int,
                 at_ms: int) -> str:
        """'acq-x (qr) is paying 3 h later than its usual 09:40; 1,240 sales, 2.3M CNY due by
        10:00'."""
        who = f"{acquirer} ({channel})" if channel else acquirer
        usual = f" than its usual {self._local(usual_ms, at_ms)}" if usual_ms is not None else \
            " than usual"
        money = " + ".join(f"{money_words(v, c)} {c}" for c, v in due_minor) or "nothing"
        return (f"{who} is paying {duration_words(later_ms)} later{usual}; "
                f"{due_sales:,} sales, {money} due by {self._local(deadline_ms, at_ms)}")

    def _local(self, ms: int, now_ms: int) -> str:
        t = datetime.fromtimestamp(ms / 1000, timezone.utc).astimezone(self._zone)
        now = datetime.fromtimestamp(now_ms / 1000, timezone.utc).astimezone(self._zone)
        return t.strftime("%H:%M") if t.date() == now.date() else t.strftime("%a %H:%M")

    # -- plain data ------------------------------------------------------------------------------

    def snapshot(self, max_days: int | None = None) -> dict[str, Any]:
        """The learned history as plain data (JSON-ready; floats exact, so a restored module
        judges as this one does)::

            {"format": 1, "step_ms": ..., "lookback_ms": ..., "grid": 101,
             "clock_ms": the module's clock,
             "curves": {"acquirer\\x1fchannel": [[deadline_ms, kind, [share per step, None
                        for none]], ...]},
             "fractions": {"acquirer\\x1fchannel": [[deadline_ms, [CDF on the grid]], ...]}}

        `max_days`: only the newest that many days of each kind of history per acquirer and
        channel (a shell bounding the size of what it stores)."""
        cfg = self.config

        def newest(rows: Any) -> list:
            rows = list(rows)
            return rows if max_days is None else rows[max(len(rows) - max_days, 0):]

        return {
            "format": SNAPSHOT_FORMAT, "step_ms": cfg.step_ms, "lookback_ms": cfg.lookback_ms,
            "grid": FRACTION_GRID, "clock_ms": self.clock_ms,
            "curves": {f"{a}\x1f{c}": [[t, k, [None if math.isnan(x) else x for x in s]]
                                       for t, k, s in newest(h.days)]
                       for (a, c), h in sorted(self._history.items()) if h.days},
            "fractions": {f"{a}\x1f{c}": [[t, [float(x) for x in cdf]]
                                          for t, cdf in newest(h.fraction_days)]
                          for (a, c), h in sorted(self._history.items()) if h.fraction_days},
        }

    def restore(self, snap: Any) -> int:
        """Merge a :meth:`snapshot` into the learned history; the number of settle days taken
        (a deadline this module has learned already keeps its own). Checked whole first: a
        snapshot of another format or settings, or a damaged one, raises SnapshotError and
        changes nothing. Days older than `window` leave at the next clock move."""
        curves, fractions = self._checked(snap)
        taken, moved = 0, False
        for key, rows in curves.items():
            h = self._history.setdefault(key, _History())
            have = {t for t, _, _ in h.days}
            new = [r for r in rows if r[0] not in have]
            if new:
                h.days = deque(sorted([*h.days, *new], key=lambda r: r[0]))
                h.version += 1
                taken += len(new)
        for key, rows in fractions.items():
            h = self._history.setdefault(key, _History())
            have = {t for t, _ in h.fraction_days}
            new = [r for r in rows if r[0] not in have]
            if new:
                h.fraction_days = deque(sorted([*h.fraction_days, *new], key=lambda r: r[0]))
                h.version += 1
                moved = True
        if taken or moved:
            self.revision += 1
        return taken

    def _checked(self, snap: Any) -> tuple[dict, dict]:
        """The snapshot's rows as the history holds them, or SnapshotError."""
        if not isinstance(snap, dict) or "format" not in snap:
            raise SnapshotError("corrupt", "not an early-warning snapshot (no format field)")
        if snap["format"] != SNAPSHOT_FORMAT:
            raise SnapshotError("incompatible", f"snapshot format {snap['format']!r}; this "
                                f"version reads format {SNAPSHOT_FORMAT}")
        cfg = self.config
        for name, ours in (("step_ms", cfg.step_ms), ("lookback_ms", cfg.lookback_ms),
                           ("grid", FRACTION_GRID)):
            theirs = snap.get(name)
            if theirs != ours:
                raise SnapshotError("incompatible", f"learned with {name} {theirs!r}, the "
                                    f"policy now has {ours!r} ([early_warning] step or "
                                    f"lookback changed): its curves do not fit")
        curves, fractions = snap.get("curves"), snap.get("fractions")
        if not isinstance(curves, dict) or not isinstance(fractions, dict):
            raise SnapshotError("corrupt", "curves and fractions must be tables")
        out_c: dict[tuple[str, str], list] = {}
        out_f: dict[tuple[str, str], list] = {}
        try:
            for key, rows in curves.items():
                out_c[_pair(key)] = [(_ms(t), _kind_of(k), tuple(_shares(s, self._steps)))
                                     for t, k, s in rows]
            for key, rows in fractions.items():
                out_f[_pair(key)] = [(_ms(t), np.array(_shares(c, FRACTION_GRID, nan=False)))
                                     for t, c in rows]
        except (TypeError, ValueError) as exc:
            raise SnapshotError("corrupt", f"a malformed row: {exc}") from None
        return out_c, out_f


def _pair(key: Any) -> tuple[str, str]:
    if not isinstance(key, str) or "\x1f" not in key:
        raise ValueError(f"key {key!r} is not acquirer\\x1fchannel")
    acquirer, _, channel = key.partition("\x1f")
    return acquirer, channel


def _ms(t: Any) -> int:
    if type(t) is not int:
        raise ValueError(f"deadline {t!r} is not integer ms")
    return t


def _kind_of(k: Any) -> str:
    if k not in KINDS:
        raise ValueError(f"kind {k!r} is none of {', '.join(KINDS)}")
    return k


def _shares(row: Any, n: int, nan: bool = True) -> list[float]:
    """A row of n shares, finite and at least 0 (None for a step not sampled, where `nan`
    allows it)."""
    if not isinstance(row, list) or len(row) != n:
        raise ValueError(f"a row of {len(row) if isinstance(row, list) else row!r} values, "
                         f"expected {n}")
    out = []
    for x in row:
        if x is None and nan:
            out.append(math.nan)
        elif type(x) in (int, float) and 0.0 <= x < math.inf:
            out.append(float(x))
        else:
            raise ValueError(f"share {x!r} is not a number at or above 0")
    return out


def _fraction_cdf(d: _Deadline) -> np.ndarray:
    """A per-sale settle day: the share of its due sales paid by each elapsed fraction of
    their windows, on the grid (sales unpaid at the deadline keep it below 1)."""
    fr = np.sort(np.asarray(d.fractions, dtype=float))
    return np.searchsorted(fr, _GRID, side="right") / max(len(d.sale_ms), 1)


def _expected_paid(sale: np.ndarray, window: np.ndarray, times: np.ndarray,
                   cdf: np.ndarray) -> np.ndarray:
    """For each time: the number of the sales a day with this CDF has paid by then (a sale
    not made yet counts nothing)."""
    elapsed = (times[:, None] - sale[None, :]) / window[None, :]
    return np.interp(elapsed, _GRID, cdf, left=0.0, right=float(cdf[-1])).sum(axis=1)


def _num(x: Any) -> float:
    x = float(x)
    return 0.0 if math.isnan(x) else x


def duration_words(ms: int) -> str:
    """3 h, 2 h 15 min, 45 min."""
    minutes = ms // 60_000
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} h {m} min"
    return f"{h} h" if h else f"{m} min"


def money_words(minor: int, currency: str) -> str:
    """Minor units in the currency's major unit, short: 2.3M, 45.2k, 812.50."""
    major = minor / 10 ** minor_digits(currency)
    if major >= 1_000_000:
        return f"{major / 1_000_000:.1f}M"
    if major >= 10_000:
        return f"{major / 1_000:.1f}k"
    return f"{major:,.{minor_digits(currency)}f}"
