"""Audit replay of a time range of the Kafka topics: the same reconciler as live, into files.

    settlewatch replay --bootstrap HOST:PORT --from 2026-10-01T00:00:00Z \\
        --to 2026-10-08T00:00:00Z [--merchant 'M0001*'] [--acquirer acq-t1] \\
        --config settlewatch.toml --out DIR [--compare-live]

writes what file replay writes (DIR/findings.jsonl, deadletter.jsonl, summary.json,
evidence/<anomaly_id>.json), plus settlement_delays.json, report.html (streams.audit.report) and, with
--compare-live, compare_live.json. It reads with kafka-python as a group-less consumer
(`group_id=None`, `assign()`, no commits), so it never joins or moves the live consumer group,
publishes nothing and sends no mail.

Theory of operation
===================

Range. Events whose event_time is in [from, to) count, and findings whose event_time is in
[from, to) are written. The reconciler also sees the *lead-in*, [from - lead_in, from), so
that a sale made before `from` whose credit falls in the range is known; findings of the
lead-in are dropped. The final watermark is `to`: the range closes every item whose deadline +
grace passed before `to`, as the live clock would have at `to`. A dead letter counts when its
Kafka record time is in [from, to).

Offsets. A partition's read starts at an offset looked up by record time
(`offsets_for_times`): the first record stamped at or after from - lead_in - max_future (an
event may be stamped up to max_future after its record time). It ends at the partition's end
offset taken when the replay starts, or earlier once `end_run` records in a row (10,000 by
default) are stamped at or after to + tail (`tail`, 6 h by default, lets an event of the range
that was produced a little late still count): never on one record's timestamp. Record
timestamps are not monotonic: a producer stamping its own clock, or a record sent without a
timestamp and stamped on arrival, can sit in the middle of an older history, and a time look-up
for the end (the first record stamped at or after it) would stop the read there. Every record is
filtered on its event_time, since record time is close to, not equal to, event time. The Kafka
record timestamp is the record time of the future_timestamp rule, as live. summary.json says
per partition and in total how many records were read, how many were in the range, in the
lead-in and outside it, how many the filters dropped, and how many a run past the range left
unread (DESIGN.md "end of a Kafka replay range").

Reconciling per partition, as live. The live worker runs one reconciler per partition number
over partition n of both input topics (co-partitioned by merchant_id); replay does the same, so
each partition's clock is the lower of its own two watermarks, exactly as live. Within a
partition the two topics' records are merged by event time (ties: authorisations first, then
offset order); a bad record keeps the place of the record before it. The merge is a pure
function of the records in the range, so the same topics, range and config give byte-identical
output whatever the fetch timing and however many worker processes share the partitions.
When the two topics have different partition counts (not co-partitioned) every partition is
merged into one reconciler instead.

Output. Each partition writes through its own `streams.replay.ReplayRun` into DIR/.parts/;
the parts are then merged: findings by the reconciler clock at which they became known
(`detected_at`, then partition), dead letters by record time; evidence files are moved, summaries
added up.

Speed. Partitions are shared among worker processes (`workers`, default the number of CPUs), so
that decoding (kafka-python, wire.parse) and reconciling run on every core; memory is bounded by
the reconcilers' open state plus the fetch and merge buffers (a partition that runs ahead of its
partner is paused), not by the length of the range.
"""
from __future__ import annotations

import fnmatch
import heapq
import multiprocessing
import os
import re
import resource
import shutil
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams import wire
from streams.wire import Topics
from streams.audit.delays import DelayObserver, merge_delays
from streams.audit.files import ReplayResult, ReplayRun, merge_aging_summaries
from streams.core.policy import Policy
from streams.kafka_security import from_environment as kafka_security

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEFAULT_LEAD_IN_MS = 2 * DAY_MS
DEFAULT_TAIL_MS = 6 * HOUR_MS
# A partition's read also ends once this many records in a row are stamped past to + tail
# (else at its end offset): never on one record's timestamp, which a producer may get wrong.
DEFAULT_END_RUN = 10_000

# Flow control of the merge: a partition whose buffer holds this many records more than its
# partner is paused until it is drained below the low mark.
_HIGH_WATER = 20_000
_LOW_WATER = 5_000
_POLL_RECORDS = 20_000
# Give up when no partition that still has records to read yields any for this long.
_STALL_S = 120.0

CONSUMER_DEFAULTS: dict[str, Any] = {
    "group_id": None,  # no group: never joins, rebalances or commits to the live group
    "enable_auto_commit": False,
    "client_id": "settlewatch-replay",
    "auto_offset_reset": "none",  # records deleted under us are an error, never skipped
    "max_poll_records": _POLL_RECORDS,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 2 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
    "receive_buffer_bytes": 4 * 1024 * 1024,
    "check_crcs": True,
}


class ReplayError(RuntimeError):
    """The replay cannot run or did not finish (no broker, no topic, a worker failed)."""


