"""Aging of open findings in business days and money, by SLA tier.

Owns the answer to "which findings are still open, for how long, and how urgent are they?".
Pure like the rest of the core: stdlib only, no clock (the reconciler's event-time clock is
passed in), no I/O. The rules (tiers, their thresholds and due times, the horizon) are the
policy's ``[aging]`` table (streams.core.policy.AgingRules).

Which findings are open, and until when
---------------------------------------
======================  ===================  ==================================================
kind                    amount at stake      open until
======================  ===================  ==================================================
missing                 expected net         its credit comes (the resolved finding), or
                                             ``missing_horizon`` after its close (the item is
                                             dropped then; the core counts it missing_expired)
underpaid               expected - received  ``aging.horizon`` after the finding
overpaid                received - expected  ``aging.horizon`` after the finding
duplicate               received             ``aging.horizon`` after the finding
orphan                  received             ``aging.horizon`` after the finding
file_incomplete         |file total - seen|  ``aging.horizon`` after the finding (contract v1.1:
                                             a settlement file whose control totals disagree
                                             with the credits seen for its settle date)
late                    (not aged)           the money came: a late credit is a fact to report,
                                             not an open case
======================  ===================  ==================================================

Only missing has a resolution event in the stream; the others are raised once and are settled
outside it (a chargeback, a refund to the acquirer, a ticket). They age for ``aging.horizon``
(default 14 days: long enough to climb every tier, after which the case belongs to the ticketing
system) and then leave the view. "Open until" is in event time: a finding leaves the view once
the reconciler's clock has *passed* the time, as the core's own timers fire.

Age and tier
------------
A finding's age is the number of business days (the policy's calendar: Monday to Friday, minus
holidays, plus make-up workdays, in the policy's time zone) after the local date it was opened
on, up to and including the clock's local date: opened on a Friday, it is 0 on the weekend and
1 on Monday. Its opening time is the finding's event time (for missing: deadline + grace). Its
tier is the first of ``aging.tiers`` whose ``min_amount`` its amount reaches or whose
``min_age_days`` its age reaches; the last tier takes the rest. A tier's ``due`` counts from
when the finding entered it: its opening, or, when age put it there, the start (local midnight)
of the business day on which it reached ``min_age_days``.

Counters
--------
The book keeps, besides one entry per open finding, counters keyed by (acquirer, currency,
opened local date, amount band), where an amount band is the range between two consecutive
thresholds of the currency. They change with each finding opened, resolved or expired, and a
scrape turns them into tiers from the clock (:meth:`AgingBook.summary`): its cost is the number
of counter keys (acquirers x currencies x days within the horizon x bands), never the number of
open findings.

State for the live worker: each entry is one key of the reconciler's ``take_changes`` (tag
``g``, rest = anomaly_id, value ``[kind, acquirer, currency, opened_ms, amount_minor,
expire_ms]``), written when the finding opens and deleted when it resolves or expires;
:meth:`AgingBook.restore` rebuilds entries and counters from those values.
"""
from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .currencies import minor_digits
from .events import Finding, FindingKind, Status
from .policy import AgingRules, AgingTier, Policy

AGED_KINDS = frozenset((FindingKind.MISSING, FindingKind.UNDERPAID, FindingKind.OVERPAID,
                        FindingKind.DUPLICATE, FindingKind.ORPHAN, FindingKind.FILE_INCOMPLETE))


def amount_at_stake(kind: FindingKind, expected_minor: int, received_minor: int) -> int:
    """The money a finding puts at stake, in minor units (never negative)."""
    if kind is FindingKind.MISSING:
        return abs(expected_minor)
    if kind in (FindingKind.UNDERPAID, FindingKind.OVERPAID, FindingKind.FILE_INCOMPLETE):
        return abs(received_minor - expected_minor)
    # duplicate, orphan, late: the credit concerned
    return received_minor


def currency_digits(currency: str) -> int:
    """ISO 4217 exponent (2 for a code the table does not know)."""
    try:
        return minor_digits(currency)
    except KeyError:
        return 2


class Entry(NamedTuple):
    """One open finding in the aging view."""

    merchant_id: str
    kind: str
    acquirer: str
    currency: str
    opened_ms: int
    amount_minor: int
    expire_ms: int


