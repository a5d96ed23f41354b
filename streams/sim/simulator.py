"""Traffic simulator: realistic POS authorisations, reversals, refunds and settlement credits.

`Simulation(cfg, policy).events()` yields core events in *emission order*: event time, shuffled
by at most `cfg.jitter_ms` (keep it under the policy's lateness, as real feeds are). It follows
the policy: a merchant's acquirer picks the cycle, so both settlement modes, every configured
fee channel and the holiday calendar are exercised. Faults are injected per settlement item at
the given rates, and every one is written down in `Simulation.injected` (the truth a test or a
demo can compare findings with).

Fault kinds: late, missing, duplicate, underpaid (a wrong fee rate), fee_table (a wrong fee
table at the acquirer: every channel charged its agreed rate + `fee_table_bps`, 30), overpaid, orphan,
refund_netted (a refund of a paid sale netted into the merchant's next credit), redelivery (an
event sent twice: counted, never a finding).

Completeness markers (contract v1.1, `SimConfig.markers`, off by default so that existing
streams are unchanged): one settlement_file_complete per merchant per settle date D on which it
has an item due or a credit booked, at the end of the acquirer's settlement run (10 minutes
after a T+N cycle's due time on D; 00:15 after D for a duration cycle), counting the credits
booked on D up to then. Their faults: marker_late (1-4 h late), marker_missing (never sent),
marker_short (a truncated feed: a credit is lost, the marker still counts it). Bad records for the dead-letter path come from
`bad_records()`: raw bytes with the reason each must be rejected for.

The module is pure but for `simulate_command`, which writes JSON lines or hands the stream to
the Kafka producer (streams.sim.producer).
"""
from __future__ import annotations

import heapq
import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from streams.core.events import (
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    Credit,
    FileComplete,
    PosEvent,
)
from streams.core.policy import BUSINESS, FeeRule, Policy

FAULT_KINDS = ("late", "missing", "duplicate", "underpaid", "fee_table", "overpaid", "orphan",
               "refund_netted", "redelivery", "marker_late", "marker_missing", "marker_short")

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


@dataclass
class SimConfig:
    start_ms: int
    end_ms: int
    merchants: int = 100
    sales_per_second: float = 2.0  # in event time, over all merchants
    faults: dict[str, float] = field(default_factory=dict)
    seed: int = 1
    jitter_ms: int = 0
    declined_rate: float = 0.03
    void_rate: float = 0.01
    acquirers: tuple[str, ...] = ()  # default: the policy's named acquirers plus "acq-std"
    emit_pan_masked: bool = True
    fee_table_bps: int = 30  # fault fee_table: what the wrong table adds to every agreed rate
    # An acquirer slowing down (the early warning's test): (acquirer, from_ms, delay_ms) books
    # each of that acquirer's credits due at or after from_ms delay_ms later than it would be.
    slowdowns: tuple[tuple[str, int, int], ...] = ()
    markers: bool = False  # emit settlement_file_complete markers (contract v1.1)


@dataclass(frozen=True)
class Injected:
    kind: str
    merchant_id: str
    subject: str  # auth_id or batch_id the fault is about (credit_id for an orphan)
    acquirer: str


def parse_faults(text: str) -> dict[str, float]:
    """'late=1%,missing=0.5%' -> {'late': 0.01, 'missing': 0.005}. 'ACQUIRER:KIND=rate' sets
    one acquirer's rate of a fault ('acq-d0:missing=20%' -> {'acq-d0:missing': 0.2}): a bad
    acquirer next to normal ones."""
    faults: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        acquirer, _, name = key.rpartition(":")
        if name not in FAULT_KINDS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_KINDS)}")
        value = value.strip()
        rate = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        if not 0 <= rate <= 1:
            raise ValueError(f"fault {name}: rate {value} is not between 0 and 100%")
        faults[f"{acquirer.strip()}:{name}" if acquirer.strip() else name] = rate
    return faults