@dataclass(frozen=True)
class RangeSpec:
    """What to replay: [from_ms, to_ms) plus the lead-in before it and the tail after it."""

    from_ms: int
    to_ms: int
    lead_in_ms: int = DEFAULT_LEAD_IN_MS
    tail_ms: int = DEFAULT_TAIL_MS
    merchants: tuple[str, ...] = ()
    acquirers: tuple[str, ...] = ()
    end_run: int = DEFAULT_END_RUN

    @property
    def stop_ms(self) -> int:
        """Records stamped at or after this are past the range and its tail."""
        return self.to_ms + self.tail_ms

    @property
    def read_from_ms(self) -> int:
        """Events from here on are fed to the reconciler (the lead-in starts here)."""
        return self.from_ms - self.lead_in_ms

    def keep(self, finding) -> bool:
        return self.from_ms <= finding.event_time_ms < self.to_ms

    def describe(self) -> dict[str, Any]:
        return {"from": wire.format_time_ms(self.from_ms), "to": wire.format_time_ms(self.to_ms),
                "lead_in_from": wire.format_time_ms(self.read_from_ms),
                "tail_to": wire.format_time_ms(self.to_ms + self.tail_ms),
                "end_run": self.end_run,
                "merchants": list(self.merchants), "acquirers": list(self.acquirers)}


def _glob_matcher(globs: Sequence[str]) -> Callable[[str], bool] | None:
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match


class Filter:
    """The --merchant and --acquirer globs (fnmatch, case-sensitive), applied to events before
    they reach the reconciler. A dead letter has no trustworthy fields: it is kept when its
    record key (the merchant_id, by contract) matches the merchant globs and no acquirer glob
    is given."""

    def __init__(self, merchants: Sequence[str], acquirers: Sequence[str]) -> None:
        self.merchant = _glob_matcher(merchants)
        self.acquirer = _glob_matcher(acquirers)
        self.active = self.merchant is not None or self.acquirer is not None

    def event(self, e) -> bool:
        return ((self.merchant is None or self.merchant(e.merchant_id) is not None)
                and (self.acquirer is None or self.acquirer(e.acquirer) is not None))

    def finding(self, d: dict) -> bool:
        return ((self.merchant is None or self.merchant(d.get("merchant_id") or "") is not None)
                and (self.acquirer is None or self.acquirer(d.get("acquirer") or "") is not None))

    def reject(self, key: bytes | None) -> bool:
        if self.acquirer is not None:
            return False
        if self.merchant is None:
            return True
        try:
            return key is not None and self.merchant(key.decode()) is not None
        except UnicodeDecodeError:
            return False


# ---- planning ------------------------------------------------------------------------------


@dataclass
class Stream:
    """One topic-partition to read, [start, end) in offsets."""

    index: int  # position in the plan, for progress counters
    topic: str
    partition: int
    wire_topic: str  # wire.AUTH_TOPIC or wire.SETTLEMENT_TOPIC: how records are parsed
    start: int
    end: int

    @property
    def records(self) -> int:
        return max(self.end - self.start, 0)


@dataclass
class Group:
    """Streams merged into one reconciler: partition n of both inputs (or everything)."""

    index: int
    name: str  # "p3", or "all"
    streams: list[Stream]

    @property
    def records(self) -> int:
        return sum(s.records for s in self.streams)


@dataclass
class Plan:
    groups: list[Group]
    warnings: list[str] = field(default_factory=list)

    @property
    def streams(self) -> list[Stream]:
        return [s for g in self.groups for s in g.streams]

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.streams:
            out[s.topic] = out.get(s.topic, 0) + s.records
        return out


def _consumer(bootstrap: str, overrides: dict[str, Any] | None = None):
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError
    config = {**CONSUMER_DEFAULTS, **(overrides or {})}
    if config.get("group_id") is not None:
        raise ReplayError("replay never joins a consumer group (group_id must be None)")
    try:
        return KafkaConsumer(bootstrap_servers=bootstrap,
                             **{**kafka_security().kafka_python(), **config})
    except KafkaError as exc:
        raise ReplayError(f"no Kafka broker answers at {bootstrap} ({exc})") from exc


def lookup_offsets(consumer, tps: list, at_ms: int) -> dict:
    """First offset with record time >= at_ms per partition; the end offset when there is none
    (offsets_for_times gives None then: nothing at or after that time)."""
    found = consumer.offsets_for_times({tp: max(at_ms, 0) for tp in tps})
    ends = consumer.end_offsets(tps)
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


def make_plan(consumer, topics: Topics, spec: RangeSpec, max_future_ms: int) -> Plan:
    """Where each partition's read starts (a time look-up) and ends (its end offset now)."""
    from kafka import TopicPartition
    counts = {}
    for name in (topics.authorisations, topics.settlements):
        parts = consumer.partitions_for_topic(name)
        if not parts:
            raise ReplayError(f"topic {name} does not exist (or has no partitions)")
        counts[name] = sorted(parts)
    tps = [TopicPartition(t, p) for t in counts for p in counts[t]]
    # An event may be stamped up to max_future after its record time: look that much earlier.
    start = lookup_offsets(consumer, tps, spec.read_from_ms - max_future_ms)
    # The end is the end offset now, never a time look-up: record timestamps are not monotonic,
    # so the first record stamped after the range can sit in the middle of it.
    ends = consumer.end_offsets(tps)
    wire_topic = {topics.authorisations: wire.AUTH_TOPIC, topics.settlements: wire.SETTLEMENT_TOPIC}
    streams = {(tp.topic, tp.partition): Stream(n, tp.topic, tp.partition, wire_topic[tp.topic],
                                                start[tp], max(ends[tp], start[tp]))
               for n, tp in enumerate(tps)}
    warnings = _plan_warnings(consumer, tps, spec, start)
    a, s = counts[topics.authorisations], counts[topics.settlements]
    if a == s:
        groups = [Group(i, f"p{p}", [streams[(topics.authorisations, p)],
                                     streams[(topics.settlements, p)]])
                  for i, p in enumerate(a)]
    else:
        warnings.append(f"{topics.authorisations} has {len(a)} partitions and "
                        f"{topics.settlements} {len(s)}: not co-partitioned, so one reconciler "
                        "takes every partition (the live worker refuses such topics)")
        groups = [Group(0, "all", [streams[(tp.topic, tp.partition)] for tp in tps])]
    return Plan(groups, warnings)


