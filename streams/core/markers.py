"""Completeness markers (contract v1.1): the acquirer says its settlement file is complete.

A ``settlement_file_complete`` record on pos.settlements (:class:`streams.core.events.
FileComplete`) is keyed by merchant like every input, so it names one merchant's file from one
acquirer for one settle date D, with the file's control totals (number of credits, their total
in minor units, one currency). An acquirer-wide file is split per merchant by the adapter that
loads it into Kafka. This module owns what a marker does; the reconciler releases it in event
time order (at equal times after credits, so a credit booked at the marker's own time is in the
file) and calls :meth:`MarkerBook.on_marker`.

Rules (docs in README "Completeness markers"):

- *Items closed at once.* Items of that merchant and acquirer whose due date (the local date,
  in their cycle's zone, of their deadline) is D, still open and with no credit attached, close
  at the marker's time as **missing**, without waiting for deadline + grace; the finding's
  probable cause is ``not_in_settlement_file`` and its evidence names the marker. Their
  ``close_ms`` stays the normal deadline + grace, so a credit read later resolves the missing
  and is late only when booked after deadline + grace, exactly as without a marker. Items
  already paid close at their normal time (their amounts are judged at close, so a refund read
  within the lateness still counts, as without a marker); items expecting nothing (declined,
  fully reversed) are left alone as well.
- *Control totals.* The credits seen for D are the merchant's credits from this acquirer in the
  marker's currency whose booking time (event_time) falls on D in the policy time zone and
  which were released before the marker (redeliveries not counted). When their number or total
  differs from the marker's, the finding is ``file_incomplete`` (status open, subject the
  marker_id, expected = marker total, received = seen total, expected_count and received_count
  the two counts; probable cause ``file_short``, ``file_extra`` or ``file_total_mismatch``). A
  credit for D released after its marker is not checked again.
- *Files expected by a time.* For acquirers with a ``[[settlement_files]]`` entry in the policy,
  a merchant expects a file for D once it has an item from that acquirer due on D or a credit
  from it booked on D. :meth:`MarkerBook.overdue` counts, per (acquirer, D), the merchants whose
  file has not come once the clock has passed the expected time: the live worker exports it at
  scrape time (``settlewatch_settlement_files_overdue``) and an alert rule pages on it.
- *Redelivery.* The same marker_id again is a redelivery: counted, nothing else (the reconciler
  keeps marker ids ``redelivery_window`` after the marker's time, as for other ids).
- *Retention.* A day's file records (tallies, markers seen, expected) are kept until
  ``redelivery_window`` after the end of D (UTC day arithmetic, as the redelivery ids), then
  dropped: a marker after that checks against nothing seen (all credits of D are then long out
  of state too) and an overdue file stops being reported.

State: one :class:`FileRec` per (merchant, acquirer, D), a state key of its own in
``take_changes`` (tag ``t``), kept only for the pairs that send markers (and for acquirers with
a ``[[settlement_files]]`` entry): while a pair has a file record that saw a marker, its credits
are tallied as they come and its open items indexed by deadline. A pair's first marker (or its
first after all its records were dropped) reads the merchant's items once to build the index,
and counts the credits the merchant still holds from the acquirer (kept as long as the items
they pay, ``keep_settled`` after them) for the dates not counted yet; a restore rebuilds the
index from the items for the pairs whose file records saw a marker. So a feed without markers
keeps nothing per credit or per item.
Cost: a marker costs the items it closes plus the distinct deadlines of that merchant and
acquirer's open items (its first, the merchant's items and credits once); a credit of a pair
sending markers costs one dict update; a feed without markers pays a look-up per credit and per
item opened and closed, no memory, and gets exactly the findings it got before.

Pure: no I/O, no clock; imports the core's vocabulary only.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .events import Credit, FileComplete, FindingKind, Status, anomaly_id
from .policy import Policy

if TYPE_CHECKING:  # the reconciler imports this module; this is for types only
    from .reconcile import Item, Merchant, Reconciler

DAY_MS = 86_400_000
OPEN = "open"  # streams.core.reconcile.OPEN (that module imports this one)
NOT_IN_FILE = "not_in_settlement_file"  # probable cause of a missing a marker closed
FILE_SHORT = "file_short"  # fewer credits seen than the file lists: a truncated feed
FILE_EXTRA = "file_extra"  # more credits seen than the file lists
FILE_TOTAL_MISMATCH = "file_total_mismatch"  # as many credits, another total
_MAX_CACHED = 1 << 16


class FileRec:
    """What is known of one merchant's settlement file from one acquirer for one settle date."""

    __slots__ = ("acquirer", "day", "tally", "markers", "expected")

    def __init__(self, acquirer: str, day: int) -> None:
        self.acquirer = acquirer
        self.day = day  # the settle date, an ordinal
        self.tally: dict[str, list[int]] = {}  # currency -> [credits seen, their total]
        self.markers = 0  # markers released for it (distinct marker_ids)
        self.expected = False  # counted in MarkerBook.expected (acquirer with a file rule)

    def to_plain(self) -> list[Any]:
        return [self.acquirer, self.day, {c: list(v) for c, v in self.tally.items()},
                self.markers, self.expected]

    @classmethod
    def from_plain(cls, v: list[Any]) -> FileRec:
        rec = cls(v[0], v[1])
        rec.tally = {c: [n, total] for c, (n, total) in v[2].items()}
        rec.markers, rec.expected = v[3], v[4]
        return rec


