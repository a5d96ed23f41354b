"""The event-time reconciler: authorisations and settlement credits in, findings out.

Theory of operation
===================

Rule 1: everything that decides a finding lives in this file. It does no I/O and reads no clock;
the shells (faust worker, replay, tests) feed it events and, when inputs are silent, a clock.

Items. What a credit pays is an *item*: one sale (cycle mode ``per_sale``) or one terminal
batch (mode ``batch``, key ``batch_id`` or, when absent, merchant + acquirer + trade date). The
policy's first matching cycle picks the mode, the deadline and the grace for a sale. An item
expects the net of its sales: amount minus fee, after reversals, minus refunds; a declined or
fully reversed sale expects nothing.

One timeline. Every event is released into the state in event-time order, and every timer
(an item's close at deadline + grace, an unmatched credit's orphan time, a retired item's
expiry) fires in that same order, only once the clock has *passed* it. The clock is the lower
of the two inputs' watermarks (largest event time seen minus ``lateness``), or a later floor
given by :meth:`Reconciler.advance_to` (live: the wall clock when inputs are silent; replay: the
end of the range). Events wait in a buffer until the clock reaches them, so any arrival order
within the allowed out-of-orderness releases the same events in the same order and gives the
same findings. At equal times, sales come before reversals, refunds and credits, and events come
before timers (a credit booked exactly at deadline + grace is on time).

Late data. An event older than the clock (an offline terminal uploading hours late, a credit
read late) is applied at once to its item, counted as late data, never dropped. A credit whose
own event time is on time but which is read after its item closed resolves the missing finding
the close raised and is not late.

Judging. An item's amounts are judged when it closes, so a refund or a sale read within the
lateness still counts. Among the credits for an item the earliest (event time, then credit_id)
pays; each other one is a duplicate finding. A credit arriving after the close is judged on
release. A credit is matched by its ``auth_ids``, else its ``batch_id``, else by amount among the
merchant's unpaid items; one that matches nothing by ``orphan_after`` after its own time is an
orphan.

Retention and redelivery. The same sale (auth_id), reversal or refund (event_id) or credit
(credit_id) seen again is a redelivery: counted, never a finding. Settled and void items are
kept ``keep_settled`` after their last activity, then dropped. An item whose missing finding is
open is open state: kept until a credit resolves it or ``missing_horizon`` after its close, then
dropped and counted (``Stats.missing_expired``, ``Observer.on_missing_expired``); a credit for it
after that is an orphan with probable cause ``missing_horizon_passed``. When an item, a credit
or a deduction is dropped, the ids that recognise its redelivery move to a store apart from the
items, kept ``redelivery_window`` after each event's own time (bucketed by UTC day of event time).

Time structures. The timers are a calendar queue (:class:`_Calendar`): buckets of time holding
sets of timers, a heap of bucket numbers, and a small heap of the timers the clock has reached.
Deadlines cluster (every T+1 sale of a trade date shares one), a timer that moves is cancelled
(never left stale), and a push costs a set insertion. Closes go one level further: the items
closing at one time sit in one list (``_closes``) behind a single timer whose merchant is "",
which sorts before every other timer of its time and kind; it closes them by merchant and key,
the order one timer each gave; a close that moves leaves a stale entry in its old list, which is
skipped and goes when that earlier time fires. The event buffer, which
only holds the events within the lateness, stays a plain heap.

State for the live worker, per change
-------------------------------------
:meth:`Reconciler.take_changes` returns ``{key: value}`` for every state key changed since the
last call, ``value`` being plain JSON-able data (lists, dicts, str, int, bool, None) or ``None``
when the key was deleted. Its cost is proportional to the number of changes, never to the state.
Keys are ``merchant_id + "\x1f" + tag + "\x1f" + rest`` (a merchant id must not contain
``\x1f``), so the worker routes each key to its merchant's partition:

======  ======================  =================================================================
tag     rest                    value
======  ======================  =================================================================
``i``   item key                one item: header, with its sale for a per-sale item; written when
                                it opens, changes and closes; deleted when it is dropped
``s``   auth_id                 one sale of a batch item: ``[item key, position, fields...]``
``c``   credit_id               one credit record (the credit, what it pays, its timers' times)
``d``   event_id                one deduction (a refund or reversal netted into a later credit)
``b``   sequence number         one event buffered until the clock reaches it
``r``   day ``\x1f`` chunk      up to 1,000 ids kept for redelivery, of events of that UTC day
``g``   anomaly_id              one open finding in the aging view (``aging=True``; see
                                streams.core.aging): written when it opens, deleted when it
                                resolves or passes its horizon
======  ======================  =================================================================

No value grows with a merchant's size: a batch's sales, the deductions and the buffered events
are one key each, and redelivery ids come in chunks. :meth:`Reconciler.restore_changes` rebuilds
a fresh reconciler from the latest value of every live key (any order) and re-arms its timers
and buffer; the worker then calls :meth:`restore_clock` and :meth:`drain`. Events re-read after
a restore (from committed offsets behind the state) are recognised as redeliveries.

The older whole-merchant form (:meth:`snapshot_merchant` / :meth:`restore_merchant`, with
:meth:`take_dirty`) is kept over the same state for existing callers.

Evidence. A finding's ``evidence`` (the sales, credits and cycle behind it) is built when the
finding is raised, from the state that decided it, by a reconciler built with ``evidence=True``
(the default: file and Kafka replay, tests), whose sales also keep their terminal, masked card
and trace fields (:class:`EvidenceSale`, :class:`EvidenceSaleItem`). The live worker builds it
with ``evidence=False``: its records on settlewatch.anomalies carry no evidence
(streams.wire.encode), so its findings have ``evidence`` None and its sales keep only what
decides findings (:class:`SaleItem`, a :class:`ColumnBatchItem`'s columns; the evidence-only
fields read as None and are written as None in take_changes' values, which keep their shape).
Findings are identical either way in every wire field (tests/core/test_compact.py). Rebuilding
evidence on the audit side from the replayed inputs instead would have to re-derive, as of each
finding, a sale's reversals and refunds and which of them were netted into a later credit, i.e.
run this file's rules a second time; the replay has every input and runs this file anyway, so it
keeps ``evidence=True`` and its output stays byte-identical.

Representation (issue 13). Per open sale the live state holds: a per-sale item is its own
sale, one slotted :class:`SaleItem` with its amount and time int objects; a batch's sales are
columns of its :class:`ColumnBatchItem` (no object per sale: a list entry each for the auth_id
and the channel, 8 bytes each of amount and time, declined and adjusted sales in sparse maps),
read through :class:`SaleRow` views where a rule wants a sale object and directly on the hot
paths (expected net, drop). Then its auth_id string (the key of ``Merchant.items`` or of
``Merchant.batch_of``, whose values are the batch item's own key string), and per item an
8-byte entry in the list of the items closing at its close time (``_closes``: one timer and one
int object per distinct close time, not per item; deadlines cluster at cut-offs). An item has
no subject or deadline slot (they follow from its key and close). A merchant's seldom-filled
maps, and a credit's id lists, share one read-only empty until written (:class:`_Unwritten`,
``_NO_IDS``); a closed item drops its expected-net memo once judged. Settled and void items are
dropped ``keep_settled`` after their last activity, leaving only their tagged ids in the
redelivery store; until then a settled sale, with its credit record, costs about twice an open
one (README's performance notes, ``bytes_per_held_sale``), and what 300k events/s would take
is there too.
"""
from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, cast

from . import causes
from .aging import AgingBook
from .events import (
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    Credit,
    FileComplete,
    Finding,
    FindingKind,
    PosEvent,
    Status,
    anomaly_id,
)
from .markers import MarkerBook
from .policy import Cycle, Policy

NEVER = -(1 << 62)  # the clock before both inputs have been seen
FOREVER = 1 << 62

# Sources, as counted for late data and redeliveries.
AUTHORISATIONS = "authorisations"
SETTLEMENTS = "settlements"

# ---------------------------------------------------------------------------------------------
# The lifecycle of an item, as a table (h11 style): (state, trigger) -> next state.
OPEN = "open"  # accepting sales, refunds and credits; deadline + grace not yet passed
SETTLED = "settled"  # closed with a paying credit
MISSING = "missing"  # closed without a credit: a missing finding is open
VOID = "void"  # closed expecting nothing (declined or fully reversed): no credit is due

CLOSE_PAID = "close with a credit"
CLOSE_UNPAID = "close without a credit"
CLOSE_NOTHING_DUE = "close expecting nothing"
CREDIT = "credit after close"

TRANSITIONS: dict[tuple[str, str], str] = {
    (OPEN, CLOSE_PAID): SETTLED,
    (OPEN, CLOSE_UNPAID): MISSING,
    (OPEN, CLOSE_NOTHING_DUE): VOID,
    (MISSING, CREDIT): SETTLED,  # resolves the missing finding; late if booked after the close
    (SETTLED, CREDIT): SETTLED,  # a second credit: duplicate
    (VOID, CREDIT): VOID,  # a credit for nothing due: overpaid
}

# Order of release at equal event time.
_RANK = {AUTHORISATION: 0, REVERSAL: 1, REFUND: 2}
_CREDIT_RANK = 3
_MARKER_RANK = 4  # a settlement_file_complete marker (v1.1): after the credits of its time
# Timer kinds, in the order they fire at equal time.
_CLOSE, _ORPHAN, _EXPIRE, _FORGET = 0, 1, 2, 3
_FILES = 4  # a day's settlement-file records pass their retention (streams.core.markers)
DAY_MS = 86_400_000
_CHUNK = 1000  # redelivery ids per state value
MISSING_HORIZON_PASSED = "missing_horizon_passed"

# Fee rates commonly charged in the market, beside the configured ones, for guessing a
# fee_rate_mismatch cause (basis points).
COMMON_FEE_BPS = (38, 50, 55, 60, 78, 100, 125)


class Observer(Protocol):
    """What the reconciler reports besides findings; the metrics edge implements it."""

    def on_settled(self, acquirer: str, currency: str, delay_ms: int, amount_minor: int,
                   channel: str = "") -> None: ...
    def on_item_opened(self, acquirer: str, currency: str, channel: str = "") -> None: ...
    def on_item_closed(self, acquirer: str, matched: bool, channel: str = "") -> None: ...
    def on_late_data(self, source: str) -> None: ...
    def on_redelivery(self, source: str) -> None: ...
    # optional: called when an item with an open missing finding passes missing_horizon
    # def on_missing_expired(self, acquirer: str, currency: str, amount_minor: int) -> None
    # optional, for the early warning (streams/core/earlywarning.py): an approved sale becomes
    # due by its item's deadline (sales=-1 withdraws it from a deadline a batch moved off;
    # paid: its item already has a credit), and each approved sale of an open item whose first
    # credit arrives before the close
    # (trade_day: the item's trade date ordinal)
    # (sale_ms: the sale's event time, for a per-sale item only; a batch's sales pass none)
    # def on_sale_due(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
    #                 amount_minor: int, sales: int, paid: bool, trade_day: int,
    #                 sale_ms: int | None = None) -> None
    # def on_sale_paid(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
    #                  amount_minor: int, credit_ms: int, trade_day: int,
    #                  sale_ms: int | None = None) -> None


class Stats:
    """Plain counters, read by tests, replay summaries and the metrics edge."""

    __slots__ = ("events", "late_data", "redeliveries", "findings", "missing_expired")

    def __init__(self) -> None:
        self.events = 0
        self.late_data = 0
        self.redeliveries = 0
        self.findings = 0
        self.missing_expired = 0  # items dropped with their missing open (missing_horizon)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


# ---------------------------------------------------------------------------------------------
# State: plain, slotted, serialisable records.