def _plan_warnings(consumer, tps: list, spec: RangeSpec, start: dict) -> list[str]:
    warnings = []
    stop_ms = spec.to_ms + spec.tail_ms
    past = consumer.offsets_for_times({tp: stop_ms for tp in tps})
    open_ended = [tp for tp in tps if past.get(tp) is None]
    if open_ended:
        warnings.append(
            f"{len(open_ended)} partitions hold no record stamped after "
            f"{wire.format_time_ms(stop_ms)} yet: read to their current end, "
            "so a later replay of this range may see records produced since")
    beginning = consumer.beginning_offsets(tps)
    gaps = [f"{tp.topic}[{tp.partition}]" for tp in tps
            if beginning[tp] > 0 and start[tp] == beginning[tp]]
    if gaps:
        warnings.append(
            "retention: records older than the range start were deleted on "
            + ", ".join(gaps) + "; the range may have lost records (check retention.ms)")
    return warnings


# ---- settlement delays ---------------------------------------------------------------------


# ---- reading -------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """Peak resident memory of this process image (VmHWM; getrusage's ru_maxrss would also
    count the memory of the process that exec'd this one)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Reader:
    """Reads some groups' streams with one kafka-python consumer and feeds their ReplayRuns.

    Runs in a worker process (or in the caller's, with one worker).
    """

    def __init__(self, bootstrap: str, groups: list[Group], spec: RangeSpec, policy: Policy,
                 parts_dir: Path, counters, consumer_config: dict[str, Any] | None,
                 on_poll: Callable[[], None] | None = None, evidence: bool = True) -> None:
        self.bootstrap = bootstrap
        self.evidence = evidence
        self.groups = groups
        self.spec = spec
        self.policy = policy
        self.parts_dir = parts_dir
        self.counters = counters
        self.consumer_config = consumer_config
        self.on_poll = on_poll
        self.stats = {"records": 0, "poll_s": 0.0, "parse_s": 0.0, "reconcile_s": 0.0,
                      "finish_s": 0.0}
        self.filter = Filter(spec.merchants, spec.acquirers)
        self.state: dict[int, _StreamState] = {}  # by stream index
        self.group_of: dict[int, Group] = {}
        self.runs: dict[int, ReplayRun] = {}
        self.observers: dict[int, DelayObserver] = {}

    def run(self) -> dict[str, Any]:
        from kafka import TopicPartition
        spec = self.spec
        for g in self.groups:
            obs = DelayObserver(spec.from_ms, spec.to_ms)
            run = ReplayRun(self.policy, self.parts_dir / g.name, keep=spec.keep, observer=obs,
                            evidence=self.evidence)
            obs.reconciler = run.reconciler
            self.runs[g.index], self.observers[g.index] = run, obs
        by_tp = {}
        for g in self.groups:
            for s in g.streams:
                self.state[s.index] = _StreamState(s)
                self.group_of[s.index] = g
                if s.records:
                    by_tp[TopicPartition(s.topic, s.partition)] = s
        consumer = _consumer(self.bootstrap, self.consumer_config) if by_tp else None
        try:
            if consumer is not None:
                consumer.assign(list(by_tp))
                for tp, s in by_tp.items():
                    consumer.seek(tp, s.start)
                self._loop(consumer, by_tp)
            for g in self.groups:  # streams with nothing to read, and the last records
                self._drain(g)
        finally:
            if consumer is not None:
                consumer.close()
        self.stats["records"] = sum(st.read for st in self.state.values())
        self._finish()
        return self.stats

    def _finish(self) -> None:
        """Close every group's ReplayRun at the end of the range; write its delays and what
        each of its partitions read (DIR/.parts/<group>/read.json)."""
        t0 = time.perf_counter()
        for g in self.groups:
            self.runs[g.index].finish(self.spec.to_ms)
            part = self.parts_dir / g.name
            (part / "delays.json").write_bytes(orjson.dumps(self.observers[g.index].to_dict()))
            (part / "read.json").write_bytes(orjson.dumps(
                {f"{s.topic}[{s.partition}]": self.state[s.index].counts() for s in g.streams}))
        self.stats["finish_s"] += time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.stats["peak_rss_mb"] = round(peak_rss_bytes() / 2**20, 1)
        self.stats["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)

    def _loop(self, consumer, by_tp: dict) -> None:
        """Poll until every partition is done: parse, merge and reconcile as records come."""
        stats, perf, state = self.stats, time.perf_counter, self.state
        pending = set(by_tp)
        assigned = set(pending)  # the caller assigned and positioned them all
        last_progress = time.monotonic()
        while pending:
            t0 = perf()
            polled = consumer.poll(timeout_ms=500)
            t1 = perf()
            stats["poll_s"] += t1 - t0
            touched = set()
            for tp, records in polled.items():
                st = state[by_tp[tp].index]
                if not st.done:
                    self._take(st, records)
                    touched.add(self.group_of[st.stream.index].index)
            t2 = perf()
            stats["parse_s"] += t2 - t1
            if polled:
                last_progress = time.monotonic()
            else:
                touched |= self._ended_without_records(consumer, by_tp, pending, assigned)
                if time.monotonic() - last_progress > _STALL_S:
                    raise ReplayError(
                        f"no records for {_STALL_S:.0f}s from "
                        + ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending)))
            for g in self.groups:
                if g.index in touched:
                    self._drain(g)
            stats["reconcile_s"] += perf() - t2
            assigned = self._flow_control(consumer, by_tp, pending, assigned)
            if self.on_poll is not None:
                self.on_poll()

    def _take(self, st: _StreamState, records) -> None:
        """Parse one partition's polled records into its merge buffer, counting what was read.

        The read of a partition ends at its end offset, or once `spec.end_run` records in a
        row are stamped at or after to + tail (DESIGN.md "end of a Kafka replay range")."""
        spec, s = self.spec, st.stream
        parse, reject_type = wire.parse, wire.Reject
        max_future = self.policy.max_future_ms
        lo, mid, to, stop_ms, end_run = (spec.read_from_ms, spec.from_ms, spec.to_ms,
                                         spec.stop_ms, spec.end_run)
        event_ok = self.filter.event if self.filter.active else None
        reject_ok = self.filter.reject
        buf, last, end, wt = st.buf, st.last_key, s.end, s.wire_topic
        run, lead_in, filtered, before = st.run, 0, 0, len(buf)
        off = -1
        for r in records:
            off = r.offset
            if off >= end:
                break
            ts = r.timestamp
            if ts is None or ts < 0:
                ts = to  # a record without a time: judged against the end of the range
            run = run + 1 if ts >= stop_ms else 0
            e = parse(wt, r.value, ts, max_future)
            if type(e) is reject_type:
                if mid <= ts < to:
                    if reject_ok(r.key):
                        buf.append((last, 1, e, off, ts))
                    else:
                        filtered += 1
            else:
                t = e.event_time_ms
                last = t
                if lo <= t < to:
                    if event_ok is None or event_ok(e):
                        buf.append((t, 0, e, off, ts))
                        if t < mid:
                            lead_in += 1
                    else:
                        filtered += 1
            if run >= end_run:
                st.stopped_at = off + 1  # a run of records past the range: the rest is later
                break
        st.last_key, st.run = last, run
        st.kept += len(buf) - before
        st.lead_in += lead_in
        st.filtered += filtered
        if off >= 0:
            st.next_offset = min(off + 1, end)
            st.read = st.next_offset - s.start
            self.counters[s.index] = st.read
        if st.next_offset >= end or st.stopped_at is not None:
            st.done = True
            self.counters[s.index] = s.records

    def _ended_without_records(self, consumer, by_tp, pending, assigned) -> set[int]:
        """Control records or compaction gaps can end a partition without a record: mark the
        partitions whose position reached their end; the groups touched."""
        touched = set()
        for tp in list(pending):
            s = by_tp[tp]
            st = self.state[s.index]
            if tp in assigned and not st.done and consumer.position(tp) >= s.end:
                st.done = True
                st.next_offset = s.end
                st.read = s.records
                self.counters[s.index] = s.records
                touched.add(self.group_of[s.index].index)
        return touched

    def _flow_control(self, consumer, by_tp, pending: set, assigned: set) -> set:
        """Stop fetching what is done or too far ahead of its partner; the new assignment.

        By assignment, not pause(): kafka-python 3.0.12 can strand a paused partition's parked
        records so that it never fetches again after resume()."""
        wanted = []
        for tp in list(pending):
            st = self.state[by_tp[tp].index]
            if st.done:
                pending.discard(tp)
                continue
            if not st.paused and len(st.buf) > _HIGH_WATER:
                st.paused = True
            elif st.paused and len(st.buf) < _LOW_WATER:
                st.paused = False
            if not st.paused:
                wanted.append(tp)
        if pending and not wanted:  # cannot be with a partner to drain; never stall on it
            for tp in pending:
                self.state[by_tp[tp].index].paused = False
            wanted = list(pending)
        wanted_set = set(wanted)
        if wanted_set != assigned:
            consumer.assign(sorted(wanted_set))
            for tp in wanted_set - assigned:
                consumer.seek(tp, self.state[by_tp[tp].index].next_offset)
        return wanted_set

    def _drain(self, g: Group) -> None:
        """Feed the group's reconciler every record the merge can place now."""
        states = [self.state[s.index] for s in g.streams]
        run = self.runs[g.index]
        if len(states) == 2:
            _merge2(states[0], states[1], run)
        else:
            _merge_k(states, run)