class Calendar:
    """Business-day arithmetic for aging: ages and the times tiers are entered."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def local_day(self, ms: int) -> int:
        return self.policy.local_day(ms)

    def age_days(self, opened_day: int, clock_day: int) -> int:
        """Business days after `opened_day` up to and including `clock_day` (ordinals)."""
        business = self.policy.is_business_day
        return sum(1 for d in range(opened_day + 1, clock_day + 1) if business(d))

    def ages(self, days: Iterable[int], clock_day: int) -> dict[int, int]:
        """age_days for many opening dates in one walk back from the clock's date."""
        wanted = sorted(set(days), reverse=True)
        out: dict[int, int] = {}
        business = self.policy.is_business_day
        count = 0
        d = clock_day
        for day in wanted:
            if day >= clock_day:
                out[day] = 0
                continue
            while d > day:
                if business(d):
                    count += 1
                d -= 1
            out[day] = count
        return out

    def age_reached_ms(self, opened_ms: int, days: int) -> int:
        """When a finding opened at `opened_ms` reaches an age of `days` business days: the
        local midnight starting that business day (its opening itself for 0)."""
        if days <= 0:
            return opened_ms
        day = self.policy.next_business_day(self.local_day(opened_ms), days)
        return self.policy.local_time_ms(day, 0)

    def due_ms(self, entered_ms: int, tier: AgingTier) -> int:
        """When the ops team must have acted on a finding that entered `tier` at `entered_ms`:
        the duration after, or the same local time on the N-th business day after."""
        if tier.due_business_days:
            policy = self.policy
            day = policy.local_day(entered_ms)
            minute = (entered_ms - policy.local_time_ms(day, 0)) // 60_000
            return policy.local_time_ms(policy.next_business_day(day, tier.due_business_days),
                                        minute)
        return entered_ms + tier.due_ms


class Tiers:
    """The policy's tier rules per currency: thresholds in minor units, amount bands."""

    def __init__(self, rules: AgingRules) -> None:
        self.rules = rules
        self.names = tuple(t.name for t in rules.tiers)
        self._thresholds: dict[str, tuple[int, ...]] = {}
        self._per_tier: dict[str, tuple[int | None, ...]] = {}

    def thresholds(self, currency: str) -> tuple[int, ...]:
        """The distinct amount thresholds of the currency, ascending (band boundaries)."""
        t = self._thresholds.get(currency)
        if t is None:
            self._per_tier[currency] = per = tuple(
                tier.threshold_minor(currency, currency_digits(currency))
                for tier in self.rules.tiers)
            t = self._thresholds[currency] = tuple(sorted({x for x in per if x is not None}))
        return t

    def band(self, currency: str, amount_minor: int) -> int:
        """0 below every threshold, n at or above the n-th smallest."""
        return bisect_right(self.thresholds(currency), amount_minor)

    def band_floor(self, currency: str, band: int) -> int:
        """The smallest amount of a band: every amount of it reaches the same thresholds."""
        return self.thresholds(currency)[band - 1] if band else 0

    def index(self, currency: str, amount_minor: int, age_days: int) -> int:
        """The tier (index into rules.tiers) of an amount at an age: the first one reached."""
        self.thresholds(currency)
        per = self._per_tier[currency]
        tiers = self.rules.tiers
        last = len(tiers) - 1
        for i, tier in enumerate(tiers):
            if i == last:
                return i
            threshold = per[i]
            if threshold is not None and amount_minor >= threshold:
                return i
            if tier.min_age_days is not None and age_days >= tier.min_age_days:
                return i
        return last

    def entered_ms(self, calendar: Calendar, currency: str, amount_minor: int,
                   opened_ms: int, index: int) -> int:
        """When a finding entered tier `index`: its opening when its amount or an age of 0
        put it there, else the business day its age reached the tier's min_age_days."""
        tier = self.rules.tiers[index]
        self.thresholds(currency)
        threshold = self._per_tier[currency][index]
        if threshold is not None and amount_minor >= threshold:
            return opened_ms
        if tier.min_age_days is None or index == len(self.rules.tiers) - 1:
            return opened_ms
        return max(opened_ms, calendar.age_reached_ms(opened_ms, tier.min_age_days))


Change = Callable[[str, str, Entry | None], None]  # (merchant_id, anomaly_id, entry or None)