def parse_slowdown(text: str) -> tuple[str, int, int]:
    """'acq-t1@2026-03-09T00:00:00Z+3h' -> ('acq-t1', from_ms, 10_800_000): from that instant
    (credits due then or later) the acquirer books its credits 3 hours later than usual."""
    from streams.core.policy import parse_duration_ms
    from streams.wire.times import parse_time_ms
    m = re.fullmatch(r"\s*([^@\s]+)@(\S+Z)\+(\w+)\s*", text or "")
    if not m:
        raise ValueError(f"bad slowdown {text!r}: expected ACQUIRER@RFC3339Z+DURATION, "
                         "like acq-t1@2026-03-09T00:00:00Z+3h")
    return m.group(1), parse_time_ms(m.group(2)), parse_duration_ms(m.group(3), "slowdown")


def parse_rate(text: str) -> float:
    """'500/s', '30/m', '1000/h' or a plain number per second."""
    m = re.fullmatch(r"\s*([\d.]+)\s*(?:/\s*([smh]))?\s*", text)
    if not m:
        raise ValueError(f"bad rate {text!r}: expected like 500/s")
    per = {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) / per


class _Merchant:
    __slots__ = ("id", "acquirer", "cycle", "terminals", "channels", "last_credit_due")

    def __init__(self, mid, acquirer, cycle, terminals, channels):
        self.id, self.acquirer, self.cycle = mid, acquirer, cycle
        self.terminals, self.channels = terminals, channels