class Sale:
    """What decides findings about one sale. The evidence-only fields (terminal, masked card,
    STAN/RRN/auth code) are in :class:`EvidenceSale`, kept only by a reconciler built with
    ``evidence=True`` (replay, tests); here they read as None."""

    # No event_id: a sale is one auth_id, and a second authorisation for it is a redelivery.
    __slots__ = ("auth_id", "channel", "amount_minor", "approved", "event_time_ms",
                 "reversed_minor", "refunded_minor", "adjustments")
    terminal_id: str | None = None
    pan_masked: str | None = None
    refs: tuple[str | None, str | None, str | None] | None = None

    def __init__(self, e: PosEvent) -> None:
        self.auth_id = e.auth_id
        _sale_fields(self, e)

    def captured_minor(self) -> int:
        """What the sale is worth after reversals: nothing if declined or fully reversed."""
        if not self.approved:
            return 0
        return max(self.amount_minor - self.reversed_minor, 0)


def _sale_fields(s: Sale | SaleItem, e: PosEvent) -> None:
    """What decides findings about a sale, from its authorisation (Sale and SaleItem)."""
    s.channel = e.channel
    s.amount_minor = e.amount_minor
    s.approved = e.status != DECLINED
    s.event_time_ms = e.event_time_ms
    s.reversed_minor = 0
    s.refunded_minor = 0
    # (type, event_id, amount, ms, post_payment)
    s.adjustments = None


class EvidenceSale(Sale):
    """A sale with the fields only a finding's evidence shows."""

    __slots__ = ("terminal_id", "pan_masked", "refs")

    def __init__(self, e: PosEvent, terminal_id: str | None = None) -> None:
        Sale.__init__(self, e)
        _keep_evidence(self, e, terminal_id)


def _keep_evidence(s: EvidenceSale | EvidenceSaleItem, e: PosEvent,
                   terminal_id: str | None) -> None:
    s.terminal_id = terminal_id if terminal_id is not None else e.terminal_id
    s.pan_masked = e.pan_masked
    # STAN, RRN and auth code: what a bank asks for to trace a sale (None when none given)
    s.refs = (e.stan, e.rrn, e.auth_code) if e.stan or e.rrn or e.auth_code else None


class Item:
    """What a credit pays: the fields every item has. A batch is a :class:`BatchItem` holding
    its sales; a per-sale item is a :class:`SaleItem`, which is its own (one) sale, so that an
    open sale is one object.

    No subject and no deadline slots: both follow from others (a per-sale item's subject is its
    key, a batch's its key after _batch_key's prefix; the deadline is the close less the
    cycle's grace), one pointer and one int object less per item."""

    __slots__ = ("key", "merchant_id", "acquirer", "currency", "cycle", "close_ms", "credits",
                 "state", "payer", "expire_ms", "cached")
    is_batch = False
    trade_day = 0
    sales: Any  # list[Sale] of a batch; (the item itself,) of a per-sale item
    last_sale_ms: int

    def __init__(self, key: str, e: PosEvent, cycle: Cycle) -> None:
        self.key = key
        self.merchant_id = e.merchant_id
        self.acquirer = e.acquirer
        self.currency = e.currency
        self.cycle = cycle
        self.close_ms = cycle.grace_ms  # a deadline of 0 until set
        self.credits: list[str] = _NO_CREDITS  # credit_ids attached, in arrival order
        self.state = OPEN
        self.payer: str | None = None
        self.expire_ms = FOREVER
        self.cached: tuple[int, int] | None = None  # (expected net, approved sales), memo

    @property
    def subject(self) -> str:
        return self.key[_BATCH_PREFIX:] if self.is_batch else self.key

    @property
    def deadline_ms(self) -> int:
        return self.close_ms - self.cycle.grace_ms


class BatchItem(Item):
    """A terminal batch (cycle mode ``batch``): its sales, due by its latest trade date.

    Two forms: :class:`ListBatchItem` keeps a list of sale objects (``evidence=True``: their
    evidence fields with them); :class:`ColumnBatchItem` (the live worker's) keeps its sales as
    columns, read and written through :class:`SaleRow` views."""

    __slots__ = ("trade_day", "last_sale_ms")
    is_batch = True

    def __init__(self, key: str, e: PosEvent, cycle: Cycle) -> None:
        Item.__init__(self, key, e, cycle)
        self.trade_day = 0
        self.last_sale_ms = e.event_time_ms


class ListBatchItem(BatchItem):
    """A batch whose sales are :class:`EvidenceSale` objects (replay, tests)."""

    __slots__ = ("sales",)

    def __init__(self, key: str, e: PosEvent, cycle: Cycle) -> None:
        BatchItem.__init__(self, key, e, cycle)
        self.sales: list[Sale] = []


class ColumnBatchItem(BatchItem):
    """A batch whose sales are columns: per sale an auth_id, a channel (both shared strings),
    8 bytes of amount and 8 of time; declined sales and a sale's reversals and refunds, rare,
    in sparse maps by position. No object per sale (a :class:`Sale` and its two int objects
    were about 160 bytes, issue 13); :attr:`sales` reads them as :class:`SaleRow` views."""

    __slots__ = ("auth_ids", "channels", "amounts", "times", "declined", "adjusted")

    def __init__(self, key: str, e: PosEvent, cycle: Cycle) -> None:
        BatchItem.__init__(self, key, e, cycle)
        self._empty()

    def _empty(self) -> None:
        self.auth_ids: list[str] = []
        self.channels: list[str] = []
        self.amounts = array("q")
        self.times = array("q")
        self.declined: set[int] | None = None  # positions of declined sales
        # position -> [reversed_minor, refunded_minor, adjustments]
        self.adjusted: dict[int, list[Any]] | None = None

    @property
    def sales(self) -> SaleRows:
        return SaleRows(self)

    def add_sale(self, auth_id: str, channel: str, amount_minor: int, approved: bool,
                 event_time_ms: int, reversed_minor: int = 0, refunded_minor: int = 0,
                 adjustments: list[tuple] | None = None) -> None:
        n = len(self.auth_ids)
        self.auth_ids.append(auth_id)
        self.channels.append(channel)
        self.amounts.append(amount_minor)
        self.times.append(event_time_ms)
        if not approved:
            if self.declined is None:
                self.declined = set()
            self.declined.add(n)
        if reversed_minor or refunded_minor or adjustments is not None:
            if self.adjusted is None:
                self.adjusted = {}
            self.adjusted[n] = [reversed_minor, refunded_minor, adjustments]


def _column_expected(item: ColumnBatchItem, fee: Any) -> tuple[int, int]:
    """(expected net, approved sales) of a column batch, as Reconciler._expected computes
    them from sale objects."""
    total = approved = 0
    declined, adjusted = item.declined, item.adjusted
    for n, (amount, channel) in enumerate(zip(item.amounts, item.channels)):
        extra = adjusted.get(n) if adjusted is not None else None
        if declined is None or n not in declined:
            approved += 1
            captured = amount - extra[0] if extra is not None else amount
            if captured > 0:
                total += captured - fee(channel, captured)
        if extra is not None:
            total -= extra[1]
    return total, approved


class SaleRows:
    """The sales of a :class:`ColumnBatchItem` as a sequence of :class:`SaleRow` views."""

    __slots__ = ("item",)

    def __init__(self, item: ColumnBatchItem) -> None:
        self.item = item

    def __len__(self) -> int:
        return len(self.item.auth_ids)

    def __getitem__(self, n: int) -> SaleRow:
        size = len(self.item.auth_ids)
        if n < 0:
            n += size
        if not 0 <= n < size:
            raise IndexError(n)
        return SaleRow(self.item, n)

    def __iter__(self) -> Iterator[SaleRow]:
        item = self.item
        return (SaleRow(item, n) for n in range(len(item.auth_ids)))

    def append(self, s: Sale) -> None:
        self.item.add_sale(s.auth_id, s.channel, s.amount_minor, s.approved, s.event_time_ms,
                           s.reversed_minor, s.refunded_minor, s.adjustments)


def _row_extra(item: ColumnBatchItem, n: int) -> list[Any]:
    adjusted = item.adjusted
    if adjusted is None:
        adjusted = item.adjusted = {}
    extra = adjusted.get(n)
    if extra is None:
        extra = adjusted[n] = [0, 0, None]
    return extra


def _extra_field(field: int, default: Any) -> Any:
    """A :class:`SaleRow` field kept in its batch's sparse ``adjusted`` map (``default`` when
    the sale has no entry), read and written there."""
    def get(row: SaleRow) -> Any:
        adjusted = row.item.adjusted
        extra = adjusted.get(row.n) if adjusted is not None else None
        return extra[field] if extra is not None else default

    def put(row: SaleRow, value: Any) -> None:
        _row_extra(row.item, row.n)[field] = value

    return property(get, put)


class SaleRow:
    """One sale of a :class:`ColumnBatchItem`, read and written in its columns: it behaves as
    a :class:`Sale` (the evidence-only fields read as None)."""

    __slots__ = ("item", "n")
    terminal_id = None
    pan_masked = None
    refs = None

    def __init__(self, item: ColumnBatchItem, n: int) -> None:
        self.item = item
        self.n = n

    @property
    def auth_id(self) -> str:
        return self.item.auth_ids[self.n]

    @property
    def channel(self) -> str:
        return self.item.channels[self.n]

    @property
    def amount_minor(self) -> int:
        return self.item.amounts[self.n]

    @property
    def event_time_ms(self) -> int:
        return self.item.times[self.n]

    @property
    def approved(self) -> bool:
        declined = self.item.declined
        return declined is None or self.n not in declined

    # reversed_minor, refunded_minor, adjustments: the row's entry in the sparse map, if any
    reversed_minor = _extra_field(0, 0)
    refunded_minor = _extra_field(1, 0)
    adjustments = _extra_field(2, None)

    def captured_minor(self) -> int:
        """What the sale is worth after reversals: nothing if declined or fully reversed."""
        if not self.approved:
            return 0
        return max(self.amount_minor - self.reversed_minor, 0)


class SaleItem(Item):
    """A per-sale item and its one sale in one object: the sale's fields are Sale's, its
    auth_id is the item's key."""

    __slots__ = ("channel", "amount_minor", "approved", "event_time_ms", "reversed_minor",
                 "refunded_minor", "adjustments")
    terminal_id: str | None = None
    pan_masked: str | None = None
    refs: tuple[str | None, str | None, str | None] | None = None

    def __init__(self, e: PosEvent, cycle: Cycle) -> None:
        Item.__init__(self, e.auth_id, e, cycle)
        _sale_fields(self, e)

    @property
    def auth_id(self) -> str:
        return self.key

    @property
    def sales(self) -> tuple[SaleItem]:  # type: ignore[override]
        return (self,)

    @property
    def last_sale_ms(self) -> int:  # type: ignore[override]
        return self.event_time_ms

    captured_minor = Sale.captured_minor


class EvidenceSaleItem(SaleItem):
    """A per-sale item with the fields only a finding's evidence shows (EvidenceSale's)."""

    __slots__ = ("terminal_id", "pan_masked", "refs")

    def __init__(self, e: PosEvent, cycle: Cycle, terminal_id: str | None = None) -> None:
        SaleItem.__init__(self, e, cycle)
        _keep_evidence(self, e, terminal_id)


_NO_CREDITS: list[str] = []  # shared by every item without a credit; never appended to
# An empty list of ids until one is added (a list is made then): a merchant's amount_only, a
# credit's items and waiting refs. An empty list is 56 bytes, and most stay empty (issue 13).
_NO_IDS: Any = ()


class CreditRec:
    __slots__ = ("credit", "items", "waiting", "judged", "orphan_ms", "expire_ms", "matched",
                 "seq", "amount_only")

    def __init__(self, credit: Credit, orphan_ms: int, seq: int = 0) -> None:
        self.credit = credit
        self.seq = seq  # arrival order: orders a merchant's waiting and amount-only credits
        self.amount_only = False  # in the merchant's amount_only list
        self.items: list[str] = _NO_IDS  # item keys this credit pays
        self.waiting: list[str] = _NO_IDS  # refs (auth ids or batch keys) not known yet
        self.judged = False
        self.orphan_ms = orphan_ms
        self.expire_ms = FOREVER
        self.matched = False  # attached to at least one item


