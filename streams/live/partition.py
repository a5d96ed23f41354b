"""The live worker's logic, apart from faust: one partition's reconciler, its outbox and dedupe,
the clock-tick decision, and the encodings of table keys, values and tick records.

Owns: `LivePartition` (a `Reconciler` per input partition plus what makes its output safe under
a crash), `tick_target` (when the wall clock may move event time), `InputProgress` (offsets and
silence per input partition) and `OffsetChecker` (whole input). It imports the core, the wire
layer and orjson; never faust or Kafka clients, so tests drive it without a broker
(tests/live/test_live.py). `streams.live.app` feeds it records and does the I/O it asks for.

State, per change. A batch writes to table `state` only the keys that changed: the
reconciler's own (`Reconciler.take_changes`: an item when it opens, changes and closes, a
credit, a redelivery-id chunk...), one key per new finding (the outbox) and one deletion per
finding the broker has acknowledged, then the partition's clock; ahead of them the same writes
once more as the batch's journal (a few records), so that a worker killed while sending them
is restored to the whole batch or to none of it. So a batch costs what its events and timers
cost, whatever a merchant holds; no value grows with a merchant.

Output guarantee (each (anomaly_id, status) on settlewatch.anomalies once, none lost):
- *No loss: an outbox.* A finding is written to the table as its own key in the same batch
  as the state that raised it, and is sent only once the broker has acknowledged every write
  of the batch; faust may ack the batch, and so commit its offsets, only after that
  (streams.live.app). A worker killed after the writes were acknowledged re-sends the outbox on
  restore; one killed before re-reads the input from the committed offset and raises the
  finding again, because the state that produced it was not saved either. A finding the
  broker acknowledged is deleted from the table at the next flush.
- *No duplicate: dedupe against the output itself.* A finding re-sent from an outbox may
  already be on the topic (the worker died between the send and the deletion). On restore, a
  partition reads settlewatch.anomalies partition n (findings are sent to the partition number
  of the input they came from) from `dedupe_lookback` before its last saved clock, or before
  the oldest finding still in its outbox, and drops any (anomaly_id, status) found there.
- Given that the input reaches the reconciler whole and in order per partition
  (`OffsetChecker`), and that one worker owns a partition at a time (Kafka's group protocol).
  Dead letters are at-least-once.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streams import wire
from streams.core.events import Finding
from streams.core.policy import Policy
from streams.core.reconcile import Reconciler
from streams.wire.topics import Topics

log = logging.getLogger("settlewatch.worker")

# Kinds of input record, as the agent tells them apart by topic.
AUTH = "authorisations"
SETTLEMENT = "settlements"
TICK = "ticks"


# ------------------------------------------------------------------------------------ encodings
# Table `state` holds, per input partition p, small keys written when they change:
#   b"<p>\x1es\x1e" + reconciler state key  the core's per-change state (Reconciler.take_changes)
#   b"<p>\x1eo\x1e" + anomaly_id \x1f status  one finding in the outbox: written before it is
#                                             sent, deleted once the broker has it
#   b"<p>\x1ec"                               the partition's clock, when it was written and the
#                                             sequence number of the batch it closes
#   b"<p>\x1ej\x1e<i>"                          part i of the journal: the newest batch's writes
# The partition number leads the key, so a partition's keys are picked out of the table without
# decoding a value, and every key of partition p goes to changelog partition p (written in order:
# the clock last, so a clock on the changelog means its whole batch is there too).
SEP = b"\x1e"
STATE, OUTBOX, CLOCK, JOURNAL = b"s", b"o", b"c", b"j"


def state_key(partition: int, key: str) -> bytes:
    return b"%d\x1es\x1e" % partition + key.encode()


def outbox_key(partition: int, anomaly_id: str, status: str) -> bytes:
    return b"%d\x1eo\x1e" % partition + f"{anomaly_id}\x1f{status}".encode()


def clock_key(partition: int) -> bytes:
    return b"%d\x1ec" % partition


def journal_key(partition: int, part: int) -> bytes:
    return b"%d\x1ej\x1e%d" % (partition, part)


JOURNAL_PART_BYTES = 512 * 1024  # a journal record holds about this much of a batch's writes


def dumps_kept(obj: Any) -> bytes:
    """``orjson.dumps`` for a value the worker keeps (its table holds the latest value of every
    state key): right-sized. orjson (3.12 on) returns bytes over-allocated to at least 4 KiB,
    or to the next power of two, and never shrinks them (ijl/orjson#483, closed as not a bug;
    home-assistant/core#181240 trims the same way), so a 300-byte item value held 4 KiB: the
    worker's memory grew about 5 KB per record read (issue 13's note). A copy through a
    memoryview is exactly as long as the JSON. tests/live/test_live.py fails when orjson stops
    over-allocating, and this copy can go."""
    return bytes(memoryview(orjson.dumps(obj)))


def encode_journal(seq: int, writes: list[tuple[bytes, bytes | None]]) -> list[bytes]:
    """A batch's writes as journal records (seq, part i of n, [key, value] pairs), each well
    under Kafka's default record limit."""
    parts: list[list] = [[]]
    size = 0
    for key, value in writes:
        if size > JOURNAL_PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append([key.decode(), None if value is None else value.decode()])
        size += len(key) + (len(value) if value is not None else 0)
    return [dumps_kept({"seq": seq, "part": i, "parts": len(parts), "w": w})
            for i, w in enumerate(parts)]