class _StreamState:
    __slots__ = ("stream", "buf", "last_key", "done", "paused", "next_offset", "run", "read",
                 "kept", "lead_in", "filtered", "stopped_at")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buf: list[tuple] = []  # (key, 0, event, offset, ts) | (key, 1, reject, offset, ts)
        self.last_key = -(1 << 62)  # a bad first record sorts first
        self.done = stream.records == 0
        self.paused = False
        self.next_offset = stream.start
        self.run = 0  # records in a row stamped past to + tail
        self.read = 0  # records read
        self.kept = 0  # of them, events and dead letters of the range and lead-in
        self.lead_in = 0  # of the kept events, those of the lead-in
        self.filtered = 0  # in the range by time, dropped by --merchant/--acquirer
        self.stopped_at: int | None = None  # the offset where a run past the range ended it

    def counts(self) -> dict[str, Any]:
        s = self.stream
        return {"start": s.start, "end": s.end, "read": self.read,
                "in_range": self.kept - self.lead_in, "lead_in": self.lead_in,
                "filtered_out": self.filtered,
                "outside_range": self.read - self.kept - self.filtered,
                "stopped_by_run_at": self.stopped_at,
                "not_read": s.end - s.start - self.read}


def _feed(x: tuple, st: _StreamState, run: ReplayRun) -> None:
    if x[1] == 0:
        run.event(x[2])
    else:
        s = st.stream
        run.reject(x[2], s.topic, s.partition, x[3], x[4])