def _state_rest(acquirer: str, day: int) -> str:
    return f"{day}\x1f{acquirer}"


class MarkerBook:
    """The reconciler's marker state and rules (one per reconciler)."""

    __slots__ = ("r", "policy", "files", "days", "indexed", "open_due", "expected", "arrived",
                 "_due_days")

    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler
        self.policy: Policy = reconciler.policy
        self.files: dict[tuple[str, str, int], FileRec] = {}  # (merchant, acquirer, D)
        self.days: dict[int, set[tuple[str, str]]] = {}  # D -> (merchant, acquirer) with a rec
        # (merchant, acquirer) -> its file records that saw a marker: while there is one, the
        # pair's open items are indexed below and its credits tallied
        self.indexed: dict[tuple[str, str], int] = {}
        # (merchant, acquirer) -> deadline ms -> keys of the open items due then
        self.open_due: dict[tuple[str, str], dict[int, dict[str, None]]] = {}
        # (acquirer, D) -> merchants expecting a file / of them, those whose marker came
        self.expected: dict[tuple[str, int], int] = {}
        self.arrived: dict[tuple[str, int], int] = {}
        self._due_days: dict[tuple[int, int], int] = {}  # (cycle, deadline ms) -> due date

    # -- the index of open items ------------------------------------------------------------

    def track(self, mid: str, item: Item) -> None:
        """An open item got its deadline (or a later one: call :meth:`untrack` first)."""
        if self.indexed and (mid, item.acquirer) in self.indexed:
            self._index(mid, item)
        if self.policy.file_rule(item.acquirer) is not None:
            self._expect(mid, item.acquirer, self.due_day(item))

    def _index(self, mid: str, item: Item) -> None:
        by_deadline = self.open_due.get((mid, item.acquirer))
        if by_deadline is None:
            by_deadline = self.open_due[(mid, item.acquirer)] = {}
        keys = by_deadline.get(item.deadline_ms)
        if keys is None:
            keys = by_deadline[item.deadline_ms] = {}
        keys[item.key] = None

    def untrack(self, mid: str, item: Item) -> None:
        """The item closed, or its deadline is about to move."""
        if not self.open_due:
            return
        pair = (mid, item.acquirer)
        by_deadline = self.open_due.get(pair)
        if by_deadline is None:
            return
        keys = by_deadline.get(item.deadline_ms)
        if keys is not None:
            keys.pop(item.key, None)
            if not keys:
                del by_deadline[item.deadline_ms]
                if not by_deadline:
                    del self.open_due[pair]

    def due_day(self, item: Item) -> int:
        """The item's due date: the local date of its deadline in its cycle's zone."""
        key = (item.cycle.index, item.deadline_ms)
        day = self._due_days.get(key)
        if day is None:
            if len(self._due_days) >= _MAX_CACHED:
                self._due_days.clear()
            day = self._due_days[key] = self.policy.local_day(item.deadline_ms, item.cycle)
        return day

    # -- file records -----------------------------------------------------------------------

    def _rec(self, mid: str, acquirer: str, day: int) -> FileRec:
        key = (mid, acquirer, day)
        rec = self.files.get(key)
        if rec is None:
            rec = self.files[key] = FileRec(acquirer, day)
            self._day(mid, acquirer, day)
            self.r._created((mid, "t", _state_rest(acquirer, day)), rec)
        return rec

    def _day(self, mid: str, acquirer: str, day: int) -> None:
        pairs = self.days.get(day)
        if pairs is None:
            pairs = self.days[day] = set()
            # +1 day: kept from the end of D, like the redelivery ids of a day
            self.r._files_timer((day + 1 - _EPOCH_ORDINAL) * DAY_MS
                                + self.policy.redelivery_window_ms, day)
        pairs.add((mid, acquirer))

    def _expect(self, mid: str, acquirer: str, day: int) -> None:
        rec = self._rec(mid, acquirer, day)
        if rec.expected:
            return
        rec.expected = True
        self.r._changed((mid, "t", _state_rest(acquirer, day)), rec)
        self._count(rec, 1)

    def _count(self, rec: FileRec, sign: int) -> None:
        if not rec.expected:
            return
        key = (rec.acquirer, rec.day)
        _add(self.expected, key, sign)
        if rec.markers:
            _add(self.arrived, key, sign)

    def on_credit(self, mid: str, c: Credit) -> None:
        """A credit released (not a redelivery): counted for its booking date, when its
        merchant and acquirer send markers (or its acquirer has a [[settlement_files]] entry)."""
        rule = self.policy.file_rule(c.acquirer)
        if rule is None and not (self.indexed and (mid, c.acquirer) in self.indexed):
            return  # no marker yet: a first one counts the credits held (_start)
        self._tally(mid, c)

    def _tally(self, mid: str, c: Credit) -> None:
        day = self.policy.local_day(c.event_time_ms)
        rec = self._rec(mid, c.acquirer, day)
        row = rec.tally.get(c.currency)
        if row is None:
            rec.tally[c.currency] = [1, c.amount_minor]
        else:
            row[0] += 1
            row[1] += c.amount_minor
        self.r._changed((mid, "t", _state_rest(c.acquirer, day)), rec)
        if not rec.expected and self.policy.file_rule(c.acquirer) is not None:
            self._expect(mid, c.acquirer, day)

    def _start(self, mid: str, acquirer: str, m: Merchant) -> None:
        """A merchant and acquirer's first marker (within retention): index their open items,
        and count the credits the merchant holds from the acquirer for the dates not counted
        yet (a credit is held as long as the items it pays, keep_settled after them)."""
        if self.policy.file_rule(acquirer) is None:
            files, fresh = self.files, set()
            for rec in sorted(m.credits.values(), key=lambda r: r.seq):
                c = rec.credit
                if c.acquirer != acquirer:
                    continue
                day = self.policy.local_day(c.event_time_ms)
                if (mid, acquirer, day) not in files or day in fresh:
                    fresh.add(day)
                    self._tally(mid, c)
        for item in m.items.values():
            if item.state == OPEN and item.acquirer == acquirer:
                self._index(mid, item)

    def forget(self, day: int) -> None:
        """The day's file records have passed their retention."""
        for mid, acquirer in self.days.pop(day, ()):
            rec = self.files.pop((mid, acquirer, day), None)
            if rec is not None:
                self._count(rec, -1)
                if rec.markers:
                    self._unmark((mid, acquirer))
                self.r._changed((mid, "t", _state_rest(acquirer, day)), None)

    # -- a marker ---------------------------------------------------------------------------

    def on_marker(self, mk: FileComplete, m: Merchant) -> None:
        r = self.r
        mid = m.merchant_id
        if r._seen and r._was_seen(mid, "m" + mk.marker_id):
            r._redelivered("settlements", m)
            return
        r._remember(mid, "m" + mk.marker_id, mk.event_time_ms)
        at = mk.event_time_ms
        detail = {"marker": marker_evidence(mk)}
        if (mid, mk.acquirer) not in self.indexed:
            self._start(mid, mk.acquirer, m)
        for item in self._due_open(mid, mk, m):
            if not item.credits and r._expected(item):
                r._close(item, m, at_ms=at, cause=NOT_IN_FILE, cause_detail=detail)
        rec = self._rec(mid, mk.acquirer, mk.settle_day)
        if not rec.markers:
            _add(self.indexed, (mid, mk.acquirer), 1)
            if rec.expected:
                _add(self.arrived, (rec.acquirer, rec.day), 1)
        rec.markers += 1
        r._changed((mid, "t", _state_rest(mk.acquirer, mk.settle_day)), rec)
        seen_n, seen_total = rec.tally.get(mk.currency, (0, 0))
        if seen_n != mk.credit_count or seen_total != mk.total_minor:
            r._out.append(self._file_incomplete(mk, seen_n, seen_total, r.clock_ms))

    def _due_open(self, mid: str, mk: FileComplete, m: Merchant) -> list[Item]:
        """The open items of the marker's merchant and acquirer due on its settle date."""
        by_deadline = self.open_due.get((mid, mk.acquirer))
        if not by_deadline:
            return []
        out = []
        items = m.items
        for deadline_ms, keys in sorted(by_deadline.items()):
            # One merchant and acquirer have one cycle, so one due date per deadline: ask the
            # first item, and pass over every other deadline without reading its items.
            first = items.get(next(iter(keys)))
            if first is None or self.due_day(first) != mk.settle_day:
                continue
            for key in sorted(keys):
                item = items.get(key)
                if item is not None and item.currency == mk.currency:
                    out.append(item)
        return out

    def _file_incomplete(self, mk: FileComplete, seen_n: int, seen_total: int,
                         clock_ms: int):
        from .events import Finding
        if seen_n < mk.credit_count:
            cause = FILE_SHORT
        elif seen_n > mk.credit_count:
            cause = FILE_EXTRA
        else:
            cause = FILE_TOTAL_MISMATCH
        kind = FindingKind.FILE_INCOMPLETE
        return Finding(
            anomaly_id=anomaly_id(kind, mk.merchant_id, mk.marker_id), kind=kind,
            status=Status.OPEN, merchant_id=mk.merchant_id, acquirer=mk.acquirer,
            subject=mk.marker_id, auth_ids=(), credit_ids=(), expected_minor=mk.total_minor,
            received_minor=seen_total, difference_minor=seen_total - mk.total_minor,
            currency=mk.currency, deadline_ms=self.policy.file_expected_ms(mk.acquirer,
                                                                           mk.settle_day),
            event_time_ms=mk.event_time_ms, detected_at_ms=clock_ms, probable_cause=cause,
            evidence={"sales": [], "credits": [], "marker": marker_evidence(mk),
                      "seen": {"credit_count": seen_n, "total_minor": seen_total}},
            expected_count=mk.credit_count, received_count=seen_n)

    # -- views ------------------------------------------------------------------------------

    def overdue(self, clock_ms: int) -> dict[tuple[str, int], int]:
        """(acquirer, settle date ordinal) -> merchants whose file is expected by now and has
        not come. From the counters, never a scan of the state: it costs the (acquirer, D)
        pairs within retention (about redelivery_window days per acquirer with a file rule)."""
        out = {}
        arrived = self.arrived
        for key, n in list(self.expected.items()):
            missing = n - arrived.get(key, 0)
            if missing > 0:
                at = self.policy.file_expected_ms(key[0], key[1])
                if at is not None and clock_ms >= at:
                    out[key] = missing
        return out

    # -- live state -------------------------------------------------------------------------

    def every_key(self) -> Iterator[tuple[tuple, FileRec]]:
        for (mid, acquirer, day), rec in self.files.items():
            yield (mid, "t", _state_rest(acquirer, day)), rec

    def restore(self, mid: str, value: list[Any]) -> None:
        """One file record back (before the items are re-armed, which indexes theirs)."""
        rec = FileRec.from_plain(value)
        self.files[(mid, rec.acquirer, rec.day)] = rec
        if rec.markers:
            _add(self.indexed, (mid, rec.acquirer), 1)
        self._day(mid, rec.acquirer, rec.day)
        self._count(rec, 1)


    def _unmark(self, pair: tuple[str, str]) -> None:
        """A file record that saw a marker is dropped; the pair's last: stop indexing it."""
        _add(self.indexed, pair, -1)
        if pair not in self.indexed:
            self.open_due.pop(pair, None)


def _add(counts: dict, key: Any, sign: int) -> None:
    n = counts.get(key, 0) + sign
    if n:
        counts[key] = n
    else:
        counts.pop(key, None)


def marker_evidence(mk: FileComplete) -> dict[str, Any]:
    from datetime import date
    return {"marker_id": mk.marker_id, "acquirer": mk.acquirer,
            "settle_date": date.fromordinal(mk.settle_day).isoformat(),
            "credit_count": mk.credit_count, "total_minor": mk.total_minor,
            "currency": mk.currency}  # its time is the finding's event_time


_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