class AgingBook:
    """Open findings of one reconciler, with the counters a scrape reads.

    Feed it every finding (:meth:`note`) and the clock (:meth:`expire`); it reports each entry
    it opens or closes to `on_change` (the reconciler's per-change state)."""

    def __init__(self, policy: Policy, on_change: Change | None = None) -> None:
        self.policy = policy
        self.calendar = Calendar(policy)
        self.tiers = Tiers(policy.aging)
        self.horizon_ms = policy.aging.horizon_ms
        self.missing_horizon_ms = policy.missing_horizon_ms
        self.on_change = on_change
        self.entries: dict[str, Entry] = {}
        # (acquirer, currency, opened local date, band) -> (findings, amount at stake)
        self.counters: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._expiry: list[tuple[int, str]] = []  # heap of (expire_ms, anomaly_id); stale kept
        self.next_expiry_ms = 1 << 62
        self.expired = 0  # findings that left the view by their horizon

    # -- changes -------------------------------------------------------------------------------

    def note(self, findings: Iterable[Finding]) -> None:
        """Open an entry for each open finding of an aged kind; close a missing one that its
        resolved finding names."""
        for f in findings:
            kind = f.kind
            if kind not in AGED_KINDS:
                continue
            if f.status is Status.RESOLVED:
                self._close(f.anomaly_id)
                continue
            horizon = self.missing_horizon_ms if kind is FindingKind.MISSING else self.horizon_ms
            opened = f.event_time_ms
            self._open(f.anomaly_id, Entry(
                f.merchant_id, str(kind), f.acquirer, f.currency, opened,
                amount_at_stake(kind, f.expected_minor, f.received_minor), opened + horizon))

    def expire(self, clock_ms: int) -> None:
        """Close every entry whose horizon the clock has passed."""
        heap = self._expiry
        entries = self.entries
        while heap and heap[0][0] < clock_ms:
            at, aid = heapq.heappop(heap)
            e = entries.get(aid)
            if e is not None and e.expire_ms == at:
                self.expired += 1
                self._close(aid)
        if len(heap) > 64 and len(heap) > 2 * len(entries):
            # resolved entries leave stale heap items behind: rebuild from the live ones
            self._expiry = heap = [(e.expire_ms, aid) for aid, e in entries.items()]
            heapq.heapify(heap)
        self.next_expiry_ms = heap[0][0] if heap else 1 << 62

    def _open(self, aid: str, e: Entry) -> None:
        if aid in self.entries:
            self._uncount(self.entries[aid])
        self.entries[aid] = e
        self._count(e)
        heapq.heappush(self._expiry, (e.expire_ms, aid))
        if e.expire_ms < self.next_expiry_ms:
            self.next_expiry_ms = e.expire_ms
        if self.on_change is not None:
            self.on_change(e.merchant_id, aid, e)

    def _close(self, aid: str) -> None:
        e = self.entries.pop(aid, None)
        if e is None:
            return
        self._uncount(e)
        if self.on_change is not None:
            self.on_change(e.merchant_id, aid, None)

    def _key(self, e: Entry) -> tuple[str, str, int, int]:
        return (e.acquirer, e.currency, self.calendar.local_day(e.opened_ms),
                self.tiers.band(e.currency, e.amount_minor))

    def _count(self, e: Entry) -> None:
        k = self._key(e)
        n, amount = self.counters.get(k, (0, 0))
        self.counters[k] = (n + 1, amount + e.amount_minor)  # one assignment: a scrape never
        # sees a count without its amount

    def _uncount(self, e: Entry) -> None:
        k = self._key(e)
        n, amount = self.counters[k]
        if n == 1:
            del self.counters[k]
        else:
            self.counters[k] = (n - 1, amount - e.amount_minor)

    # -- state ---------------------------------------------------------------------------------

    @staticmethod
    def to_plain(e: Entry) -> list[Any]:
        return [e.kind, e.acquirer, e.currency, e.opened_ms, e.amount_minor, e.expire_ms]

    def restore(self, merchant_id: str, anomaly_id: str, value: list[Any]) -> None:
        """One entry from its take_changes value (restoring is not a change)."""
        kind, acquirer, currency, opened_ms, amount, expire_ms = value
        on_change, self.on_change = self.on_change, None
        try:
            self._open(anomaly_id, Entry(merchant_id, kind, acquirer, currency, opened_ms,
                                         amount, expire_ms))
        finally:
            self.on_change = on_change

    # -- views ---------------------------------------------------------------------------------

    def summary(self, clock_ms: int) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(acquirer, currency, tier) -> (open findings, amount at stake in minor units), as of
        `clock_ms`: from the counters, O(counter keys), never a pass over the findings."""
        rows = list(self.counters.items())  # one C-level copy: safe against a concurrent writer
        if not rows:
            return {}
        calendar, tiers = self.calendar, self.tiers
        ages = calendar.ages((k[2] for k, _ in rows), calendar.local_day(clock_ms))
        names = tiers.names
        out: dict[tuple[str, str, str], tuple[int, int]] = {}
        for (acquirer, currency, day, band), (n, amount) in rows:
            tier = names[tiers.index(currency, tiers.band_floor(currency, band), ages[day])]
            k = (acquirer, currency, tier)
            old_n, old_amount = out.get(k, (0, 0))
            out[k] = (old_n + n, old_amount + amount)
        return out

    def describe(self, aid: str, clock_ms: int) -> dict[str, Any]:
        """One open finding's age, tier, when it entered the tier and when that is due."""
        e = self.entries[aid]
        return describe(self.calendar, self.tiers, e.currency, e.amount_minor, e.opened_ms,
                        clock_ms)