def _merge2(a_st: _StreamState, c_st: _StreamState, run: ReplayRun) -> None:
    """Two-way merge by key (ties: the first stream), as far as both heads are known."""
    a, c = a_st.buf, c_st.buf
    na, nc = len(a), len(c)
    a_done, c_done = a_st.done, c_st.done
    event = run.event
    i = j = 0
    while True:
        if i < na:
            if j < nc:
                if a[i][0] <= c[j][0]:
                    x, st = a[i], a_st
                    i += 1
                else:
                    x, st = c[j], c_st
                    j += 1
            elif c_done:
                x, st = a[i], a_st
                i += 1
            else:
                break
        elif j < nc and a_done:
            x, st = c[j], c_st
            j += 1
        else:
            break
        if x[1] == 0:
            event(x[2])
        else:
            _feed(x, st, run)
    if i:
        del a[:i]
    if j:
        del c[:j]


def _merge_k(states: list[_StreamState], run: ReplayRun) -> None:
    """k-way merge by (key, stream position), as far as every unfinished stream's head is known."""
    pos = [0] * len(states)
    while True:
        best = -1
        best_key = None
        for n, st in enumerate(states):
            if pos[n] < len(st.buf):
                key = st.buf[pos[n]][0]
                if best < 0 or key < best_key:
                    best, best_key = n, key
            elif not st.done:
                best = -2
                break
        if best < 0:
            break
        st = states[best]
        _feed(st.buf[pos[best]], st, run)
        pos[best] += 1
    for n, st in enumerate(states):
        if pos[n]:
            del st.buf[:pos[n]]


# ---- workers -------------------------------------------------------------------------------


def _assign(groups: list[Group], workers: int) -> list[list[Group]]:
    """Share groups among workers, biggest first to the least loaded (deterministic)."""
    loads = [[0, n, []] for n in range(workers)]
    for g in sorted(groups, key=lambda g: (-g.records, g.index)):
        least = min(loads, key=lambda x: (x[0], x[1]))
        least[0] += g.records
        least[2].append(g)
    return [sorted(x[2], key=lambda g: g.index) for x in loads if x[2]]


def _worker_main(bootstrap, groups, spec, policy, parts_dir, counters, consumer_config,
                 worker_no, evidence) -> None:
    try:
        from streams.runtime import tune_gc
        tune_gc()
        stats = _Reader(bootstrap, groups, spec, policy, parts_dir, counters,
                        consumer_config, evidence=evidence).run()
        (parts_dir / f"worker{worker_no}.json").write_bytes(orjson.dumps(stats))
    except BaseException:  # reported by the parent with this traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