def journal_writes(values: Iterable[bytes]) -> tuple[int, list[tuple[bytes, bytes | None]]] | None:
    """(seq, writes) of the newest journal whose parts are all there, None if none is."""
    by_seq: dict[int, dict[int, dict]] = {}
    for value in values:
        d = orjson.loads(value)
        by_seq.setdefault(d["seq"], {})[d["part"]] = d
    for seq in sorted(by_seq, reverse=True):
        parts = by_seq[seq]
        n = next(iter(parts.values()))["parts"]
        if len(parts) == n:
            return seq, [(k.encode(), None if v is None else v.encode())
                         for i in range(n) for k, v in parts[i]["w"]]
    return None


def key_partition(key: bytes) -> int | None:
    """The input partition a table key belongs to, None for a key of another shape."""
    cut = key.find(SEP)
    try:
        return int(key[:cut]) if cut > 0 else None
    except ValueError:
        return None


def split_key(key: bytes) -> tuple[int, bytes, bytes] | None:
    """(partition, tag, rest) of a table key, or None."""
    parts = key.split(SEP, 2)
    p = key_partition(key)
    if p is None:
        return None
    return p, parts[1], parts[2] if len(parts) > 2 else b""


def encode_clock(clock: dict[str, int], written_at_ms: int, seq: int = 0) -> bytes:
    return dumps_kept({"clock": clock, "written_at_ms": written_at_ms, "seq": seq})


def decode_clock(value: bytes) -> tuple[dict[str, int], int]:
    d = orjson.loads(value)
    return d["clock"], d["written_at_ms"]


def clock_seq(value: bytes) -> int:
    return orjson.loads(value).get("seq", 0)


def encode_tick(tick_ms: int) -> bytes:
    return orjson.dumps({"tick_ms": tick_ms, "tick": wire.format_time_ms(tick_ms)})