def describe(calendar: Calendar, tiers: Tiers, currency: str, amount_minor: int,
             opened_ms: int, clock_ms: int) -> dict[str, Any]:
    """Age (business days), tier, entered_ms and due_ms of one open finding at `clock_ms`."""
    age = calendar.age_days(calendar.local_day(opened_ms), calendar.local_day(clock_ms))
    index = tiers.index(currency, amount_minor, age)
    tier = tiers.rules.tiers[index]
    entered = tiers.entered_ms(calendar, currency, amount_minor, opened_ms, index)
    return {"age_days": age, "tier": tier.name, "entered_ms": entered,
            "due_ms": calendar.due_ms(entered, tier)}


def open_rows(book: AgingBook, clock_ms: int) -> dict[str, Any]:
    """The aging view at the end of a replay: per (tier, acquirer, currency) the open findings,
    their amount at stake, how many are past their tier's due time and the oldest age. One
    pass over the open findings (a replay's end, not a scrape); ages are memoised per opening
    date."""
    calendar, tiers = book.calendar, book.tiers
    clock_day = calendar.local_day(clock_ms)
    entries = list(book.entries.values())
    ages = calendar.ages((calendar.local_day(e.opened_ms) for e in entries), clock_day)
    rank = {name: n for n, name in enumerate(tiers.names)}
    rows: dict[tuple[str, str, str], list[int]] = {}
    for e in entries:
        age = ages[calendar.local_day(e.opened_ms)]
        index = tiers.index(e.currency, e.amount_minor, age)
        tier = tiers.rules.tiers[index]
        entered = tiers.entered_ms(calendar, e.currency, e.amount_minor, e.opened_ms, index)
        row = rows.setdefault((tier.name, e.acquirer, e.currency), [0, 0, 0, 0])
        row[0] += 1
        row[1] += e.amount_minor
        row[2] += calendar.due_ms(entered, tier) < clock_ms
        row[3] = max(row[3], age)
    tier_list = [{"name": t.name, "due": t.due_text} for t in tiers.rules.tiers]
    return _rows_doc(clock_ms, tier_list, rows, rank)


def merge_open_rows(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """open_rows of several reconcilers (a Kafka replay's partitions) as one."""
    if not parts:
        return None
    tiers = parts[0]["tiers"]
    rank = {t["name"]: n for n, t in enumerate(tiers)}
    rows: dict[tuple[str, str, str], list[int]] = {}
    for part in parts:
        for r in part["open"]:
            row = rows.setdefault((r["tier"], r["acquirer"], r["currency"]), [0, 0, 0, 0])
            row[0] += r["findings"]
            row[1] += r["amount_minor"]
            row[2] += r["overdue"]
            row[3] = max(row[3], r["oldest_age_days"])
    return _rows_doc(max(p["as_of_ms"] for p in parts), tiers, rows, rank)


def _rows_doc(as_of_ms: int, tiers: list[dict[str, str]],
              rows: dict[tuple[str, str, str], list[int]], rank: dict[str, int]) -> dict[str, Any]:
    # most severe tier first, then acquirer and currency
    ordered = sorted(rows.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][1:]))
    return {"as_of_ms": as_of_ms, "tiers": tiers,
            "open": [{"tier": t, "acquirer": a, "currency": c, "findings": r[0],
                      "amount_minor": r[1], "overdue": r[2], "oldest_age_days": r[3]}
                     for (t, a, c), r in ordered]}