# ---- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr: records read per topic, rate and time left.

    Quiet unless `enabled` (default: stderr is a terminal)."""

    def __init__(self, plan: Plan, counters, enabled: bool | None = None, stream=None,
                 interval_s: float = 0.25) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.plan = plan
        self.counters = counters
        self.totals = plan.totals()
        self.total = sum(self.totals.values())
        self.started = time.monotonic()
        self.interval_s = interval_s
        self._next = 0.0
        self._width = 0

    def read(self) -> dict[str, int]:
        out = {t: 0 for t in self.totals}
        for s in self.plan.streams:
            out[s.topic] += min(int(self.counters[s.index]), s.records)
        return out

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.interval_s
        self.stream.write("\r" + self.render(self.read(), now - self.started))
        self.stream.flush()

    def render(self, done: dict[str, int], elapsed_s: float) -> str:
        n = sum(done.values())
        frac = n / self.total if self.total else 1.0
        bar = "#" * int(frac * 20)
        rate = n / elapsed_s if elapsed_s > 0 else 0.0
        left = (self.total - n) / rate if rate > 0 else None
        parts = [f"{t} {done[t]:,}/{self.totals[t]:,}" for t in self.totals]
        eta = "--:--" if left is None else f"{int(left) // 60}:{int(left) % 60:02d}"
        line = (f"replay [{bar:<20}] {frac:4.0%}  " + "  ".join(parts)
                + f"  {rate:,.0f} ev/s  {eta} left")
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        return line + " " * pad

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()


# ---- merging the parts ---------------------------------------------------------------------


def _keyed_lines(path: Path, key: Callable[[dict], tuple], part: int):
    with open(path, "rb") as fh:
        for n, line in enumerate(fh):
            yield (*key(orjson.loads(line)), part, n, line)


def _merge_parts(out: Path, parts_dir: Path, plan: Plan, spec: RangeSpec) -> dict[str, Any]:
    names = [g.name for g in plan.groups]
    with open(out / "findings.jsonl", "wb") as fh:
        merged = heapq.merge(*[
            _keyed_lines(parts_dir / name / "findings.jsonl",
                         lambda d: (wire.parse_time_ms(d["detected_at"]),), i)
            for i, name in enumerate(names)])
        for *_, line in merged:
            fh.write(line)
    topic_rank = {s.topic: n for n, s in enumerate(plan.streams)}
    with open(out / "deadletter.jsonl", "wb") as fh:
        merged = heapq.merge(*[
            _keyed_lines(parts_dir / name / "deadletter.jsonl",
                         lambda d: (wire.parse_time_ms(d["record_time"]) if d.get("record_time")
                                    else 0, topic_rank.get(d["topic"], 0), d["partition"],
                                    d["offset"]), i)
            for i, name in enumerate(names)])
        for *_, line in merged:
            fh.write(line)
    evidence = out / "evidence"
    if evidence.exists():
        shutil.rmtree(evidence)
    evidence.mkdir()
    for name in names:
        if not (parts_dir / name / "evidence").is_dir():
            continue
        for f in sorted((parts_dir / name / "evidence").glob("*.json")):
            os.replace(f, evidence / f.name)
    summary: dict[str, Any] = {"events_read": 0, "events_valid": 0, "rejected": 0,
                               "rejected_by_reason": Counter(), "findings": 0,
                               "findings_by_kind": Counter(), "late_data": 0, "redeliveries": 0,
                               "missing_expired": 0}
    agings = []
    for name in names:
        part = orjson.loads((parts_dir / name / "summary.json").read_bytes())
        if "aging" in part:
            agings.append(part.pop("aging"))
        for k, v in part.items():
            if isinstance(v, dict):
                summary[k].update(v)
            elif isinstance(v, int) and k in summary:
                summary[k] += v
    summary["rejected_by_reason"] = dict(sorted(summary["rejected_by_reason"].items()))
    summary["findings_by_kind"] = dict(sorted(summary["findings_by_kind"].items()))
    summary["until"] = wire.format_time_ms(spec.to_ms)
    merged_aging = merge_aging_summaries(agings)
    if merged_aging is not None:
        summary["aging"] = merged_aging
    delays = merge_delays([orjson.loads((parts_dir / n / "delays.json").read_bytes())
                           for n in names])
    (out / "settlement_delays.json").write_bytes(
        orjson.dumps(delays, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


# ---- comparing with the live monitor -------------------------------------------------------


def read_live_findings(bootstrap: str, topic: str, spec: RangeSpec, max_future_ms: int,
                       consumer_config: dict[str, Any] | None = None) -> tuple[list[dict], int]:
    """Findings the live worker published on `topic` whose event_time is in the range (and that
    pass the filters), in topic order; and the number of records that were not findings.

    Read from the first record stamped at or after from - lead_in (a finding is published when
    it becomes known, after its event time) to the end offsets at the start of the read."""
    from kafka import TopicPartition
    filt = Filter(spec.merchants, spec.acquirers)
    consumer = _consumer(bootstrap, consumer_config)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise ReplayError(f"topic {topic} does not exist (or has no partitions)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        start = lookup_offsets(consumer, tps, spec.read_from_ms - max_future_ms)
        ends = consumer.end_offsets(tps)
        todo = {tp: ends[tp] for tp in tps if start[tp] < ends[tp]}
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, start[tp])
        found: dict[Any, list] = {tp: [] for tp in tps}
        bad = 0
        stalled_since = time.monotonic()
        while todo:
            polled = consumer.poll(timeout_ms=500)
            for tp, records in polled.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for r in records:
                    if r.offset >= end:
                        break
                    try:
                        d = orjson.loads(r.value)
                        f = wire.finding_from_dict(d)
                    except (ValueError, KeyError, TypeError):
                        bad += 1
                        continue
                    if spec.from_ms <= f.event_time_ms < spec.to_ms and filt.finding(d):
                        found[tp].append(wire.finding_to_dict(f))
            if polled:
                stalled_since = time.monotonic()
            for tp in list(todo):
                if consumer.position(tp) >= todo[tp]:
                    del todo[tp]
            if todo and time.monotonic() - stalled_since > _STALL_S:
                raise ReplayError(f"no records from {topic} for {_STALL_S:.0f}s")
    finally:
        consumer.close()
    return [d for tp in tps for d in found[tp]], bad


def compare_findings(replay: list[dict], live: list[dict]) -> dict[str, Any]:
    """Compare by (anomaly_id, status, kind), ignoring detected_at (and every other field)."""
    def key(d: dict) -> tuple[str, str, str]:
        return d["anomaly_id"], d["status"], d["kind"]

    def order(d: dict) -> tuple:
        return wire.parse_time_ms(d["event_time"]), d["anomaly_id"], d["status"]

    r = {key(d): d for d in replay}
    live_first: dict[tuple, dict] = {}
    for d in live:
        live_first.setdefault(key(d), d)
    missed = sorted((r[k] for k in r.keys() - live_first.keys()), key=order)
    extra = sorted((live_first[k] for k in live_first.keys() - r.keys()), key=order)
    return {"replay_findings": len(r), "live_findings": len(live_first),
            "live_records": len(live), "agree": len(r.keys() & live_first.keys()),
            "missed_by_live": missed, "not_in_replay": extra}


# ---- the whole replay ----------------------------------------------------------------------


@dataclass
class KafkaReplayResult(ReplayResult):
    records: int = 0  # Kafka records read
    workers: int = 1
    compare: dict[str, Any] | None = None
    report: Path | None = None
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # summary.json's kafka.records

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())) or "none"
        rate = self.records / self.seconds if self.seconds else 0
        c = self.counts
        where = (f" ({c.get('in_range', 0):,} in range, {c.get('lead_in', 0):,} in the lead-in, "
                 f"{c.get('outside_range', 0):,} outside)") if c else ""
        lines = [f"read {self.records:,} records{where}, {self.events:,} events and dead "
                 f"letters reconciled ({self.rejected} rejected), {self.findings} findings: "
                 f"{kinds}; {rate:,.0f} records/s with {self.workers} workers; out {self.out_dir}"]
        if self.compare is not None:
            c = self.compare
            lines.append(f"live monitor: {c['agree']} findings agree, "
                         f"{len(c['missed_by_live'])} missed by live, "
                         f"{len(c['not_in_replay'])} reported live but not by replay "
                         f"({self.out_dir / 'compare_live.json'})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def replay_kafka(policy: Policy, bootstrap: str, from_ms: int, to_ms: int,
                 out_dir: str | os.PathLike[str], *, merchants: Sequence[str] = (),
                 acquirers: Sequence[str] = (), lead_in_ms: int = DEFAULT_LEAD_IN_MS,
                 tail_ms: int = DEFAULT_TAIL_MS, end_run: int = DEFAULT_END_RUN,
                 topics: Topics = Topics(), workers: int | None = None,
                 compare_live: bool = False, report: bool = True, progress: bool | None = None,
                 consumer_config: dict[str, Any] | None = None, config_name: str | None = None,
                 evidence: bool = True) -> KafkaReplayResult:
    """Replay [from_ms, to_ms) of the topics into `out_dir`; see the module docstring."""
    if to_ms <= from_ms:
        raise ReplayError("--to must be after --from")
    if lead_in_ms < 0 or tail_ms < 0:
        raise ReplayError("lead-in and tail must not be negative")
    if end_run < 2:
        raise ReplayError("the end run must be at least 2 records: a read never ends on one "
                          "record's timestamp")
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = RangeSpec(from_ms, to_ms, lead_in_ms, tail_ms, tuple(merchants), tuple(acquirers),
                     end_run)
    plan = _plan_range(bootstrap, consumer_config, topics, spec, policy.max_future_ms)
    parts_dir = _fresh_parts_dir(out)
    workers = max(1, min(workers or os.cpu_count() or 1,
                         len([g for g in plan.groups if g.records]) or 1))
    worker_stats = _read_plan(bootstrap, plan, spec, policy, parts_dir, consumer_config,
                              workers, progress, evidence)
    summary = _merge_parts(out, parts_dir, plan, spec)
    summary["kafka"] = _kafka_summary(plan, spec, topics, parts_dir)
    if config_name:
        summary["config"] = config_name
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    shutil.rmtree(parts_dir)
    counts = summary["kafka"]["records"]
    result = KafkaReplayResult(
        out, events=summary["events_read"], rejected=summary["rejected"],
        findings=summary["findings"], by_kind=Counter(summary["findings_by_kind"]),
        by_reason=Counter(summary["rejected_by_reason"]), until_ms=to_ms,
        records=counts["read"], workers=workers, warnings=list(plan.warnings),
        worker_stats=worker_stats, counts=counts)
    if compare_live:
        result.compare = _compare_live(out, bootstrap, topics, spec, policy, consumer_config)
    if report:
        from streams.audit.report import write_report
        result.report = write_report(out)
    result.seconds = time.perf_counter() - started
    return result


def _plan_range(bootstrap: str, consumer_config, topics: Topics, spec: RangeSpec,
                max_future_ms: int) -> Plan:
    from kafka.errors import KafkaError
    consumer = _consumer(bootstrap, consumer_config)
    try:
        return make_plan(consumer, topics, spec, max_future_ms)
    except KafkaError as exc:
        raise ReplayError(f"looking up the offsets of the range failed: {exc}") from exc
    finally:
        consumer.close()


def _fresh_parts_dir(out: Path) -> Path:
    """DIR/.parts, empty; and no output of an earlier run into DIR that this one may not write."""
    parts_dir = out / ".parts"
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir()
    for stale in ("compare_live.json", "report.html"):
        (out / stale).unlink(missing_ok=True)
    return parts_dir


def _read_plan(bootstrap: str, plan: Plan, spec: RangeSpec, policy: Policy, parts_dir: Path,
               consumer_config, workers: int, progress: bool | None,
               evidence: bool) -> list[dict[str, Any]]:
    """Read every group into DIR/.parts: in this process with one worker, else in `workers`
    forked processes; each reader's stats."""
    if workers == 1:
        counters = [0] * len(plan.streams)
        bar = Progress(plan, counters, progress)
        stats = _Reader(bootstrap, plan.groups, spec, policy, parts_dir, counters,
                        consumer_config, on_poll=bar.update, evidence=evidence).run()
        bar.close()
        return [stats]
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", len(plan.streams), lock=False)
    bar = Progress(plan, counters, progress)
    procs = [ctx.Process(target=_worker_main, name=f"settlewatch-replay-{n}", daemon=True,
                         args=(bootstrap, share, spec, policy, parts_dir, counters,
                               consumer_config, n, evidence))
             for n, share in enumerate(_assign(plan.groups, workers))]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            _raise_if_failed([p for p in procs if p.exitcode not in (None, 0)])
            bar.update()
            next(p for p in procs if p.is_alive() or p is procs[-1]).join(timeout=0.1)
        _raise_if_failed([p for p in procs if p.exitcode != 0])
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    bar.close()
    return [orjson.loads((parts_dir / f"worker{n}.json").read_bytes()) for n in range(len(procs))]