class Simulation:
    def __init__(self, cfg: SimConfig, policy: Policy) -> None:
        self.cfg = cfg
        self.policy = policy
        self.injected: list[Injected] = []
        self.counts: dict[str, int] = {}
        self._rng = random.Random(cfg.seed)
        self._ids = itertools.count(1)
        # refunds waiting to be netted into the merchant's next credit (fault refund_netted):
        # merchant -> [(refund time, amount)]
        self._netting: dict[str, list[tuple[int, int]]] = {}
        # markers draw from their own generator, so that the rest of the stream is the same
        # with markers on or off
        self._mrng = random.Random(cfg.seed * 7919 + 17)

    # -- set-up ------------------------------------------------------------------------------

    def _merchants(self) -> list[_Merchant]:
        rng = self._rng
        acquirers = self.cfg.acquirers or tuple(
            [c.acquirer for c in self.policy.cycles if not any(ch in c.acquirer for ch in "*?[")]
            + ["acq-std"])
        channels = [ch for ch in self.policy.fees if ch != "default"] or ["credit"]
        out = []
        for n in range(self.cfg.merchants):
            acquirer = acquirers[n % len(acquirers)]
            mid = f"M{n:06d}"
            cycle = self.policy.cycle_for(acquirer, mid)
            terminals = [f"T{n:06d}{k}" for k in range(1 + rng.randrange(3))]
            weights = [rng.random() for _ in channels]
            out.append(_Merchant(mid, acquirer, cycle, terminals, (channels, weights)))
        return out

    def _fault(self, kind: str, acquirer: str | None = None,
               rng: random.Random | None = None) -> bool:
        faults = self.cfg.faults
        rate = faults.get(kind, 0.0)
        if acquirer is not None:  # "acq-d0:missing=20%" overrides the rate for one acquirer
            rate = faults.get(f"{acquirer}:{kind}", rate)
        return rate > 0 and (rng or self._rng).random() < rate

    def _note(self, kind: str, m: _Merchant, subject: str) -> None:
        self.injected.append(Injected(kind, m.id, subject, m.acquirer))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # -- the stream ----------------------------------------------------------------------------

    def events(self) -> Iterator[PosEvent | Credit | FileComplete]:
        """All events in emission order (event time, shuffled within jitter_ms)."""
        cfg, rng = self.cfg, self._rng
        jitter = cfg.jitter_ms
        pending: list[tuple[int, int, PosEvent | Credit]] = []  # (emit_ms, seq, event)
        seq = itertools.count()
        if cfg.markers:
            yield from self._with_markers(self._events(cfg, rng, jitter, pending, seq))
            return
        yield from self._events(cfg, rng, jitter, pending, seq)

    def _events(self, cfg, rng, jitter, pending, seq) -> Iterator:
        def schedule(e) -> None:
            emit = e.event_time_ms + (rng.randrange(jitter + 1) if jitter else 0)
            heapq.heappush(pending, (emit, next(seq), e))
            if self._fault("redelivery", e.acquirer):
                self.counts["redelivery"] = self.counts.get("redelivery", 0) + 1
                heapq.heappush(pending, (emit + (rng.randrange(jitter + 1) if jitter else 0),
                                         next(seq), e))

        mrng = self._mrng

        def schedule_marker(e: _PendingMarker) -> None:
            emit = e.event_time_ms + (mrng.randrange(jitter + 1) if jitter else 0)
            heapq.heappush(pending, (emit, next(seq), e))
            if self._fault("redelivery", e.acquirer, mrng):
                self.counts["redelivery"] = self.counts.get("redelivery", 0) + 1
                heapq.heappush(pending, (emit + (mrng.randrange(jitter + 1) if jitter else 0),
                                         next(seq), e))

        markers = cfg.markers
        for now, e in self._raw_events():
            # everything due to go out before now (less the jitter) can go out
            while pending and pending[0][0] + jitter <= now:
                yield heapq.heappop(pending)[2]
            if markers:
                for marker in self._files_of(e, now):
                    schedule_marker(marker)
                if not self._keep(e):
                    continue
            schedule(e)
            for extra in self._consequences(e):
                if markers:
                    for marker in self._files_of(extra, now):
                        schedule_marker(marker)
                    if not self._keep(extra):
                        continue
                schedule(extra)
        while pending:
            yield heapq.heappop(pending)[2]

    # -- completeness markers (contract v1.1) --------------------------------------------------

    def _with_markers(self, stream: Iterator) -> Iterator[PosEvent | Credit | FileComplete]:
        """The stream, each pending marker filled in with the credits booked up to its time."""
        for e in stream:
            if type(e) is _PendingMarker:
                yield e.finish(self._tally)
            else:
                yield e

    def _files_of(self, e, now: int) -> list:
        """Markers to schedule for the settle dates `e` concerns (each once), counting a credit
        for its booking date."""
        if not hasattr(self, "_tally"):
            self._tally: dict[tuple[str, int], list[tuple[int, int]]] = {}
            self._marked: set[tuple[str, int]] = set()
        policy = self.policy
        m = self._merchant_by_id.get(e.merchant_id)
        if m is None:
            return []
        if type(e) is Credit:
            day = policy.local_day(e.event_time_ms)
            self._tally.setdefault((m.id, day), []).append((e.event_time_ms, e.amount_minor))
        elif e.type == AUTHORISATION:
            if m.cycle.mode == "batch":
                deadline = policy.batch_deadline_ms(policy.trade_day(e.event_time_ms, m.cycle),
                                                    m.cycle)
            else:
                deadline = policy.deadline_ms(e.event_time_ms, m.cycle)
            day = policy.local_day(deadline, m.cycle)
        else:
            return []
        if (m.id, day) in self._marked:
            return []
        self._marked.add((m.id, day))
        at = self._file_time(m, day)
        if at <= now:
            return []  # the run for that date is over: its file was (or was not) sent
        if self._fault("marker_missing", m.acquirer, self._mrng):
            self._note("marker_missing", m, f"{m.id}:{day}")
            return []
        if self._fault("marker_late", m.acquirer, self._mrng):
            at += self._mrng.randrange(HOUR, 4 * HOUR)
            self._note("marker_late", m, f"{m.id}:{day}")
        return [_PendingMarker(f"FC-{m.id}-{m.acquirer}-{day}", m.id, m.acquirer, day, at)]

    def _keep(self, e) -> bool:
        """False for a credit lost from the feed (fault marker_short): its file still lists it."""
        if type(e) is not Credit or not self._fault("marker_short", e.acquirer, self._mrng):
            return True
        m = self._merchant_by_id[e.merchant_id]
        self._note("marker_short", m, e.batch_id or (e.auth_ids[0] if e.auth_ids else
                                                      e.credit_id))
        return False

    def _file_time(self, m: _Merchant, day: int) -> int:
        """When the acquirer's settlement run for `day` is over: 10 minutes after a T+N
        cycle's due time on that date, 00:15 after it for a duration cycle."""
        from datetime import date, datetime, timedelta
        from zoneinfo import ZoneInfo
        c = m.cycle
        d = date.fromordinal(day)
        if c.due_kind == BUSINESS:
            local = datetime(d.year, d.month, d.day, c.due_minute // 60, c.due_minute % 60)
            local += timedelta(minutes=10)
        else:
            local = datetime(d.year, d.month, d.day) + timedelta(days=1, minutes=15)
        return int(local.replace(tzinfo=ZoneInfo(c.timezone)).timestamp() * 1000)

    def _raw_events(self) -> Iterator[tuple[int, PosEvent | Credit]]:
        """(generator time, event): sales in time order, and the credits they cause later."""
        cfg, rng = self.cfg, self._rng
        merchants = self._merchants()
        self._batches: dict[tuple[str, str], list] = {}
        self._batch_close: list[tuple[int, str, str]] = []  # (close ms, merchant, batch id)
        self._merchant_by_id = {m.id: m for m in merchants}
        mean_gap = 1000.0 / cfg.sales_per_second
        t = float(cfg.start_ms)
        while True:
            t += rng.expovariate(1.0 / mean_gap)
            now = int(t)
            # batches whose trade day is over are closed and credited
            while self._batch_close and self._batch_close[0][0] <= min(now, cfg.end_ms):
                closed, mid, bid = heapq.heappop(self._batch_close)
                for e in self._settle_batch(self._merchant_by_id[mid], bid, closed):
                    yield closed, e
            if now >= cfg.end_ms:
                break
            m = merchants[rng.randrange(len(merchants))]
            yield now, self._sale(m, now)
            if self._fault("orphan", m.acquirer):
                cid = f"CR{next(self._ids):09d}"
                self._note("orphan", m, cid)
                yield now, Credit(cid, m.id, m.acquirer, rng.randrange(1_000, 50_000), "CNY",
                                  now + rng.randrange(1, 10 * MIN), auth_ids=(f"X{cid}",))
        # the feed ends: terminals still close their open batches at their cut-off
        while self._batch_close:
            closed, mid, bid = heapq.heappop(self._batch_close)
            for e in self._settle_batch(self._merchant_by_id[mid], bid, closed):
                yield closed, e

    def _sale(self, m: _Merchant, now: int) -> PosEvent:
        rng = self._rng
        channels, weights = m.channels
        channel = rng.choices(channels, weights)[0]
        amount = max(100, int(rng.lognormvariate(8.8, 1.0)))  # median ~66 CNY
        if channel == "qr_large":
            amount *= 20
        auth_id = f"A{next(self._ids):010d}"
        status = DECLINED if rng.random() < self.cfg.declined_rate else "approved"
        batch_id = None
        if m.cycle.mode == "batch":
            trade_day = self.policy.trade_day(now, m.cycle)
            batch_id = f"B{m.id}-{trade_day}"
            key = (m.id, batch_id)
            if key not in self._batches:
                self._batches[key] = []
                deadline = self.policy.batch_deadline_ms(trade_day, m.cycle)
                # the terminal closes its batch at the end of the trade day (cut-off)
                close = self._trade_day_end_ms(trade_day, m.cycle)
                heapq.heappush(self._batch_close, (max(close, now + 1), m.id, batch_id))
                self._batches[key].append(deadline)
        pan = f"622848******{rng.randrange(10_000):04d}" if self.cfg.emit_pan_masked else None
        return PosEvent(AUTHORISATION, f"E{auth_id}", auth_id, m.id,
                        m.terminals[rng.randrange(len(m.terminals))], m.acquirer, channel,
                        amount, "CNY", now, status, batch_id, pan,
                        f"{rng.randrange(1_000_000):06d}", None, None)

    def _trade_day_end_ms(self, trade_day: int, cycle) -> int:
        """The first instant (to 15 minutes) that belongs to a later trade day: the cut-off."""
        from datetime import date, datetime, timezone
        d = date.fromordinal(trade_day)
        # a day before UTC midnight of the trade date is before it in every zone
        probe = int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1000 - DAY
        while self.policy.trade_day(probe, cycle) <= trade_day:
            probe += 15 * MIN
        return probe

    def _consequences(self, e: PosEvent | Credit) -> Iterator[PosEvent | Credit]:
        """What follows a sale: a void, and (per-sale mode) its credit(s)."""
        if type(e) is not PosEvent or e.type != AUTHORISATION:
            return
        rng, policy = self._rng, self.policy
        m = self._merchant_by_id[e.merchant_id]
        voided = e.status != DECLINED and rng.random() < self.cfg.void_rate
        if voided:
            yield PosEvent(REVERSAL, f"V{e.auth_id}", e.auth_id, e.merchant_id, e.terminal_id,
                           e.acquirer, e.channel, e.amount_minor, e.currency,
                           e.event_time_ms + rng.randrange(5_000, 2 * MIN), batch_id=e.batch_id)
        if m.cycle.mode == "batch":
            key = (m.id, e.batch_id)
            self._batches[key].append((e, voided))
            return
        if e.status == DECLINED or voided:
            return
        net = e.amount_minor - policy.fee_minor(e.channel, e.amount_minor)
        deadline = policy.deadline_ms(e.event_time_ms, m.cycle)
        yield from self._credits(m, e.auth_id, (e.auth_id,), None, net, e.event_time_ms,
                                 deadline, m.cycle.grace_ms, [e])

    def _settle_batch(self, m: _Merchant, batch_id: str,
                      closed_ms: int) -> Iterator[PosEvent | Credit]:
        entries = self._batches.pop((m.id, batch_id))
        deadline, sales = entries[0], entries[1:]
        fee = self.policy.fee_minor
        net = sum(e.amount_minor - fee(e.channel, e.amount_minor)
                  for e, voided in sales if e.status != DECLINED and not voided)
        if net <= 0:
            return
        # the acquirer pays between the batch's close and its deadline
        yield from self._credits(m, batch_id, (), batch_id, net, closed_ms, deadline,
                                 m.cycle.grace_ms, [e for e, voided in sales
                                                    if e.status != DECLINED and not voided])

    def _credits(self, m: _Merchant, subject: str, auth_ids: tuple[str, ...],
                 batch_id: str | None, net: int, after_ms: int, deadline: int, grace: int,
                 sales: list[PosEvent]) -> Iterator[Credit]:
        rng, policy = self._rng, self.policy
        if self._fault("missing", m.acquirer):
            self._note("missing", m, subject)
            return
        amount = net
        if self._fault("underpaid", m.acquirer):
            # a wrong fee rate: 60 bps (or 78) where less was agreed
            wrong = 78 if all(policy.fee_bps(s.channel) >= 60 for s in sales) else 60
            amount = sum(s.amount_minor - (s.amount_minor * wrong + 5000) // 10_000 for s in sales)
            if net - amount > len(sales):  # beyond the tolerance
                self._note("underpaid", m, subject)
            else:
                amount = net
        elif self._fault("fee_table", m.acquirer):
            amount = sum(s.amount_minor - FeeRule(rule.bps + self.cfg.fee_table_bps,
                                                  rule.cap_minor).fee_minor(s.amount_minor)
                         for s in sales for rule in (policy.fee_rule(s.channel),))
            if net - amount > policy.tolerance.allowed_minor(net, len(sales)):
                self._note("fee_table", m, subject)
            else:
                amount = net
        elif self._fault("overpaid", m.acquirer):
            amount = net + rng.randrange(500, 5_000)
            self._note("overpaid", m, subject)
        window = max(deadline - after_ms, 2)
        if self._fault("late", m.acquirer):
            at = deadline + grace + rng.randrange(10 * MIN, 6 * HOUR)
            self._note("late", m, subject)
        else:
            at = after_ms + max(1, int(window * rng.uniform(0.2, 0.9)))
        for acquirer, from_ms, delay_ms in self.cfg.slowdowns:
            if acquirer == m.acquirer and deadline >= from_ms:
                at += delay_ms
        # refunds made well before this credit was booked are netted into it
        waiting = self._netting.get(m.id)
        if waiting:
            due = [r for r in waiting if r[0] + HOUR < at]
            if due and sum(r[1] for r in due) < amount:
                amount -= sum(r[1] for r in due)
                self._netting[m.id] = [r for r in waiting if r[0] + HOUR >= at]
        cid = f"CR{next(self._ids):09d}"
        yield Credit(cid, m.id, m.acquirer, amount, "CNY", at, auth_ids=auth_ids,
                     batch_id=batch_id)
        if self._fault("duplicate", m.acquirer):
            self._note("duplicate", m, subject)
            yield Credit(f"CR{next(self._ids):09d}", m.id, m.acquirer, amount, "CNY",
                         at + rng.randrange(MIN, 2 * HOUR), auth_ids=auth_ids, batch_id=batch_id)
        if sales and self._fault("refund_netted", m.acquirer):
            # a customer returns goods after the payment: the acquirer nets the refund into
            # this merchant's next credit
            s = sales[0]
            refund = max(1, s.amount_minor // 2)
            refund_at = at + rng.randrange(MIN, HOUR)
            self._netting.setdefault(m.id, []).append((refund_at, refund))
            self._note("refund_netted", m, s.auth_id)
            yield PosEvent(REFUND, f"R{s.auth_id}", s.auth_id, s.merchant_id, s.terminal_id,
                           s.acquirer, s.channel, refund, s.currency, refund_at,
                           batch_id=s.batch_id)


class _PendingMarker:
    """A marker scheduled before its file's credits are all known; filled in when it goes out
    (by then every credit booked up to its time has been generated)."""

    __slots__ = ("marker_id", "merchant_id", "acquirer", "day", "event_time_ms", "done")

    def __init__(self, marker_id: str, merchant_id: str, acquirer: str, day: int,
                 at_ms: int) -> None:
        self.marker_id, self.merchant_id, self.acquirer = marker_id, merchant_id, acquirer
        self.day, self.event_time_ms = day, at_ms
        self.done: FileComplete | None = None

    def __lt__(self, other) -> bool:  # heap ties never reach here (a sequence number first)
        return self.marker_id < other.marker_id

    def finish(self, tally: dict[tuple[str, int], list[tuple[int, int]]]) -> FileComplete:
        if self.done is None:  # a redelivery sends the same marker again
            booked = [a for t, a in tally.get((self.merchant_id, self.day), ())
                      if t <= self.event_time_ms]
            self.done = FileComplete(self.marker_id, self.merchant_id, self.acquirer, self.day,
                                     len(booked), sum(booked), "CNY", self.event_time_ms)
        return self.done


def bad_records(rng: random.Random, n: int, now_ms: int) -> list[tuple[str, bytes, str]]:
    """Raw records that must be dead-lettered, with the reason each must get."""
    from streams.wire import AUTH_TOPIC, SETTLEMENT_TOPIC, event_to_json
    good = PosEvent(AUTHORISATION, "EBAD", "ABAD", "MBAD", "TBAD", "acq-std", "credit", 1_000,
                    "CNY", now_ms, pan_masked="622848******0000")
    credit = Credit("CRBAD", "MBAD", "acq-std", 1_000, "CNY", now_ms, auth_ids=("ABAD",))
    import orjson
    base = orjson.loads(event_to_json(good))
    makers = [
        (AUTH_TOPIC, lambda i: b'{"type": "authorisation", "event_id": ', "malformed_json"),
        (AUTH_TOPIC, lambda i: orjson.dumps({k: v for k, v in base.items() if k != "amount_minor"}),
         "missing_field"),
        (AUTH_TOPIC, lambda i: orjson.dumps({**base, "event_id": f"EN{i}", "amount_minor": -5}),
         "bad_amount"),
        (AUTH_TOPIC, lambda i: orjson.dumps({**base, "event_id": f"EC{i}", "currency": "XYZ"}),
         "unknown_currency"),
        (AUTH_TOPIC, lambda i: orjson.dumps({**base, "event_id": f"EP{i}",
                                             "pan_masked": "4111111111111111"}), "full_pan"),
        (AUTH_TOPIC, lambda i: orjson.dumps({**base, "event_id": f"EF{i}",
                                             "event_time": "2099-01-01T00:00:00Z"}),
         "future_timestamp"),
        (AUTH_TOPIC, lambda i: event_to_json(credit), "wrong_topic"),
        (SETTLEMENT_TOPIC, lambda i: b"\xff\xfe not json", "malformed_json"),
    ]
    out = []
    for i in range(n):
        topic, make, reason = makers[rng.randrange(len(makers))]
        out.append((topic, make(i), reason))
    return out


# ---- command -----------------------------------------------------------------------------