class _Unwritten(dict):
    """The one shared empty map that a merchant's seldom-filled maps start as (an empty dict
    is 64 bytes; a merchant has five that are mostly empty, and a large acquirer has many
    merchants with a few open sales each: issue 13). Reads are a dict's; a write is a bug and
    raises. The ``own_*`` methods of :class:`Merchant` put a dict of its own in its place."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a merchant's shared empty map is read-only: use Merchant.own_*()")

    __setitem__ = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]


_EMPTY: Any = _Unwritten()


class Merchant:
    __slots__ = ("merchant_id", "items", "batch_of", "credits", "waiting_refs", "amount_only",
                 "deductions", "buffered")

    def __init__(self, merchant_id: str) -> None:
        self.merchant_id = merchant_id
        self.items: dict[str, Item] = {}  # per-sale items by auth_id, batches by _batch_key()
        self.batch_of: dict[str, str] = _EMPTY  # auth_id -> batch item key (batch mode only)
        self.credits: dict[str, CreditRec] = _EMPTY
        self.waiting_refs: dict[str, list[str]] = _EMPTY  # ref -> credit_ids waiting for it
        self.amount_only: list[str] = _NO_IDS  # credit_ids with no reference, waiting for a match
        # refunds and reversals of sales already paid: the acquirer nets them into a later credit
        # event_id -> (type, auth_id, amount, ms, event_id, seq), in arrival order
        self.deductions: dict[str, tuple] = _EMPTY
        self.buffered: dict[int, PosEvent | Credit] = _EMPTY  # seq -> event not yet released

    def is_empty(self) -> bool:
        return not (self.items or self.credits or self.buffered or self.deductions)

    # Each map or list to write to: the merchant's own, made on the first write.

    def own_batch_of(self) -> dict[str, str]:
        if self.batch_of is _EMPTY:
            self.batch_of = {}
        return self.batch_of

    def own_credits(self) -> dict[str, CreditRec]:
        if self.credits is _EMPTY:
            self.credits = {}
        return self.credits

    def own_waiting_refs(self) -> dict[str, list[str]]:
        if self.waiting_refs is _EMPTY:
            self.waiting_refs = {}
        return self.waiting_refs

    def own_amount_only(self) -> list[str]:
        if self.amount_only is _NO_IDS:
            self.amount_only = []
        return self.amount_only

    def own_deductions(self) -> dict[str, tuple]:
        if self.deductions is _EMPTY:
            self.deductions = {}
        return self.deductions

    def own_buffered(self) -> dict[int, PosEvent | Credit]:
        if self.buffered is _EMPTY:
            self.buffered = {}
        return self.buffered


_DEDUCTIONS = "\x1fdeductions"  # the timer key that prunes a merchant's deductions
_CREDIT_TIMER = "\x1fcredit:"  # + credit_id: the timer key that drops a retained credit


def _batch_key(batch_id: str) -> str:
    return "\x1fbatch:" + batch_id


_BATCH_PREFIX = len(_batch_key(""))


class _Calendar:
    """A calendar queue of tuples whose first element is a time in ms.

    Entries sit in a set per bucket of ``width`` ms; a heap orders the bucket numbers. Once the
    clock reaches a bucket (:meth:`pull`), its entries move to ``now``, a heap of the few that
    are due soon, which the run loop pops in order. Pushing and cancelling an entry of a later
    bucket cost one set operation; an entry of a bucket already pulled is pushed on ``now``, and
    a cancelled one there is skipped by the caller's check when it comes up (within one bucket).
    """

    __slots__ = ("width", "buckets", "order", "now", "cur")

    def __init__(self, width: int) -> None:
        self.width = width
        self.buckets: dict[int, set] = {}
        self.order: list[int] = []  # heap of bucket numbers (each once)
        self.now: list[tuple] = []  # heap of the entries of every bucket pulled
        self.cur = NEVER // width  # buckets up to here are pulled

    def push(self, entry: tuple) -> None:
        b = entry[0] // self.width
        if b <= self.cur:
            heapq.heappush(self.now, entry)
            return
        bucket = self.buckets.get(b)
        if bucket is None:
            bucket = self.buckets[b] = set()
            heapq.heappush(self.order, b)
        bucket.add(entry)

    def cancel(self, entry: tuple) -> None:
        b = entry[0] // self.width
        if b > self.cur:
            bucket = self.buckets.get(b)
            if bucket is not None:
                bucket.discard(entry)

    def pull(self, clock_ms: int) -> list[tuple]:
        """Move every bucket the clock has reached to ``now``; return ``now``."""
        limit = clock_ms // self.width
        if limit > self.cur:
            order, buckets, now = self.order, self.buckets, self.now
            while order and order[0] <= limit:
                bucket = buckets.pop(heapq.heappop(order))
                if not bucket:
                    continue
                if now:
                    for entry in bucket:
                        heapq.heappush(now, entry)
                else:
                    now = self.now = sorted(bucket)  # a sorted list is a heap
            self.cur = limit
        return self.now

    def __len__(self) -> int:
        return len(self.now) + sum(len(b) for b in self.buckets.values())


# ---------------------------------------------------------------------------------------------


class Reconciler:
    """Reconciles one partition's merchants. Feed it with :meth:`on_event` (or
    :meth:`on_events`) and :meth:`advance_to`.

    Each returns the findings that became known, in the order they became known.
    """

    def __init__(self, policy: Policy, observer: Observer | None = None, *,
                 track_changes: bool = False, aging: bool = False,
                 evidence: bool = True) -> None:
        self.policy = policy
        # evidence=False (the live worker: its records carry no evidence): findings have
        # evidence None and sales keep only what decides findings (SaleItem and batch columns,
        # not EvidenceSale)
        self.evidence = evidence
        self.observer = observer
        self.stats = Stats()
        self.merchants: dict[str, Merchant] = {}
        self.max_auth_ms = NEVER
        self.max_credit_ms = NEVER
        self.floor_ms = NEVER
        self.clock_ms = NEVER
        self._lateness = policy.lateness_ms
        # (event_time_ms, rank, id, seq, merchant_id) per event not released yet: a plain heap,
        # as it holds only the events within the lateness (measured: cheaper than a calendar)
        self._buffer: list[tuple] = []
        # (time_ms, timer kind, merchant_id, key); closes are grouped by time (_close_timer)
        self._timers = _Calendar(60_000)
        # close time -> (that time, the open items closing then): one timer per group
        self._closes: dict[int, tuple[int, list[Item]]] = {}
        self._seq = 0
        self._out: list[Finding] = []
        self._dirty: set[str] = set()
        # (merchant_id, tag, rest) -> the object whose value to write, or None: deleted;
        # None while changes are not tracked (replay and tests never take them)
        self._changes: dict[tuple, Any] | None = {} if track_changes else None
        self._born: set[tuple] = set()  # keys first created since the last take_changes
        # redelivery ids apart from the items: merchant -> {tagged id: UTC day of its event}
        self._seen: dict[str, dict[str, int]] = {}
        self._seen_chunks: dict[tuple[str, int], list[list[str]]] = {}
        self._seen_days: dict[int, set[str]] = {}  # day -> merchants holding ids of that day
        self._open = 0  # items in state OPEN
        self._fee_bps = tuple(sorted(set(policy.all_fee_bps()) | set(COMMON_FEE_BPS)))
        # One string per terminal, shared by its sales (a terminal makes thousands a day);
        # only with evidence, as the terminal is evidence only.
        self._terminals: dict[str, str] = {}
        # Open-item counters for metrics (open_summary), kept from the items touched since the
        # last call; None until the first call, so that replay pays nothing for them.
        self._touched: set[Item] | None = None
        self._late_touched: set[Item] = set()
        self._contrib: dict[Item, tuple[tuple[str, str, int], int, bool]] = {}
        self._summary: dict[tuple[str, str, int], list[int]] = {}
        # Open findings aged by SLA tier (streams.core.aging), when asked for: None otherwise
        self.aging: AgingBook | None = AgingBook(policy, self._aging_changed) if aging else None
        # The observer's optional early-warning hooks (None: replay and tests pay nothing).
        self._due_hook = getattr(observer, "on_sale_due", None)
        self._paid_hook = getattr(observer, "on_sale_paid", None)
        # completeness markers (contract v1.1): file records, open items by due date
        self._marks = MarkerBook(self)

    # -- inputs ----------------------------------------------------------------------------------

    def on_event(self, event: PosEvent | Credit) -> list[Finding]:
        """Take one validated event; return the findings it (or the clock it moved) made known."""
        self._accept(event)
        if self._out:
            return self._take()
        return []

    def on_events(self, events: Iterable[PosEvent | Credit]) -> list[Finding]:
        """Take a batch of events: the same findings, in the same order, as calling
        :meth:`on_event` once per event and joining what each returned."""
        accept = self._accept
        for event in events:
            accept(event)
        return self._take()

    def _accept(self, event: PosEvent | Credit) -> None:
        self.stats.events += 1
        t = event.event_time_ms
        mid = event.merchant_id
        self._dirty.add(mid)
        m = self.merchants.get(mid)
        if m is None:
            m = self.merchants[mid] = Merchant(mid)
        if t < self.clock_ms:
            # Late data: the timeline has moved past it. Apply it now rather than drop it.
            self.stats.late_data += 1
            if self.observer is not None:
                self.observer.on_late_data(
                    AUTHORISATIONS if type(event) is PosEvent else SETTLEMENTS)
            self._release(event, m)
            self._run()
            return
        self._seq = seq = self._seq + 1
        buffered = m.buffered
        if buffered is _EMPTY:  # Merchant.own_buffered, inline: once per event
            buffered = m.buffered = {}
        buffered[seq] = event
        changes = self._changes
        if changes is not None:
            key = (mid, "b", seq)
            self._born.add(key)
            changes[key] = event
        if type(event) is Credit:
            heapq.heappush(self._buffer, (t, _CREDIT_RANK, event.credit_id, seq, mid))
            if t > self.max_credit_ms:
                self.max_credit_ms = t
                if t - self._lateness > self.clock_ms:
                    self._move_clock()
        elif type(event) is FileComplete:
            # a marker travels on the settlements topic: it steers that watermark like a credit
            heapq.heappush(self._buffer, (t, _MARKER_RANK, event.marker_id, seq, mid))
            if t > self.max_credit_ms:
                self.max_credit_ms = t
                if t - self._lateness > self.clock_ms:
                    self._move_clock()
        else:
            heapq.heappush(self._buffer, (t, _RANK[event.type], event.event_id, seq, mid))
            if t > self.max_auth_ms:
                self.max_auth_ms = t
                if t - self._lateness > self.clock_ms:
                    self._move_clock()

    def advance_to(self, clock_ms: int) -> list[Finding]:
        """Move the clock to at least ``clock_ms`` (a silent-input tick, or the end of a replay)."""
        if clock_ms > self.floor_ms:
            self.floor_ms = clock_ms
        self._move_clock()
        return self._take()

    def watermarks(self) -> dict[str, int | None]:
        def wm(m: int) -> int | None:
            return None if m == NEVER else m - self._lateness
        return {AUTHORISATIONS: wm(self.max_auth_ms), SETTLEMENTS: wm(self.max_credit_ms)}

    def take_dirty(self) -> set[str]:
        """Merchants whose state changed since the last call (the worker writes each once)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    # -- the timeline ----------------------------------------------------------------------------

    def _move_clock(self) -> None:
        inputs = min(self.max_auth_ms, self.max_credit_ms)
        clock = inputs - self._lateness if inputs != NEVER else NEVER
        if self.floor_ms > clock:
            clock = self.floor_ms
        if clock > self.clock_ms:
            self.clock_ms = clock
            self._run()
            if self.aging is not None and self.aging.next_expiry_ms < clock:
                self.aging.expire(clock)

    def _run(self) -> None:
        """Release buffered events and fire timers, in time order, up to the clock."""
        clock = self.clock_ms
        # The timers' heap holds every timer of the buckets the clock has reached (_Calendar),
        # so its head is the next timer up to the clock.
        buffer, timers = self._buffer, self._timers
        timers = timers.pull(clock) if clock // timers.width > timers.cur else timers.now
        pop = heapq.heappop
        merchants = self.merchants
        changes = self._changes
        while True:
            next_event = buffer[0][0] if buffer else FOREVER
            next_timer = timers[0][0] if timers else FOREVER
            if next_event <= next_timer:
                if next_event > clock:
                    return
                _, rank, _, seq, mid = pop(buffer)
                m = merchants[mid]
                buffered = m.buffered
                event = buffered.pop(seq)
                if changes is not None:
                    changes[(mid, "b", seq)] = None
                if not buffered:
                    m.buffered = _EMPTY  # a dict keeps its peak size; a quiet merchant's goes
                # the rank says which kind of event it is (see on_event)
                if rank == 0:
                    self._on_sale(cast(PosEvent, event), m)
                elif rank == _CREDIT_RANK:
                    self._on_credit(cast(Credit, event), m)
                elif rank == _MARKER_RANK:
                    self._on_marker(cast(FileComplete, event), m)
                else:
                    self._on_adjustment(cast(PosEvent, event), m)
            else:
                if next_timer >= clock:  # timers fire once the clock has passed them
                    return
                self._fire(pop(timers))

    def _timer(self, at_ms: int, kind: int, mid: str, key: str) -> None:
        # Ties break on merchant and key, never on insertion order, so that a reconciler
        # restored from snapshots fires its timers in the same order as one that never stopped.
        self._timers.push((at_ms, kind, mid, key))

    def _close_timer(self, item: Item, close_ms: int) -> None:
        """Set an item's close: items closing at the same time share one timer (deadlines
        cluster at cut-offs), one list and one int object for the time.

        A close that moves (a batch's, to a later trade date: the only move) leaves its entry
        in the earlier list, where :meth:`_fire_closes` skips it (its close_ms is no longer
        that time); a list entry is 8 bytes where a set's was about 30 (issue 13). The entry
        goes when that earlier time fires, before the item can close or be dropped."""
        group = self._closes.get(close_ms)
        if group is None:
            group = self._closes[close_ms] = (close_ms, [])
            # mid "" sorts first: the group fires before any other timer of its time and kind
            self._timers.push((close_ms, _CLOSE, "", ""))
        item.close_ms = group[0]
        group[1].append(item)

    def _fire_closes(self, at_ms: int) -> None:
        """Close the items of one close time, by merchant and key (as one timer each would)."""
        group = self._closes.pop(at_ms, None)
        if group is None:
            return
        merchants = self.merchants
        for item in sorted(group[1], key=_by_merchant_and_key):
            m = merchants.get(item.merchant_id)
            if m is None or m.items.get(item.key) is not item:
                continue
            if item.close_ms != at_ms:
                continue  # its close moved later: this entry is stale
            self._dirty.add(item.merchant_id)
            if item.state == OPEN:
                self._close(item, m)
                if item.state != MISSING:
                    # a memo: once judged, a closed item seldom needs it again (issue 13)
                    item.cached = None

    def _fire(self, timer: tuple) -> None:
        at_ms, kind, mid, key = timer
        if kind == _FORGET:
            self._forget(int(key))
            return
        if kind == _CLOSE:  # closes are grouped by time (_close_timer): mid and key are ""
            self._fire_closes(at_ms)
            return
        if kind == _FILES:
            self._marks.forget(int(key))
            return
        m = self.merchants.get(mid)
        if m is None:
            return
        self._dirty.add(mid)
        if kind == _ORPHAN:
            rec = m.credits.get(key)
            if rec is not None and rec.orphan_ms == at_ms and not rec.judged:
                self._orphan_due(rec, m)
        else:
            self._expire(key, at_ms, m)

    def _files_timer(self, at_ms: int, day: int) -> None:
        self._timer(at_ms, _FILES, "", str(day))

    # -- changes for the live worker -------------------------------------------------------------

    def _created(self, key: tuple, obj: Any) -> None:
        changes = self._changes
        if changes is not None:
            if key not in changes:  # new since the last take: a deletion need not be written
                self._born.add(key)
            changes[key] = obj

    def _changed(self, key: tuple, obj: Any) -> None:
        changes = self._changes
        if changes is not None:
            changes[key] = obj

    def _item_changed(self, m: Merchant, item: Item) -> None:
        changes = self._changes
        if changes is not None:
            changes[(m.merchant_id, "i", item.key)] = item

    def _credit_changed(self, m: Merchant, rec: CreditRec) -> None:
        changes = self._changes
        if changes is not None:
            changes[(m.merchant_id, "c", rec.credit.credit_id)] = rec

    def _aging_changed(self, mid: str, anomaly_id: str, entry: Any) -> None:
        """An open finding entered (entry) or left (None) the aging view: state key ``g``."""
        key = (mid, "g", anomaly_id)
        if entry is None:
            self._changed(key, None)
        else:
            self._created(key, AgingBook.to_plain(entry))

    def _every_key(self) -> dict[tuple, Any]:
        """Every live state key, as take_changes would mark them (once, when tracking starts)."""
        out: dict[tuple, Any] = {}
        for mid, m in self.merchants.items():
            for item in m.items.values():
                out[(mid, "i", item.key)] = item
                if item.is_batch:
                    for n, sale in enumerate(item.sales):
                        out[(mid, "s", sale.auth_id)] = (item, n)
            for rec in m.credits.values():
                out[(mid, "c", rec.credit.credit_id)] = rec
            for d in m.deductions.values():
                out[(mid, "d", d[4])] = d
            for seq, e in m.buffered.items():
                out[(mid, "b", seq)] = e
        for (mid, day), chunks in self._seen_chunks.items():
            for n, chunk in enumerate(chunks):
                out[(mid, "r", f"{day}\x1f{n}")] = chunk
        if self.aging is not None:
            for aid, entry in self.aging.entries.items():
                out[(entry.merchant_id, "g", aid)] = AgingBook.to_plain(entry)
        out.update(self._marks.every_key())
        return out

    def take_changes(self) -> dict[str, object | None]:
        """Every state key changed since the last call: its value as plain JSON-able data, or
        None when it was deleted (see "State for the live worker" above).

        On a reconciler built without ``track_changes=True`` (and not restored with
        :meth:`restore_changes`), the first call starts tracking and returns every live key:
        that one call costs in proportion to the state."""
        changes = self._changes
        if changes is None:
            changes = self._every_key()
        self._changes = {}
        born, self._born = self._born, set()
        out: dict[str, object | None] = {}
        for k, obj in changes.items():
            mid, tag, rest = k
            if obj is None:
                if k in born:
                    continue  # created and deleted between two takes: never written
                value = None
            elif tag == "i":
                value = _item_to_plain(obj, with_sales=not obj.is_batch)
            elif tag == "s":
                item, n = obj
                value = [item.key, n, *_sale_to_plain(item.sales[n])]
            elif tag == "c":
                value = _credit_rec_to_plain(obj)
            elif tag == "d":
                value = list(obj)
            elif tag == "b":
                value = _event_to_plain(obj)
            elif tag == "t":
                value = obj.to_plain()
            else:  # "r"
                value = list(obj)
            out[f"{mid}\x1f{tag}\x1f{rest}"] = value
        return out

    def restore_changes(self, entries: Iterable[tuple[str, object]]) -> None:
        """Rebuild state from the latest value of every live key of :meth:`take_changes`, in
        any order, on a fresh reconciler; re-arms timers and the buffer. Then call
        :meth:`restore_clock` and :meth:`drain`."""
        tags: dict[str, list[tuple[str, str, Any]]] = {t: [] for t in "iscdbrgt"}
        for key, value in entries:
            if value is None:
                continue
            mid, tag, rest = key.split("\x1f", 2)
            tags[tag].append((mid, rest, value))
        policy = self.policy
        merchants = self.merchants

        def merchant(mid: str) -> Merchant:
            m = merchants.get(mid)
            if m is None:
                m = merchants[mid] = Merchant(mid)
            return m

        for mid, _, v in tags["i"]:
            item = _item_from_plain(cast(dict, v), mid, policy, self.evidence)
            merchant(mid).items[item.key] = item
        for mid, auth_id, v in sorted(tags["s"], key=lambda x: (x[0], x[2][0], x[2][1])):
            m = merchant(mid)
            item = m.items[v[0]]
            assert len(item.sales) == v[1], f"batch {v[0]!r} of {mid!r}: a sale is missing"
            item.sales.append(_sale_from_plain(v[2:], self.evidence))
            m.own_batch_of()[auth_id] = item.key
        for mid, _, v in sorted(tags["c"], key=lambda x: cast(dict, x[2])["seq"]):
            rec = _credit_rec_from_plain(cast(dict, v))
            self._restore_credit(merchant(mid), rec)
        for mid, _, v in sorted(tags["d"], key=lambda x: x[2][5]):
            merchant(mid).own_deductions()[v[4]] = tuple(v)
        for mid, seq, v in sorted(tags["b"], key=lambda x: int(x[1])):
            self._restore_buffered(merchant(mid), _event_from_plain(v), int(seq))
        for mid, rest, v in sorted(tags["r"]):
            day_text, _ = rest.split("\x1f")
            day = int(day_text)
            chunks = self._seen_chunks.setdefault((mid, day), [])
            chunk = list(v)
            chunks.append(chunk)
            seen = self._seen.setdefault(mid, {})
            for tagged in chunk:
                seen[tagged] = day
            self._seen_day(mid, day)
        for mid, _, v in sorted(tags["t"], key=lambda x: (x[0], x[1])):
            self._marks.restore(mid, cast(list, v))
        for m in merchants.values():
            self._rearm(m)
        if self.aging is not None:
            for mid, aid, v in tags["g"]:
                self.aging.restore(mid, aid, cast(list, v))
        self._changes = {}  # restoring is not a change; what follows is tracked
        self._born.clear()

    def _restore_credit(self, m: Merchant, rec: CreditRec) -> None:
        m.own_credits()[rec.credit.credit_id] = rec
        for ref in rec.waiting:
            m.own_waiting_refs().setdefault(ref, []).append(rec.credit.credit_id)
        if rec.amount_only:
            m.own_amount_only().append(rec.credit.credit_id)
        if rec.seq > self._seq:
            self._seq = rec.seq

    def _restore_buffered(self, m: Merchant, e: PosEvent | Credit, seq: int) -> None:
        if seq > self._seq:
            self._seq = seq
        if isinstance(e, Credit):
            heapq.heappush(self._buffer, (e.event_time_ms, _CREDIT_RANK, e.credit_id, seq,
                                          m.merchant_id))
        elif isinstance(e, FileComplete):
            heapq.heappush(self._buffer, (e.event_time_ms, _MARKER_RANK, e.marker_id, seq,
                                          m.merchant_id))
        else:
            heapq.heappush(self._buffer, (e.event_time_ms, _RANK.get(e.type, 0), e.event_id,
                                          seq, m.merchant_id))
        m.own_buffered()[seq] = e

    def _rearm(self, m: Merchant) -> None:
        """The timers of a restored merchant's items, credits and deductions."""
        mid = m.merchant_id
        keep = self.policy.keep_settled_ms
        if self._touched is not None:
            self._touched.update(m.items.values())
        for item in m.items.values():
            if item.state == OPEN:
                self._open += 1
                self._close_timer(item, item.close_ms)
                self._marks.track(mid, item)
            if item.expire_ms != FOREVER:
                self._timer(item.expire_ms, _EXPIRE, mid, item.key)
        for rec in m.credits.values():
            if not rec.judged and (not rec.matched or rec.waiting):
                self._timer(rec.orphan_ms, _ORPHAN, mid, rec.credit.credit_id)
            if rec.expire_ms != FOREVER:
                self._timer(rec.expire_ms, _EXPIRE, mid, _CREDIT_TIMER + rec.credit.credit_id)
        for d in m.deductions.values():
            if d[5] > self._seq:
                self._seq = d[5]
            self._timer(d[3] + keep, _EXPIRE, mid, _DEDUCTIONS)

    # -- ids kept for redelivery -----------------------------------------------------------------

    def _remember(self, mid: str, tagged: str, event_ms: int) -> None:
        """Keep an id that recognises a redelivery, ``redelivery_window`` after its event."""
        day = event_ms // DAY_MS
        seen = self._seen.get(mid)
        if seen is None:
            seen = self._seen[mid] = {}
        elif tagged in seen:
            return
        seen[tagged] = day
        chunks = self._seen_chunks.get((mid, day))
        if chunks is None:
            chunks = self._seen_chunks[(mid, day)] = [[]]
            self._seen_day(mid, day)
        elif len(chunks[-1]) >= _CHUNK:
            chunks.append([])
        chunk = chunks[-1]
        chunk.append(tagged)
        if self._changes is not None:
            key = (mid, "r", f"{day}\x1f{len(chunks) - 1}")
            if len(chunk) == 1:
                self._created(key, chunk)
            else:
                self._changes[key] = chunk

    def _seen_day(self, mid: str, day: int) -> None:
        mids = self._seen_days.get(day)
        if mids is None:
            mids = self._seen_days[day] = set()
            # +1 day: the window counts from the end of the event's day, so never short
            self._timer((day + 1) * DAY_MS + self.policy.redelivery_window_ms, _FORGET, "",
                        str(day))
        mids.add(mid)

    def _forget(self, day: int) -> None:
        for mid in self._seen_days.pop(day, ()):
            seen = self._seen.get(mid)
            for n, chunk in enumerate(self._seen_chunks.pop((mid, day), ())):
                self._changed((mid, "r", f"{day}\x1f{n}"), None)
                if seen is not None:
                    for tagged in chunk:
                        seen.pop(tagged, None)
            if seen is not None and not seen:
                del self._seen[mid]

    def _was_seen(self, mid: str, tagged: str) -> bool:
        seen = self._seen.get(mid)
        return seen is not None and tagged in seen

    def _take(self) -> list[Finding]:
        out = self._out
        if not out:
            return []  # never hand out the internal list
        self._out = []
        self.stats.findings += len(out)
        aging = self.aging
        if aging is not None:
            aging.note(out)
            if aging.next_expiry_ms < self.clock_ms:  # a finding of late data, already past
                aging.expire(self.clock_ms)
        return out

    # -- applying events -------------------------------------------------------------------------

    def _release(self, event: PosEvent | Credit | FileComplete, m: Merchant) -> None:
        if isinstance(event, Credit):
            self._on_credit(event, m)
        elif isinstance(event, FileComplete):
            self._on_marker(event, m)
        elif event.type == AUTHORISATION:
            self._on_sale(event, m)
        else:
            self._on_adjustment(event, m)

    def _redelivered(self, source: str, m: Merchant) -> None:
        self.stats.redeliveries += 1
        if self.observer is not None:
            self.observer.on_redelivery(source)
        # a redelivery may be all a merchant has left (its state dropped): keep nothing for it
        if m.is_empty() and not m.waiting_refs and not m.amount_only:
            self.merchants.pop(m.merchant_id, None)

    def _on_sale(self, e: PosEvent, m: Merchant) -> None:
        auth_id = e.auth_id
        mid = m.merchant_id
        if auth_id in m.items or auth_id in m.batch_of or (
                self._seen and self._was_seen(mid, "a" + auth_id)):
            self._redelivered(AUTHORISATIONS, m)
            return
        policy = self.policy
        cycle = policy.cycle_for(e.acquirer, e.merchant_id)
        if cycle.mode == "batch":
            trade_day = policy.trade_day(e.event_time_ms, cycle)
            if e.batch_id is not None:
                subject = e.batch_id
            else:
                subject = f"{e.merchant_id}:{e.acquirer}:{_iso_day(trade_day)}"
            key = _batch_key(subject)
            item = m.items.get(key)
            if item is None:
                item = m.items[key] = (ListBatchItem if self.evidence else ColumnBatchItem)(
                    key, e, cycle)
                self._open += 1
                self._created((mid, "i", key), item)
                if self.observer is not None:
                    self.observer.on_item_opened(e.acquirer, e.currency, e.channel)
            else:
                self._item_changed(m, item)
            m.own_batch_of()[auth_id] = item.key  # the item's string, not a copy per sale
            if self._changes is not None:
                self._created((mid, "s", auth_id), (item, len(item.sales)))
            approved = e.status != DECLINED
            if self.evidence:
                item.sales.append(EvidenceSale(e, self._terminal(e.terminal_id)))
            else:
                item.add_sale(auth_id, e.channel, e.amount_minor, approved, e.event_time_ms)
            item.cached = None
            if e.event_time_ms > item.last_sale_ms:
                item.last_sale_ms = e.event_time_ms
            if item.state == OPEN and trade_day > item.trade_day:
                # A batch is due by its latest sale's trade date: the close can only move later.
                if item.trade_day:
                    # (its entry in the old close's list is skipped when that time fires)
                    if self._due_hook is not None:
                        self._due_moved(item, -1)
                    self._marks.untrack(mid, item)
                item.trade_day = trade_day
                close_ms = policy.batch_deadline_ms(trade_day, cycle) + cycle.grace_ms
                if close_ms != item.close_ms:  # (a later trade date may share a due date)
                    self._close_timer(item, close_ms)
                self._marks.track(mid, item)
                if len(item.sales) > 1 and self._due_hook is not None:
                    self._due_moved(item, 1)
            if self._due_hook is not None and item.state == OPEN and approved:
                self._due_hook(e.acquirer, e.channel, e.currency, item.deadline_ms,
                               e.amount_minor, 1, bool(item.credits), item.trade_day)
        else:
            key = auth_id
            item = m.items[key] = self._new_sale_item(e, cycle)
            self._open += 1
            if self._changes is not None:
                self._created((mid, "i", key), item)
            if self.observer is not None:
                self.observer.on_item_opened(e.acquirer, e.currency, e.channel)
            self._close_timer(item, policy.deadline_ms(e.event_time_ms, cycle) + cycle.grace_ms)
            if self._due_hook is not None and item.approved:
                self._due_hook(e.acquirer, e.channel, e.currency, item.deadline_ms,
                               e.amount_minor, 1, False, policy.trade_day(e.event_time_ms, cycle),
                               e.event_time_ms)
            self._marks.track(mid, item)
        touched = self._touched
        if touched is not None:
            touched.add(item)
        if m.waiting_refs:
            for ref in (auth_id, key):
                waiting = m.waiting_refs.pop(ref, None)
                if waiting:
                    for credit_id in waiting:
                        rec = m.credits.get(credit_id)
                        if rec is not None:
                            rec.waiting.remove(ref)
                            self._attach(rec, item, m)

    def _new_sale_item(self, e: PosEvent, cycle: Cycle) -> SaleItem:
        """A per-sale item, which is its sale."""
        if not self.evidence:
            return SaleItem(e, cycle)
        return EvidenceSaleItem(e, cycle, self._terminal(e.terminal_id))

    def _terminal(self, terminal_id: str) -> str:
        terminal = self._terminals.get(terminal_id)
        if terminal is None:
            terminal = self._terminals[terminal_id] = terminal_id
        return terminal

    def _on_adjustment(self, e: PosEvent, m: Merchant) -> None:
        if self._seen and self._was_seen(m.merchant_id, "e" + e.event_id):
            self._redelivered(AUTHORISATIONS, m)
            return
        item = self._item_of(e.auth_id, m)
        sale = None
        if item is not None:
            for n, s in enumerate(item.sales):
                if s.auth_id == e.auth_id:
                    sale = s
                    break
        if item is None or sale is None:
            # A refund of a sale we never saw (or no longer keep): the acquirer will net it
            # into some credit; remember it as a deduction that can explain a short payment.
            self._note_deduction(m, e)
            return
        adjustments = sale.adjustments
        if adjustments is None:
            adjustments = sale.adjustments = []
        elif any(a[1] == e.event_id for a in adjustments):
            self._redelivered(AUTHORISATIONS, m)
            return
        if item.is_batch:
            self._changed((m.merchant_id, "s", e.auth_id), (item, n))
        else:
            self._item_changed(m, item)
        # After a credit has paid the sale, the adjustment cannot be in that credit: the
        # acquirer nets it into a later one.
        post_payment = bool(item.credits) and item.state != VOID
        adjustments.append((e.type, e.event_id, e.amount_minor, e.event_time_ms, post_payment))
        if post_payment:
            self._note_deduction(m, e)
            return
        if e.type == REVERSAL:
            sale.reversed_minor += e.amount_minor
        else:
            sale.refunded_minor += e.amount_minor
        item.cached = None
        if self._touched is not None:
            self._touched.add(item)

    def _note_deduction(self, m: Merchant, e: PosEvent) -> None:
        if e.event_id in m.deductions:
            self._redelivered(AUTHORISATIONS, m)
            return
        self._seq += 1
        d = (e.type, e.auth_id, e.amount_minor, e.event_time_ms, e.event_id, self._seq)
        m.own_deductions()[e.event_id] = d
        self._created((m.merchant_id, "d", e.event_id), d)
        self._timer(e.event_time_ms + self.policy.keep_settled_ms, _EXPIRE, m.merchant_id,
                    _DEDUCTIONS)

    def _item_of(self, auth_id: str, m: Merchant) -> Item | None:
        item = m.items.get(auth_id)
        if item is None:
            key = m.batch_of.get(auth_id)
            if key is not None:
                item = m.items.get(key)
        return item

    def _on_credit(self, c: Credit, m: Merchant) -> None:
        # Credits are retained as long as the items they pay, then their ids are kept for
        # redelivery_window: this catches every redelivery in that time.
        if c.credit_id in m.credits or (
                self._seen and self._was_seen(m.merchant_id, "c" + c.credit_id)):
            self._redelivered(SETTLEMENTS, m)
            return
        self._seq += 1
        self._marks.on_credit(m.merchant_id, c)  # counted for its settle date's file
        rec = CreditRec(c, c.event_time_ms + self.policy.orphan_after_ms, self._seq)
        m.own_credits()[c.credit_id] = rec
        self._created((m.merchant_id, "c", c.credit_id), rec)
        refs: list[str] | tuple[str, ...] = ()
        auth_ids = c.auth_ids
        if auth_ids:
            refs = auth_ids if len(auth_ids) == 1 else list(dict.fromkeys(auth_ids))
        elif c.batch_id is not None:
            refs = [_batch_key(c.batch_id)]
        if refs:
            for ref in refs:
                item = m.items.get(ref) if ref.startswith("\x1f") else self._item_of(ref, m)
                if item is None:
                    if rec.waiting is _NO_IDS:
                        rec.waiting = []
                    rec.waiting.append(ref)
                    m.own_waiting_refs().setdefault(ref, []).append(c.credit_id)
                elif item.key not in rec.items:
                    self._attach(rec, item, m)
        else:
            item = self._match_amount(c, m)
            if item is not None:
                self._attach(rec, item, m)
            else:
                m.own_amount_only().append(c.credit_id)
                rec.amount_only = True
        if not rec.matched or rec.waiting:
            self._timer(rec.orphan_ms, _ORPHAN, m.merchant_id, c.credit_id)
        elif not rec.judged:
            # The usual credit pays an open item and is judged when it closes; one for items
            # that have all closed already is judged now.
            items = m.items
            keys = rec.items
            if len(keys) == 1:
                item = items.get(keys[0])
                if item is None or item.state != OPEN:
                    self._maybe_judge(rec, m)
            elif all(items[k].state != OPEN for k in keys if k in items):
                self._maybe_judge(rec, m)

    def _attach(self, rec: CreditRec, item: Item, m: Merchant) -> None:
        rec.matched = True
        if rec.items is _NO_IDS:
            rec.items = [item.key]
        else:
            rec.items.append(item.key)
        if item.credits is _NO_CREDITS:
            item.credits = [rec.credit.credit_id]
        else:
            item.credits.append(rec.credit.credit_id)
        self._credit_changed(m, rec)
        self._item_changed(m, item)
        if self._touched is not None:
            self._touched.add(item)  # paid now (or judged below): no longer unsettled
        if item.state != OPEN:
            self._judge_after_close(rec, item, m)
        elif self._paid_hook is not None and len(item.credits) == 1:
            at = rec.credit.event_time_ms
            trade_day = item.trade_day if item.is_batch else self.policy.trade_day(
                item.sales[0].event_time_ms, item.cycle)
            for s in item.sales:
                if s.approved:
                    self._paid_hook(item.acquirer, s.channel, item.currency, item.deadline_ms,
                                    s.amount_minor, at, trade_day,
                                    None if item.is_batch else s.event_time_ms)

    def _due_moved(self, item: Item, sales: int) -> None:
        """Tell the early-warning hook that a batch's earlier sales (all but the one just
        added, its last) moved to its new deadline (sales=-1 off the old one, before the move;
        +1 onto the new one, after it)."""
        hook = self._due_hook
        rows = item.sales
        for n in range(len(rows) - 1):
            s = rows[n]
            if s.approved:
                hook(item.acquirer, s.channel, item.currency, item.deadline_ms, s.amount_minor,
                     sales, bool(item.credits), item.trade_day)

    def _match_amount(self, c: Credit, m: Merchant) -> Item | None:
        """An unreferenced credit pays the unpaid item whose expected net it matches."""
        best = None
        for item in m.items.values():
            if item.payer is not None or item.credits or item.state not in (OPEN, MISSING):
                continue
            if item.acquirer != c.acquirer or item.currency != c.currency:
                continue
            expected = self._expected(item)
            if expected and abs(c.amount_minor - expected) <= self._tolerance(item):
                if best is None or (item.close_ms, item.key) < (best.close_ms, best.key):
                    best = item
        return best

    # -- closing and judging ---------------------------------------------------------------------

    def _close(self, item: Item, m: Merchant, *, at_ms: int | None = None,
               cause: str | None = None, cause_detail: dict[str, Any] | None = None) -> None:
        """Close an open item at deadline + grace; or, with ``at_ms``, early (a completeness
        marker, streams.core.markers): a missing is then raised at ``at_ms`` with ``cause``,
        while ``close_ms`` stays deadline + grace for judging a later credit late or not."""
        expected = self._expected(item)
        self._open -= 1
        self._marks.untrack(m.merchant_id, item)
        self._item_changed(m, item)
        if self._touched is not None:
            self._touched.add(item)
        if not item.credits and m.amount_only and expected:
            for credit_id in list(m.amount_only):
                rec = m.credits.get(credit_id)
                if rec is None or rec.matched:
                    continue
                c = rec.credit
                if (c.acquirer == item.acquirer and c.currency == item.currency
                        and abs(c.amount_minor - expected) <= self._tolerance(item)):
                    m.amount_only.remove(credit_id)
                    rec.amount_only = False
                    rec.matched = True
                    rec.items = [item.key]  # an amount-only credit pays one item
                    item.credits = [credit_id]
                    self._credit_changed(m, rec)
                    break
        if item.credits:
            trigger = CLOSE_PAID
        elif expected == 0:
            trigger = CLOSE_NOTHING_DUE
        else:
            trigger = CLOSE_UNPAID
        item.state = TRANSITIONS[(OPEN, trigger)]
        self._retain(item, m, item.close_ms)
        if self.observer is not None and trigger != CLOSE_NOTHING_DUE:
            self.observer.on_item_closed(item.acquirer, trigger == CLOSE_PAID,
                                         channel=_channel(item))
        if trigger == CLOSE_UNPAID:
            self._emit(FindingKind.MISSING, Status.OPEN, item, (), expected, 0,
                       event_time_ms=item.close_ms if at_ms is None else at_ms, cause=cause,
                       cause_detail=cause_detail)
            return
        if trigger == CLOSE_NOTHING_DUE:
            return
        # Paid before the close: the earliest credit pays, every later one is a duplicate.
        if len(item.credits) == 1:
            recs = [m.credits[item.credits[0]]]
        else:
            recs = sorted((m.credits[cid] for cid in item.credits if cid in m.credits),
                          key=lambda r: (r.credit.event_time_ms, r.credit.credit_id))
        payer = recs[0]
        item.payer = payer.credit.credit_id
        for dup in recs[1:]:
            self._duplicate(item, payer, dup, item.close_ms)
            dup.judged = True
            self._credit_changed(m, dup)
        self._settled(item, payer)
        self._maybe_judge(payer, m)

    def _judge_after_close(self, rec: CreditRec, item: Item, m: Merchant) -> None:
        c = rec.credit
        when = max(c.event_time_ms, item.close_ms)
        state = item.state
        item.state = TRANSITIONS[(state, CREDIT)]
        self._retain(item, m, when, resolved=state == MISSING)
        if state == VOID:
            expected = 0
            why = ("declined_sale" if all(not s.approved for s in item.sales)
                   else "reversal_not_netted")
            self._emit(FindingKind.OVERPAID, Status.OPEN, item, (c.credit_id,), expected,
                       c.amount_minor, event_time_ms=when, cause=why, credit_id=c.credit_id)
            rec.judged = True
            return
        if item.payer is not None:
            # Already paid. (Outside the allowed out-of-orderness an earlier-booked credit can be
            # read after the one judged to pay; the one judged first keeps paying.)
            self._duplicate(item, m.credits.get(item.payer), rec, when)
            rec.judged = True
            return
        expected = self._expected(item)
        item.payer = c.credit_id
        if state == MISSING:
            self._emit(FindingKind.MISSING, Status.RESOLVED, item, (c.credit_id,), expected,
                       c.amount_minor, event_time_ms=c.event_time_ms)
        if c.event_time_ms > item.close_ms:
            cause: str | None = "holiday_delay" if self.policy.holidays_between(
                item.deadline_ms, c.event_time_ms) else None
            self._emit(FindingKind.LATE, Status.OPEN, item, (c.credit_id,), expected,
                       c.amount_minor, event_time_ms=c.event_time_ms, cause=cause,
                       credit_id=c.credit_id)
        self._settled(item, rec)
        self._maybe_judge(rec, m)

    def _settled(self, item: Item, rec: CreditRec) -> None:
        if self.observer is not None:
            c = rec.credit
            # A credit paying several items counts its amount once, with its first item.
            amount = c.amount_minor if rec.items and rec.items[0] == item.key else 0
            self.observer.on_settled(item.acquirer, item.currency,
                                     c.event_time_ms - item.last_sale_ms, amount,
                                     channel=_channel(item))

    def _maybe_judge(self, rec: CreditRec, m: Merchant) -> None:
        """Judge a credit's amount once every item it pays has closed and no ref is pending."""
        if rec.judged or not rec.matched or rec.waiting:
            return
        keys = rec.items
        if len(keys) == 1:  # the common case: one sale or one batch, often paid in full
            item = m.items.get(keys[0])
            if item is None or item.state == OPEN:
                return
            rec.judged = True
            self._credit_changed(m, rec)
            if item.payer == rec.credit.credit_id:
                diff = rec.credit.amount_minor - self._expected(item)
                if abs(diff) > self._tolerance(item):
                    self._judge_amount(rec, [item], m)
            return
        else:
            items = [m.items[k] for k in keys if k in m.items]
            if not items or any(i.state == OPEN for i in items):
                return
        rec.judged = True
        self._credit_changed(m, rec)
        credit_id = rec.credit.credit_id
        paid = [i for i in items if i.payer == credit_id]
        if paid:
            self._judge_amount(rec, paid, m)

    def _judge_amount(self, rec: CreditRec, items: list[Item], m: Merchant) -> None:
        c = rec.credit
        if len(items) == 1:  # the common case
            expected = self._expected(items[0])
            tolerance = self._tolerance(items[0])
        else:
            expected = sum(self._expected(i) for i in items)
            tolerance = sum(self._tolerance(i) for i in items)
        diff = c.amount_minor - expected
        if abs(diff) <= tolerance:
            return
        when = max(c.event_time_ms, max(i.close_ms for i in items))
        kind = FindingKind.UNDERPAID if diff < 0 else FindingKind.OVERPAID
        cause, detail = self._probable_cause(c, items, diff, tolerance, m)
        subject_item = items[0] if len(items) == 1 else None
        self._emit(kind, Status.OPEN, subject_item or items[0], (c.credit_id,), expected,
                   c.amount_minor, event_time_ms=when, cause=cause, credit_id=c.credit_id,
                   subject=None if subject_item else c.credit_id, items=items,
                   cause_detail=detail)

    def _duplicate(self, item: Item, payer: CreditRec | None, dup: CreditRec,
                   when: int) -> None:
        c = dup.credit
        credit_ids = ((payer.credit.credit_id,) if payer is not None else ()) + (c.credit_id,)
        self._emit(FindingKind.DUPLICATE, Status.OPEN, item, credit_ids, self._expected(item),
                   c.amount_minor, event_time_ms=max(when, c.event_time_ms),
                   cause="duplicate_credit", credit_id=c.credit_id)

    def _orphan_due(self, rec: CreditRec, m: Merchant) -> None:
        self._credit_changed(m, rec)
        if rec.matched:
            # Some refs never appeared: judge with the items that did.
            self._stop_waiting(rec, m)
            self._maybe_judge(rec, m)
            return
        c = rec.credit
        self._stop_waiting(rec, m)
        if rec.amount_only:
            m.amount_only.remove(c.credit_id)
            rec.amount_only = False
        rec.judged = True
        self._retain_credit(rec, m, rec.orphan_ms)
        refs = c.auth_ids or ((c.batch_id,) if c.batch_id is not None else ())
        # The item it pays was dropped with its missing still open (missing_horizon): say so.
        keys = c.auth_ids or ((_batch_key(c.batch_id),) if c.batch_id is not None else ())
        cause = (MISSING_HORIZON_PASSED
                 if any(self._was_seen(m.merchant_id, "x" + k) for k in keys) else None)
        self._out.append(self._finding(
            FindingKind.ORPHAN, Status.OPEN, m.merchant_id, c.acquirer, c.credit_id, tuple(refs),
            (c.credit_id,), 0, c.amount_minor, c.currency, rec.orphan_ms, rec.orphan_ms,
            cause, c.credit_id,
            {"credits": [_credit_evidence(c)], "sales": []} if self.evidence else None))

    def _stop_waiting(self, rec: CreditRec, m: Merchant) -> None:
        credit_id = rec.credit.credit_id
        for ref in rec.waiting:
            waiting = m.waiting_refs.get(ref)
            if waiting and credit_id in waiting:
                waiting.remove(credit_id)
                if not waiting:
                    del m.waiting_refs[ref]
        rec.waiting = _NO_IDS

    # -- retention -------------------------------------------------------------------------------

    def _retain(self, item: Item, m: Merchant, last_activity_ms: int,
                resolved: bool = False) -> None:
        """Keep a closed item ``keep_settled`` after its last activity; one whose missing is
        open until ``missing_horizon`` after its close (or until a credit resolves it)."""
        if item.state == MISSING:
            expire = item.close_ms + self.policy.missing_horizon_ms
        else:
            expire = last_activity_ms + self.policy.keep_settled_ms
        old = item.expire_ms
        if old == FOREVER or expire > old or (resolved and expire != old):
            if old != FOREVER:
                self._timers.cancel((old, _EXPIRE, m.merchant_id, item.key))
            item.expire_ms = expire
            self._timer(expire, _EXPIRE, m.merchant_id, item.key)
            self._item_changed(m, item)

    def _retain_credit(self, rec: CreditRec, m: Merchant, last_activity_ms: int) -> None:
        expire = last_activity_ms + self.policy.keep_settled_ms
        old = rec.expire_ms
        if old == FOREVER or expire > old:
            key = _CREDIT_TIMER + rec.credit.credit_id
            if old != FOREVER:
                self._timers.cancel((old, _EXPIRE, m.merchant_id, key))
            rec.expire_ms = expire
            self._timer(expire, _EXPIRE, m.merchant_id, key)
            self._credit_changed(m, rec)

    def _drop_credit(self, rec: CreditRec, m: Merchant) -> None:
        c = rec.credit
        del m.credits[c.credit_id]
        self._changed((m.merchant_id, "c", c.credit_id), None)
        self._remember(m.merchant_id, "c" + c.credit_id, c.event_time_ms)

    def _expire(self, key: str, at_ms: int, m: Merchant) -> None:
        mid = m.merchant_id
        if key == _DEDUCTIONS:
            horizon = at_ms - self.policy.keep_settled_ms
            for d in [d for d in m.deductions.values() if d[3] <= horizon]:
                del m.deductions[d[4]]
                self._changed((mid, "d", d[4]), None)
                self._remember(mid, "e" + d[4], d[3])
        elif key.startswith(_CREDIT_TIMER):
            credit_id = key[len(_CREDIT_TIMER):]
            rec = m.credits.get(credit_id)
            if rec is not None and rec.expire_ms == at_ms:
                self._drop_credit(rec, m)
        else:
            item = m.items.get(key)
            if item is not None and item.expire_ms == at_ms and item.state != OPEN:
                self._drop_item(item, m, at_ms)
        if m.is_empty() and not m.waiting_refs and not m.amount_only:
            del self.merchants[mid]

    def _drop_item(self, item: Item, m: Merchant, at_ms: int) -> None:
        mid = m.merchant_id
        del m.items[item.key]
        if self._touched is not None:
            self._touched.add(item)
        changed = self._changed
        changed((mid, "i", item.key), None)
        remember = self._remember
        if item.state == MISSING:
            # Open state no more: counted, and remembered so that a credit for it says why
            # it is an orphan.
            self.stats.missing_expired += 1
            hook = getattr(self.observer, "on_missing_expired", None)
            if hook is not None:
                hook(item.acquirer, item.currency, self._expected(item))
            remember(mid, "x" + item.key, at_ms)
            if item.is_batch:
                for s in item.sales:
                    remember(mid, "x" + s.auth_id, at_ms)
        if type(item) is ColumnBatchItem:  # its columns read directly (no SaleRow views)
            batch_of = m.batch_of
            adjusted = item.adjusted
            for n, (auth_id, sale_ms) in enumerate(zip(item.auth_ids, item.times)):
                batch_of.pop(auth_id, None)
                changed((mid, "s", auth_id), None)
                remember(mid, "a" + auth_id, sale_ms)
                extra = adjusted.get(n) if adjusted is not None else None
                if extra is not None:
                    for a in extra[2] or ():
                        remember(mid, "e" + a[1], a[3])
        else:
            for s in item.sales:
                if item.is_batch:
                    m.batch_of.pop(s.auth_id, None)
                    changed((mid, "s", s.auth_id), None)
                remember(mid, "a" + s.auth_id, s.event_time_ms)
                for a in s.adjustments or ():
                    remember(mid, "e" + a[1], a[3])
        # A credit is retained as long as the items it pays (an orphan has a timer).
        for credit_id in item.credits:
            rec = m.credits.get(credit_id)
            if rec is not None and not any(k in m.items for k in rec.items):
                self._drop_credit(rec, m)

    # -- amounts ---------------------------------------------------------------------------------

    def _expected(self, item: Item) -> int:
        """The item's expected net credit: sales after reversals, less fees, less refunds."""
        cached = item.cached
        if cached is None:
            fee = self.policy.fee_minor
            sales = item.sales
            if len(sales) == 1:  # a per-sale item
                s = sales[0]
                captured = s.amount_minor - s.reversed_minor
                if not s.approved:
                    cached = item.cached = (-s.refunded_minor, 0)
                elif captured > 0:
                    cached = item.cached = (
                        captured - fee(s.channel, captured) - s.refunded_minor, 1)
                else:
                    cached = item.cached = (-s.refunded_minor, 1)
                return cached[0]
            total = approved = 0
            if type(item) is ColumnBatchItem:
                cached = item.cached = _column_expected(item, fee)
                return cached[0]
            for s in sales:
                if s.approved:
                    approved += 1
                    captured = s.amount_minor - s.reversed_minor
                    if captured > 0:
                        total += captured - fee(s.channel, captured)
                total -= s.refunded_minor
            cached = item.cached = (total, approved)
        return cached[0]

    def _tolerance(self, item: Item) -> int:
        """absolute_minor per sale in the credit, plus relative_bps of the expected net."""
        expected = self._expected(item)
        cached = item.cached
        assert cached is not None  # filled by _expected
        return self.policy.tolerance.allowed_minor(expected, max(cached[1], 1))

    def _probable_cause(self, c: Credit, items: list[Item], diff: int, tolerance: int,
                        m: Merchant) -> tuple[str, dict[str, Any]]:
        """Name the likeliest reason a credit differs from what was expected, with its detail.

        The scoring is streams.core.causes.explain (fee rates per channel, returns netted or
        not, a missing or declined sale, a rounding rule); this passes it plain data, with the
        merchant's other short credits still retained as more equations on the rates. One
        netted refund or reversal explains one short credit, so the one it names is consumed.
        """
        def plain(item_list: list[Item]) -> list[causes.Sale]:
            return [causes.Sale(s.auth_id, s.channel, s.amount_minor, s.approved,
                                s.reversed_minor, s.refunded_minor)
                    for i in item_list for s in i.sales]

        sales = plain(items)
        # Other credits of this merchant and acquirer still retained that were short too: under
        # the same wrong fee table each is one more equation on the rates (the latest eight, by
        # credit time: the same whatever order the state was restored in). Only a credit of
        # several channels needs them: one channel's rate one credit pins by itself.
        others = []
        several = len({s.channel for s in sales}) > 1
        for other in m.items.values() if several else ():
            rec = m.credits.get(other.payer) if other.payer is not None else None
            if (rec is None or other in items or other.acquirer != c.acquirer
                    or rec.credit.credit_id == c.credit_id or len(rec.items) != 1
                    or self._expected(other) - rec.credit.amount_minor
                    <= self._tolerance(other)):
                continue
            osales = plain([other])
            others.append((rec.credit.event_time_ms, rec.credit.credit_id, causes.Equation(
                osales, causes.fee_taken(osales, rec.credit.amount_minor, rec.credit.fee_minor),
                self._tolerance(other))))
        others = sorted(others, key=lambda o: o[:2])[-8:]
        terms = {ch: causes.Terms(rule.bps, rule.cap_minor)
                 for ch in {s.channel for s in sales}.union(
                     *({s.channel for s in o[2].sales} for o in others))
                 for rule in (self.policy.fee_rule(ch),)}
        deductions = ([causes.Deduction(d[0], d[1], d[2], d[4]) for d in m.deductions.values()]
                      if diff < 0 else [])
        cause, detail = causes.explain(
            sales, terms, causes.CreditFacts(c.amount_minor, c.amount_minor - diff, tolerance,
                                             c.fee_minor),
            deductions=deductions, candidate_bps=self._fee_bps,
            others=[o[2] for o in others])
        netted = detail.get("netted") or detail.get("with", {}).get("netted")
        if netted is not None:
            d = m.deductions.pop(netted["event_id"], None)
            if d is not None:
                self._changed((m.merchant_id, "d", d[4]), None)
                self._remember(m.merchant_id, "e" + d[4], d[3])
        return cause, detail

    # -- findings --------------------------------------------------------------------------------

    def _emit(self, kind: FindingKind, status: Status, item: Item, credit_ids: tuple[str, ...],
              expected: int, received: int, *, event_time_ms: int, cause: str | None = None,
              credit_id: str = "", subject: str | None = None,
              items: list[Item] | None = None,
              cause_detail: dict[str, Any] | None = None) -> None:
        items = items or [item]
        auth_ids = tuple(s.auth_id for i in items for s in i.sales)
        subj = subject or item.subject
        self._out.append(self._finding(
            kind, status, item.merchant_id, item.acquirer, subj, auth_ids, credit_ids, expected,
            received, item.currency, item.deadline_ms, event_time_ms, cause, credit_id,
            self._evidence_of(item, items, credit_ids, cause_detail) if self.evidence
            else None))

    def _evidence_of(self, item: Item, items: list[Item], credit_ids: tuple[str, ...],
                     cause_detail: dict[str, Any] | None) -> dict[str, Any]:
        """The sales, credits and cycle behind a finding (the audit side's evidence files)."""
        evidence = {
            "sales": [_sale_evidence(s, i, self.policy) for i in items for s in i.sales],
            "credits": [_credit_evidence(self.merchants[item.merchant_id].credits[cid].credit)
                        for cid in credit_ids
                        if cid in self.merchants[item.merchant_id].credits],
            "cycle": {"acquirer": item.cycle.acquirer, "merchant_id": item.cycle.merchant_id,
                      "mode": item.cycle.mode, "index": item.cycle.index},
            "close_ms": item.close_ms,
        }
        if cause_detail is not None:
            evidence["cause_detail"] = cause_detail
        return evidence

    def _finding(self, kind: FindingKind, status: Status, merchant_id: str, acquirer: str,
                 subject: str, auth_ids: tuple[str, ...], credit_ids: tuple[str, ...],
                 expected: int, received: int, currency: str, deadline_ms: int | None,
                 event_time_ms: int, cause: str | None, credit_id: str,
                 evidence: dict | None) -> Finding:
        # A missing finding's id must not change when it is resolved: it has no credit.
        id_credit = "" if kind == FindingKind.MISSING else credit_id
        return Finding(
            anomaly_id=anomaly_id(kind, merchant_id, subject, id_credit),
            kind=kind, status=status, merchant_id=merchant_id, acquirer=acquirer,
            subject=subject, auth_ids=auth_ids, credit_ids=credit_ids,
            expected_minor=expected, received_minor=received,
            difference_minor=received - expected, currency=currency, deadline_ms=deadline_ms,
            event_time_ms=event_time_ms, detected_at_ms=self.clock_ms, probable_cause=cause,
            evidence=evidence)

    # -- views for metrics -----------------------------------------------------------------------

    def open_items(self) -> Iterator[tuple[str, str, int, int, bool]]:
        """(acquirer, currency, first_sale_ms, expected_minor, is_missing) per unpaid item."""
        for m in self.merchants.values():
            for item in m.items.values():
                if item.state == OPEN and item.payer is None and not item.credits:
                    yield (item.acquirer, item.currency,
                           min(s.event_time_ms for s in item.sales), self._expected(item), False)
                elif item.state == MISSING:
                    yield (item.acquirer, item.currency,
                           min(s.event_time_ms for s in item.sales), self._expected(item), True)

    def open_summary(self) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
        """The figures of :meth:`open_items`, summed: ``(acquirer, currency, minute of the
        first sale) -> (unsettled items, their expected net, missing items, their expected
        net)``, where unsettled includes missing, as in open_items.

        Kept as counters: each call updates them from the items touched since the last one,
        so its cost follows the changes, not the state (the first call reads every item once).
        It may run on another thread than the one feeding the reconciler: a touch that races
        a call is counted at the next call."""
        touched = self._touched
        if touched is None:
            touched = {i for m in self.merchants.values() for i in m.items.values()}
        self._touched = set()
        late, self._late_touched = self._late_touched, touched
        contrib, summary = self._contrib, self._summary
        for item in list(touched) + list(late):
            old = contrib.pop(item, None)
            if old is not None:
                self._add_summary(summary, old, -1)
            new = self._contribution(item)
            if new is not None:
                row = summary.get(new[0])
                if row is not None:  # share the row's key: one tuple per row, not per item
                    new = (row[4], new[1], new[2])
                contrib[item] = new
                self._add_summary(summary, new, 1)
        return {k: (v[0], v[1], v[2], v[3]) for k, v in summary.items() if v[0]}

    @staticmethod
    def _add_summary(summary: dict, c: tuple, sign: int) -> None:
        key, expected, missing = c
        row = summary.get(key)
        if row is None:
            row = summary[key] = [0, 0, 0, 0, key]
        row[0] += sign
        row[1] += sign * expected
        if missing:
            row[2] += sign
            row[3] += sign * expected
        if not row[0]:
            del summary[key]

    def _contribution(self, item: Item) -> tuple[tuple[str, str, int], int, bool] | None:
        m = self.merchants.get(item.merchant_id)
        if m is None or m.items.get(item.key) is not item:
            return None  # dropped
        if item.state == OPEN and item.payer is None and not item.credits:
            missing = False
        elif item.state == MISSING:
            missing = True
        else:
            return None
        first = min(s.event_time_ms for s in item.sales)
        return ((item.acquirer, item.currency, first // 60_000), self._expected(item), missing)

    def aging_summary(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """Open findings by (acquirer, currency, SLA tier) -> (count, amount at stake), aged to
        the clock (streams.core.aging; empty unless built with ``aging=True``)."""
        if self.aging is None or self.clock_ms == NEVER:
            return {}
        return self.aging.summary(self.clock_ms)

    def open_item_count(self) -> int:
        """Items in state open (a counter, not a scan)."""
        return self._open

    # -- snapshots -------------------------------------------------------------------------------

    def snapshot_clock(self) -> dict[str, int]:
        return {"max_auth_ms": self.max_auth_ms, "max_credit_ms": self.max_credit_ms,
                "floor_ms": self.floor_ms, "clock_ms": self.clock_ms}

    def restore_clock(self, snap: dict[str, int]) -> None:
        self.max_auth_ms = max(self.max_auth_ms, snap["max_auth_ms"])
        self.max_credit_ms = max(self.max_credit_ms, snap["max_credit_ms"])
        self.floor_ms = max(self.floor_ms, snap["floor_ms"])
        self.clock_ms = max(self.clock_ms, snap["clock_ms"])

    def snapshot_merchant(self, merchant_id: str) -> dict[str, Any] | None:
        """The merchant's state as plain JSON-able data, or None once it holds nothing.

        The older whole-merchant form; :meth:`take_changes` writes per change. Ids kept for
        redelivery after their items are dropped are not in it (they are in take_changes)."""
        m = self.merchants.get(merchant_id)
        if m is None or (m.is_empty() and not m.waiting_refs and not m.amount_only):
            return None
        return {
            "items": [_item_to_plain(i) for i in m.items.values()],
            "credits": [_credit_rec_to_plain(r)
                        for r in sorted(m.credits.values(), key=lambda r: r.seq)],
            "amount_only": list(m.amount_only),
            "deductions": [list(d) for d in m.deductions.values()],
            "buffered": [_event_to_plain(e) for _, e in sorted(m.buffered.items())],
        }

    def restore_merchant(self, merchant_id: str, snap: dict[str, Any]) -> None:
        """Rebuild a merchant from :meth:`snapshot_merchant`, re-arming its timers and buffer."""
        m = self.merchants[merchant_id] = Merchant(merchant_id)
        policy = self.policy
        for plain in snap["items"]:
            item = _item_from_plain(plain, merchant_id, policy, self.evidence)
            m.items[item.key] = item
            if item.is_batch:
                for s in item.sales:
                    m.own_batch_of()[s.auth_id] = item.key
        for plain in snap["credits"]:
            rec = _credit_rec_from_plain(plain)
            rec.amount_only = False  # the list below says which
            self._restore_credit(m, rec)
        m.amount_only = list(snap["amount_only"])
        for credit_id in m.amount_only:
            if credit_id in m.credits:
                m.credits[credit_id].amount_only = True
        for d in snap["deductions"]:
            if len(d) < 6:  # written before deductions carried their arrival order
                self._seq += 1
                d = [*d[:5], self._seq]
            m.own_deductions()[d[4]] = tuple(d)
        for plain in snap["buffered"]:
            self._seq += 1
            self._restore_buffered(m, _event_from_plain(plain), self._seq)
        self._rearm(m)

    # -- completeness markers (contract v1.1; the rules are in streams.core.markers) ------------

    def _on_marker(self, mk: FileComplete, m: Merchant) -> None:
        self._marks.on_marker(mk, m)
        if m.is_empty() and not m.waiting_refs and not m.amount_only:
            self.merchants.pop(m.merchant_id, None)

    def files_overdue(self) -> dict[tuple[str, int], int]:
        """(acquirer, settle date ordinal) -> merchants whose settlement file was expected by
        the current clock and has not come (acquirers with [[settlement_files]] only)."""
        return self._marks.overdue(self.clock_ms)

    def drain(self) -> list[Finding]:
        """Run everything the current clock allows (after restores)."""
        self._run()
        return self._take()


# ---------------------------------------------------------------------------------------------
# Plain-data conversions (snapshots and evidence).


def _by_merchant_and_key(item: Item) -> tuple[str, str]:
    return (item.merchant_id, item.key)


def _channel(item: Item) -> str:
    """The item's sale channel for metrics: a batch of several channels is "mixed"."""
    first = item.sales[0].channel
    for s in item.sales:
        if s.channel != first:
            return "mixed"
    return first


def _iso_day(ordinal: int) -> str:
    from datetime import date
    return date.fromordinal(ordinal).isoformat()


def _sale_evidence(s: Sale, item: Item, policy: Policy) -> dict[str, Any]:
    captured = s.captured_minor()
    return {
        "auth_id": s.auth_id, "terminal_id": s.terminal_id, "channel": s.channel,
        "amount_minor": s.amount_minor, "status": "approved" if s.approved else "declined",
        "event_time_ms": s.event_time_ms, "reversed_minor": s.reversed_minor,
        "refunded_minor": s.refunded_minor, "pan_masked": s.pan_masked,
        "stan": s.refs[0] if s.refs else None, "rrn": s.refs[1] if s.refs else None,
        "auth_code": s.refs[2] if s.refs else None,
        "fee_bps": policy.fee_bps(s.channel),
        "fee_minor": policy.fee_minor(s.channel, captured) if captured else 0,
        "adjustments": [list(a) for a in (s.adjustments or ())],
    }


def _credit_evidence(c: Credit) -> dict[str, Any]:
    return {"credit_id": c.credit_id, "amount_minor": c.amount_minor, "currency": c.currency,
            "event_time_ms": c.event_time_ms, "auth_ids": list(c.auth_ids),
            "batch_id": c.batch_id, "fee_minor": c.fee_minor}


_SALE_FIELDS = ("auth_id", "terminal_id", "channel", "amount_minor", "approved",
                "event_time_ms", "reversed_minor", "refunded_minor", "pan_masked", "adjustments",
                "refs")
_EVIDENCE_FIELDS = frozenset(EvidenceSale.__slots__)


def _item_to_plain(i: Item, with_sales: bool = True) -> dict[str, Any]:
    """An item as plain data; a batch's sales are their own keys in take_changes."""
    return {
        "key": i.key, "subject": i.subject, "acquirer": i.acquirer, "currency": i.currency,
        "cycle": i.cycle.index, "is_batch": i.is_batch, "trade_day": i.trade_day,
        "deadline_ms": i.deadline_ms, "close_ms": i.close_ms, "credits": list(i.credits),
        "state": i.state, "payer": i.payer, "expire_ms": i.expire_ms,
        "last_sale_ms": i.last_sale_ms,
        "sales": [_sale_to_plain(s) for s in i.sales] if with_sales else [],
    }


def _sale_to_plain(s: Sale) -> list[Any]:
    values = [getattr(s, f) for f in _SALE_FIELDS]
    if s.adjustments is not None:
        values[9] = [list(a) for a in s.adjustments]
    if s.refs is not None:
        values[10] = list(s.refs)
    return values


def _sale_from_plain(values: list[Any], evidence: bool = True) -> Sale:
    """A sale from _sale_to_plain; without evidence, its evidence-only fields are not kept."""
    if not evidence:
        s = Sale.__new__(Sale)
        for f, v in zip(_SALE_FIELDS, values):
            if f not in _EVIDENCE_FIELDS:
                setattr(s, f, v)
    else:
        s = EvidenceSale.__new__(EvidenceSale)
        s.refs = None  # snapshots written before refs were kept have no such value
        for f, v in zip(_SALE_FIELDS, values):
            setattr(s, f, v)
        if s.refs is not None:
            s.refs = (s.refs[0], s.refs[1], s.refs[2])
    if s.adjustments is not None:
        s.adjustments = [tuple(a) for a in s.adjustments]
    return s


def _item_from_plain(p: dict[str, Any], merchant_id: str, policy: Policy,
                     evidence: bool = True) -> Item:
    item: Item
    if p["is_batch"]:
        batch: BatchItem
        if evidence:
            batch = item = ListBatchItem.__new__(ListBatchItem)
            batch.sales = [_sale_from_plain(values, evidence) for values in p["sales"]]
        else:
            batch = item = ColumnBatchItem.__new__(ColumnBatchItem)
            ColumnBatchItem._empty(batch)
            for values in p["sales"]:
                batch.sales.append(_sale_from_plain(values, evidence))
        batch.trade_day, batch.last_sale_ms = p["trade_day"], p["last_sale_ms"]
    else:
        # a per-sale item is its sale: the sale's fields onto the item
        cls = EvidenceSaleItem if evidence else SaleItem
        item = cls.__new__(cls)
        if evidence:
            item.refs = None  # snapshots written before refs were kept have no such value
        (values,) = p["sales"]
        for f, v in zip(_SALE_FIELDS, values):
            if f != "auth_id" and (evidence or f not in _EVIDENCE_FIELDS):
                setattr(item, f, v)
        if evidence and item.refs is not None:
            item.refs = (item.refs[0], item.refs[1], item.refs[2])
        if item.adjustments is not None:
            item.adjustments = [tuple(a) for a in item.adjustments]
    item.key = p["key"]
    item.merchant_id, item.acquirer, item.currency = merchant_id, p["acquirer"], p["currency"]
    item.cycle = policy.cycles[p["cycle"]]
    item.close_ms = p["close_ms"]
    item.credits = list(p["credits"]) if p["credits"] else _NO_CREDITS
    item.state, item.payer = p["state"], p["payer"]
    item.expire_ms = p["expire_ms"]
    item.cached = None
    return item


def _credit_rec_to_plain(r: CreditRec) -> dict[str, Any]:
    return {"credit": _event_to_plain(r.credit), "items": list(r.items),
            "waiting": list(r.waiting), "judged": r.judged, "orphan_ms": r.orphan_ms,
            "expire_ms": r.expire_ms, "matched": r.matched, "seq": r.seq,
            "amount_only": r.amount_only}


def _credit_rec_from_plain(p: dict[str, Any]) -> CreditRec:
    credit = _event_from_plain(p["credit"])
    assert type(credit) is Credit
    rec = CreditRec(credit, p["orphan_ms"], p.get("seq", 0))
    rec.items = list(p["items"]) if p["items"] else _NO_IDS
    rec.waiting = list(p["waiting"]) if p["waiting"] else _NO_IDS
    rec.judged, rec.expire_ms, rec.matched = p["judged"], p["expire_ms"], p["matched"]
    rec.amount_only = p.get("amount_only", False)
    return rec


_POS_FIELDS = PosEvent._fields
_CREDIT_FIELDS = Credit._fields


def _event_to_plain(e: PosEvent | Credit | FileComplete) -> list[Any]:
    if type(e) is FileComplete:
        return ["k", *e]
    if type(e) is Credit:
        return ["c"] + [list(v) if f == "auth_ids" else v
                        for f, v in ((f, getattr(e, f)) for f in _CREDIT_FIELDS)]
    return ["p"] + [getattr(e, f) for f in _POS_FIELDS]


def _event_from_plain(p: list[Any]) -> PosEvent | Credit | FileComplete:
    if p[0] == "k":
        return FileComplete(*p[1:])
    if p[0] == "c":
        values = dict(zip(_CREDIT_FIELDS, p[1:]))
        values["auth_ids"] = tuple(values["auth_ids"])
        return Credit(**values)
    return PosEvent(*p[1:])


def feed(reconciler: Reconciler, events: Iterable[PosEvent | Credit],
         until_ms: int | None = None) -> list[Finding]:
    """Run a whole input through a reconciler: every event, then the final clock."""
    out: list[Finding] = []
    last = NEVER
    for e in events:
        out += reconciler.on_event(e)
        if e.event_time_ms > last:
            last = e.event_time_ms
    out += reconciler.advance_to(until_ms if until_ms is not None else last)
    return out