def _raise_if_failed(failed: list) -> None:
    if failed:
        raise ReplayError(f"replay worker {failed[0].name} failed "
                          f"(exit {failed[0].exitcode}); its error is above")


def _kafka_summary(plan: Plan, spec: RangeSpec, topics: Topics, parts_dir: Path) -> dict:
    """summary.json's "kafka": the range, the offsets, and what was read where."""
    partitions: dict[str, dict[str, Any]] = {}
    for g in plan.groups:
        partitions.update(orjson.loads((parts_dir / g.name / "read.json").read_bytes()))
    names = [f"{s.topic}[{s.partition}]" for s in plan.streams]
    total = {k: sum(partitions[n][k] for n in names)
             for k in ("read", "in_range", "lead_in", "outside_range", "filtered_out",
                       "not_read")}
    records = {
        "read": total["read"],
        "in_range": total["in_range"],
        "lead_in": total["lead_in"],
        "outside_range": total["outside_range"],
        "filtered_out": total["filtered_out"],
        # The end of a read is the end offset taken at the start, never a time look-up, so a
        # look-up skips no record before it (the start look-up skips only records stamped
        # before the lead-in); a run of records past the range leaves the rest unread.
        "skipped_by_end_lookup": 0,
        "not_read_after_end_run": total["not_read"],
    }
    return {
        "range": spec.describe(),
        "topics": {"authorisations": topics.authorisations, "settlements": topics.settlements},
        "reconcilers": [g.name for g in plan.groups],
        "offsets": {f"{s.topic}[{s.partition}]": [s.start, s.end] for s in plan.streams},
        "records_in_offsets": sum(s.records for s in plan.streams),
        "records": records,
        "partitions": {n: partitions[n] for n in names},
        "warnings": plan.warnings,
    }