def decode_tick(value: bytes) -> int | None:
    try:
        d = orjson.loads(value)
        t = d["tick_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return t if type(t) is int else None


# ------------------------------------------------------------------------------------ the clock
@dataclass(frozen=True, slots=True)
class InputView:
    """One input topic of one partition, as the tick decision sees it."""

    caught_up: bool  # the end offset is known and everything before it has been processed
    idle: bool  # no record read for tick_idle
    watermark_ms: int | None  # the reconciler's watermark of this input (None: none seen)


def tick_target(now_ms: int, allowance_ms: int, clock_ms: int,
                inputs: Iterable[InputView]) -> int | None:
    """The event time a clock tick may move a partition to, or None for no tick.

    The wall clock minus the allowance speaks only for *silent* inputs (caught up and idle).
    An input still delivering records (or with records not yet read) speaks for itself: the
    tick never passes its watermark, so a backlog being read, or a feed replaying the past,
    is never overtaken by the wall clock, and a dead settlement feed beside a live sales feed
    moves with the sales. No tick when the partition's clock is already there.
    """
    target = now_ms - allowance_ms
    for i in inputs:
        if i.caught_up and i.idle:
            continue
        if i.watermark_ms is None:
            return None
        if i.watermark_ms < target:
            target = i.watermark_ms
    return target if target > clock_ms else None


class InputProgress:
    """Per (topic, partition): the next offset to process and the wall time of the last read.

    Until a partition's first record is read here, its position is the committed offset (or
    the log start) the caller passes, and its last read is when tracking started, so an input
    only counts as idle after `tick_idle` of this worker's own watching.
    """

    def __init__(self, now_ms: int) -> None:
        self.started_ms = now_ms
        self.next_offset: dict[tuple[str, int], int] = {}
        self.last_read_ms: dict[tuple[str, int], int] = {}

    def note(self, topic: str, partition: int, offset: int, now_ms: int) -> None:
        key = (topic, partition)
        self.next_offset[key] = offset + 1
        self.last_read_ms[key] = now_ms

    def lag(self, topic: str, partition: int, end_offset: int | None,
            start_offset: int | None) -> int | None:
        """Records not yet processed, or None when unknown."""
        if end_offset is None:
            return None
        pos = self.next_offset.get((topic, partition), start_offset)
        if pos is None:
            return None
        return max(end_offset - pos, 0)

    def idle(self, topic: str, partition: int, now_ms: int, idle_ms: int) -> bool:
        last = self.last_read_ms.get((topic, partition), self.started_ms)
        return now_ms - last >= idle_ms

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for d in (self.next_offset, self.last_read_ms):
            for key in [k for k in d if k[1] in gone]:
                del d[key]


class OffsetChecker:
    """Checks that each (topic, partition) reaches the agent gap-free, in offset order.

    faust 0.15.3 can lose records between its consumer and an agent: when a worker starts
    with a changelog to restore, records fetched while recovery runs can be cleared from the
    agent's queue when recovery ends, though their offsets count as read, so they are not
    fetched again (seen in about one restart in eight in tests/integration/test_restart.py).
    The records after them still arrive. Processing those would apply the input with a hole in
    it, and faust would never commit past the hole. Seeking back does not help: faust then
    delivers some records twice and its commits stall. So the worker restarts itself instead
    (streams.live.app), reading again from the committed offset, which the hole keeps in place.

    `admit` says what to do with a record: "ok" (process it), "seen" (a re-delivery of one
    already processed: drop it; faust re-reads from the committed offset after a rebalance)
    or "hole" (records before it are missing).
    """

    def __init__(self) -> None:
        self.expected: dict[tuple[str, int], int] = {}

    def admit(self, key: tuple[str, int], offset: int, committed: int | None = None) -> str:
        exp = self.expected.get(key)
        if exp is None:
            # The first record of a partition: it should be the committed offset.
            exp = committed if committed is not None and committed <= offset else offset
        if offset < exp:
            return "seen"
        if offset > exp:
            return "hole"
        self.expected[key] = offset + 1
        return "ok"

    def seed(self, key: tuple[str, int], committed: int) -> None:
        """Where a partition resumes (its committed offset), before its first record."""
        self.expected.setdefault(key, committed)

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        for key in [k for k in self.expected if k[1] in gone]:
            del self.expected[key]


# -------------------------------------------------------------------------------- one partition
@dataclass
class Flush:
    """What a partition asks the shell to do at the end of a batch, in this order: write
    `writes` (table key, value or None to delete; the clock last) to table `state` and wait
    for the broker to acknowledge them, then send `publish` (merchant_id, outbox key, finding
    record) and report each acknowledgement with `acked(outbox key)`."""

    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    publish: list[tuple[str, tuple[str, str], dict]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # of `publish`, for metrics


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    reason: str


class LivePartition:
    """The reconciler of one input partition number, with its outbox and dedupe set.

    Feed it with `on_input` / `on_tick` in record order; call `flush` at the end of a batch.
    A batch's writes are the reconciler's changed keys (`Reconciler.take_changes`), one key per
    new finding, one deletion per finding the broker acknowledged, and the clock: their number
    follows the batch's events and timers, never the state held.
    """

    def __init__(self, partition: int, policy: Policy, *, topics: Topics = Topics(),
                 observer: Any = None, metrics: Any = None,
                 dedupe_lookback_ms: int = 15 * 60_000) -> None:
        self.partition = partition
        self.policy = policy
        # its records carry no evidence (streams.wire.encode): keep none in state
        self.reconciler = Reconciler(policy, observer, aging=True, evidence=False)
        self.topics = topics
        self.metrics = metrics
        self.lookback_ms = dedupe_lookback_ms
        self.max_future_ms = policy.max_future_ms
        self._fresh: list[Finding] = []  # raised, not yet in the table
        self._outbox: dict[tuple[str, str], int] = {}  # in the table, unacked -> detected ms
        self._done: list[tuple[str, str]] = []  # acknowledged, still in the table
        self._sent: OrderedDict[tuple[str, str], int] = OrderedDict()  # (id, status) -> wall ms
        self._clock_written: dict[str, int] | None = None
        self._seq = 0  # batches written
        # A batch restored from its journal, whose individual writes may not all be on the
        # changelog: written again, first, by the next flush (the next journal replaces it).
        self._rewrite: list[tuple[bytes, bytes | None]] = []
        self.suppressed = 0  # findings dropped as already published
        self.republished = 0
        self.failures = 0  # records and timers the reconciler raised on (isolated)
        self._wire_topic = {AUTH: wire.AUTH_TOPIC, SETTLEMENT: wire.SETTLEMENT_TOPIC}
        self._real_topic = {AUTH: topics.authorisations, SETTLEMENT: topics.settlements}

    # -- input ----------------------------------------------------------------------------

    def on_input(self, kind: str, raw: bytes | None, record_time_ms: int, offset: int,
                 key: bytes | None = None) -> DeadLetter | None:
        """One record of an input topic (kind AUTH or SETTLEMENT); a reject comes back as
        the dead letter to send. A record the reconciler raises on (now, or a timer its clock
        move fires) is dead-lettered as processing_error: no single record stops the worker."""
        m = self.metrics
        topic = self._real_topic[kind]
        if m is not None:
            m.event_read(topic)
        r = wire.parse(self._wire_topic[kind], raw or b"", record_time_ms, self.max_future_ms)
        if type(r) is wire.Reject:
            return self._reject(kind, r, offset, record_time_ms, key)
        if m is not None:
            m.last_event(topic, r.event_time_ms)
        try:
            out = self.reconciler.on_event(r)
        except Exception as exc:  # a reconciler bug must not stop the partition
            self.failures += 1
            log.error("partition %d: processing failed at %s@%d: %s (record dead-lettered)",
                      self.partition, topic, offset, type(exc).__name__)
            return self.failed(kind, raw, record_time_ms, offset, key, exc)
        if out:
            self._fresh.extend(out)
        return None

    MAX_TIMER_FAILURES = 1_000  # per tick; each failure consumes the timer that raised

    def on_tick(self, raw: bytes | None) -> bool:
        tick = decode_tick(raw or b"")
        if tick is None:
            return False
        for _ in range(self.MAX_TIMER_FAILURES):
            try:
                out = self.reconciler.advance_to(tick)
            except Exception as exc:  # a timer that raises is skipped, the rest still fire
                self.failures += 1
                log.error("partition %d: a timer failed moving the clock to %s: %s "
                          "(skipped)", self.partition, wire.format_time_ms(tick),
                          type(exc).__name__)
                continue  # findings raised before it come out of the next call
            if out:
                self._fresh.extend(out)
            break
        return True

    def failed(self, kind: str, raw: bytes | None, record_time_ms: int, offset: int,
               key: bytes | None, exc: BaseException) -> DeadLetter:
        """A record the reconciler raised on: dead-lettered as processing_error, so one bad
        record cannot stop the partition. The message names the error type only."""
        reject = wire.Reject("processing_error", f"the worker failed on this record "
                             f"({type(exc).__name__})", wire.mask_pans(raw or b""))
        return self._reject(kind, reject, offset, record_time_ms, key)

    def _reject(self, kind: str, r: wire.Reject, offset: int, record_time_ms: int,
                key: bytes | None) -> DeadLetter:
        topic = self._real_topic[kind]
        if self.metrics is not None:
            self.metrics.event_rejected(topic, r.reason)
        value = wire.deadletter_to_json(r, topic, self.partition, offset, record_time_ms)
        return DeadLetter(wire.mask_pans(key) if key else key, value, r.reason)

    # -- output ---------------------------------------------------------------------------

    @property
    def needs_flush(self) -> bool:
        return bool(self._fresh or self._done or self._rewrite)

    def flush(self, now_ms: int) -> Flush:
        """Findings raised since the last flush (deduped) into the outbox, acknowledged findings
        out of it, the reconciler's changed keys, and the clock if anything changed.

        The order is the order on the changelog partition, and a worker killed while sending
        leaves a prefix of it there: so the outbox comes first (a state change on the
        changelog is never without the finding it raised; a finding there without its state
        is re-sent once and deduped when the re-read input raises it again), the ids kept to
        recognise redeliveries come after the other state keys (an event is never taken for a
        redelivery of one whose effects were lost), and the clock last."""
        out = Flush()
        p = self.partition
        writes = out.writes
        dumps = dumps_kept
        rewrite, self._rewrite = self._rewrite, []
        writes += [(k, v) for k, v in rewrite if split_key(k)[1] != CLOCK]
        acked, self._done = self._done, []
        for k in acked:
            writes.append((outbox_key(p, *k), None))
        fresh, self._fresh = self._fresh, []
        sent = self._sent
        for f in fresh:
            k = (f.anomaly_id, str(f.status))
            if k in sent:
                self.suppressed += 1
                continue
            sent[k] = now_ms
            record = wire.finding_to_dict(replace(f, detected_at_ms=now_ms))
            self._outbox[k] = now_ms
            writes.append((outbox_key(p, *k), dumps(record)))
            out.publish.append((f.merchant_id, k, record))
            out.findings.append(f)
        ids = []
        for k, v in self.reconciler.take_changes().items():
            w = (state_key(p, k), None if v is None else dumps(v))
            cut = k.find("\x1f")
            if k[cut + 1:cut + 3] == "r\x1f":
                ids.append(w)
            else:
                writes.append(w)
        writes += ids
        clock = self.reconciler.snapshot_clock()
        if writes or clock != self._clock_written:
            self._seq += 1
            writes.append((clock_key(p), encode_clock(clock, now_ms, self._seq)))
            self._clock_written = clock
            # The batch's writes once more, ahead of them, in a few records: a worker killed
            # while sending leaves a prefix of the individual writes, which alone could be an
            # inconsistent state (an event's keys half written); with its journal on the
            # changelog the batch is restored whole, and without it none of it was sent.
            out.writes = [(journal_key(p, i), v)
                          for i, v in enumerate(encode_journal(self._seq, writes))] + writes
        self._expire_sent(now_ms)
        return out

    def acked(self, key: tuple[str, str]) -> None:
        """The finding `key` (anomaly_id, status) of the outbox is on the broker."""
        if self._outbox.pop(key, None) is not None:
            self._done.append(key)

    def _expire_sent(self, now_ms: int) -> None:
        sent, horizon = self._sent, now_ms - self.lookback_ms
        while sent:
            k, at = next(iter(sent.items()))
            if at >= horizon:
                break
            sent.popitem(last=False)

    # -- recovery -------------------------------------------------------------------------

    @classmethod
    def restore(cls, partition: int, policy: Policy, *,
                entries: Iterable[tuple[bytes, bytes]], published: Iterable[tuple[str, str, int]],
                now_ms: int, **kwargs: Any) -> tuple[LivePartition, list[tuple[str, tuple, dict]]]:
        """A partition rebuilt from its table keys, and the outbox findings to send again.

        `entries` are the (key, value) of this partition in table `state`; `published` the
        (anomaly_id, status, record ms) already on the output partition (see `horizon_ms`).
        The newest batch comes back whole: from its journal when its individual writes may be
        incomplete (its clock, written last, is older than the journal). The clock comes back
        too, and events re-read from the committed offsets (behind the saved state) are
        recognised by the reconciler as redeliveries.
        """
        lp = cls(partition, policy, **kwargs)
        rec = lp.reconciler
        for aid, status, at in sorted(published, key=lambda x: x[2]):
            lp._sent[(aid, status)] = at
        latest: dict[bytes, bytes | None] = {}
        journal: list[bytes] = []
        for key, value in entries:
            parts = split_key(key)
            if parts is None or parts[0] != partition or value is None:
                continue
            if parts[1] == JOURNAL:
                journal.append(value)
            else:
                latest[key] = value
        written = clock_seq(latest[clock_key(partition)]) if clock_key(partition) in latest else 0
        last = journal_writes(journal)
        if last is not None and last[0] > written:
            # killed while sending that batch: its journal is whole, its writes may not be;
            # the next flush writes them again, since the next journal replaces this one
            for key, value in last[1]:
                latest[key] = value
            lp._rewrite = list(last[1])
        lp._seq = max(written, last[0] if last is not None else 0)
        state: list[tuple[str, object]] = []
        outbox: list[dict] = []
        clock: dict[str, int] | None = None
        loads = orjson.loads
        for key, value in latest.items():
            if value is None:
                continue
            _, tag, rest = split_key(key)
            if tag == STATE:
                state.append((rest.decode(), loads(value)))
            elif tag == OUTBOX:
                outbox.append(loads(value))
            elif tag == CLOCK:
                clock = decode_clock(value)[0]
        rec.restore_changes(state)
        if clock is not None:
            rec.restore_clock(clock)
        resend: list[tuple[str, tuple, dict]] = []
        for record in outbox:
            k = (record["anomaly_id"], record["status"])
            try:
                at = wire.parse_time_ms(record["detected_at"])
            except (KeyError, TypeError, ValueError):
                at = now_ms
            lp._outbox[k] = at
            if k in lp._sent:
                lp._done.append(k)  # already on the topic: out of the outbox at the next flush
                del lp._outbox[k]
                continue
            lp._sent[k] = now_ms
            resend.append((record["merchant_id"], k, record))
        rec.take_changes()  # restoring is not a change
        lp._clock_written = rec.snapshot_clock()
        lp.republished = len(resend)
        drained = rec.drain()
        if drained:
            lp._fresh.extend(drained)
        return lp, resend

    @staticmethod
    def horizon_ms(entries: Iterable[tuple[bytes, bytes]], now_ms: int, lookback_ms: int) -> int:
        """From when the output partition must be read for dedupe on restore: `lookback_ms`
        before the partition's last saved clock, or before the oldest finding still in its
        outbox (a quiet partition clears its outbox only at its next batch)."""
        start = now_ms
        for key, value in entries:
            parts = split_key(key)
            if parts is None or value is None:
                continue
            tag = parts[1]
            if tag == CLOCK:
                start = min(start, decode_clock(value)[1])
            elif tag == OUTBOX:
                try:
                    start = min(start, wire.parse_time_ms(orjson.loads(value)["detected_at"]))
                except (KeyError, TypeError, ValueError):
                    continue
        return start - lookback_ms


def published_key(value: bytes | None) -> tuple[str, str] | None:
    """(anomaly_id, status) of a settlewatch.anomalies record, None if it is not one."""
    if not value:
        return None
    try:
        d = orjson.loads(value)
        aid, status = d["anomaly_id"], d["status"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if type(aid) is not str or type(status) is not str:
        return None
    return aid, status


class RateLimitedLog:
    """At most `per_second` lines a second; the rest are counted and summarised."""

    def __init__(self, per_second: int = 10, clock: Callable[[], float] | None = None) -> None:
        import time
        self.per_second = per_second
        self.clock = clock or time.monotonic
        self._window = -1
        self._count = 0
        self._dropped = 0

    def allow(self) -> tuple[bool, int]:
        """(log this one?, lines dropped since the last allowed one)."""
        now = int(self.clock())
        if now != self._window:
            self._window, self._count = now, 0
        if self._count < self.per_second:
            self._count += 1
            dropped, self._dropped = self._dropped, 0
            return True, dropped
        self._dropped += 1
        return False, 0