def _compare_live(out: Path, bootstrap: str, topics: Topics, spec: RangeSpec, policy: Policy,
                  consumer_config) -> dict[str, Any]:
    """Read the live findings of the range and write DIR/compare_live.json."""
    replay_findings = [orjson.loads(line) for line in
                       (out / "findings.jsonl").read_bytes().splitlines()]
    live, unreadable = read_live_findings(bootstrap, topics.anomalies, spec,
                                          policy.max_future_ms, consumer_config)
    compare = compare_findings(replay_findings, live)
    compare = {"anomalies_topic": topics.anomalies, "range": spec.describe(),
               "compared_by": ["anomaly_id", "status", "kind"],
               "unreadable_live_records": unreadable, **compare}
    (out / "compare_live.json").write_bytes(
        orjson.dumps(compare, option=orjson.OPT_INDENT_2) + b"\n")
    return compare


def replay_kafka_cli(*, policy: Policy, bootstrap: str, from_ms: int | None, to_ms: int | None,
                     out_dir: str, merchants: Sequence[str] = (), acquirers: Sequence[str] = (),
                     lead_in: str = "2d", compare_live: bool = False, report: bool = True,
                     progress: bool | None = None, end_run: int = DEFAULT_END_RUN,
                     **kwargs: Any) -> KafkaReplayResult:
    """`settlewatch replay --bootstrap ...`: check the options, run, turn errors into messages."""
    import click

    from streams.core.policy import PolicyError, parse_duration_ms
    if from_ms is None or to_ms is None:
        raise click.UsageError("a Kafka replay needs --from and --to (RFC 3339)")
    try:
        lead_in_ms = parse_duration_ms(lead_in, "--lead-in")
    except PolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--lead-in") from exc
    try:
        return replay_kafka(policy, bootstrap, from_ms, to_ms, out_dir, merchants=merchants,
                            acquirers=acquirers, lead_in_ms=lead_in_ms, compare_live=compare_live,
                            report=report, progress=progress, end_run=end_run, **kwargs)
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
