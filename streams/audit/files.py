"""Replay: run recorded events through the same reconciler as the live worker, into files.

    settlewatch replay --config settlewatch.toml --input auths.jsonl --input credits.jsonl \\
        [--until 2026-10-20T00:00:00Z] --out DIR

writes DIR/findings.jsonl (contract anomaly records, one a line, in the order they became
known), DIR/deadletter.jsonl, DIR/summary.json and DIR/evidence/<anomaly_id>.json. Output is
byte-identical for the same input and config: `detected_at` is the reconciler's event-time
clock, and nothing written depends on the wall clock. `--until` is the final watermark (default:
the last event time), so the end of a file closes every item whose deadline + grace it passes,
as the live clock would.

Each input file holds the events of one topic, one JSON object a line, in event-time order
within the policy's lateness; the topic a file is read as is the one most of its lines' parsed
`type` belongs to (`file_topic`), so a line of the other topic in it is `wrong_topic`. Files are
merged by event time, as the two topics are merged live. A line that is not a valid event is a
dead letter with its topic and file (`pos.authorisations:auths.jsonl`, never the path as typed)
and its line number; it never stops the run and steers nothing: not the merge, not a clock.
The record time of the future_timestamp rule is the files' own event-time progress around the
line (`_judged_lines`), never the wall clock. The Kafka range replay (streams.audit.kafka)
feeds the same `ReplayRun`.
"""
from __future__ import annotations

import heapq
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streams import wire
from streams.audit.evidence import _evidence_for_people
from streams.core import aging
from streams.core.events import (
    AUTHORISATION,
    REFUND,
    REVERSAL,
    SETTLEMENT_CREDIT,
    SETTLEMENT_FILE_COMPLETE,
    Finding,
)
from streams.core.policy import Policy
from streams.core.reconcile import Reconciler

@dataclass
class ReplayResult:
    out_dir: Path
    events: int = 0
    rejected: int = 0
    findings: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)
    until_ms: int | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())) or "none"
        rate = self.events / self.seconds if self.seconds else 0
        return "\n".join(
            [f"read {self.events} events ({self.rejected} rejected), "
             f"{self.findings} findings: {kinds}; {rate:,.0f} events/s; out {self.out_dir}"]
            + [f"warning: {w}" for w in self.warnings])


class ReplayRun:
    """One replay: records in, findings and dead letters out to `out_dir` as they happen.

    `keep(finding)` chooses what is written (Kafka range replay drops findings of the lead-in);
    the reconciler sees every valid event regardless.
    """

    def __init__(self, policy: Policy, out_dir: str | os.PathLike[str], *,
                 evidence: bool = True, keep=None, observer=None) -> None:
        self.policy = policy
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # observer: a streams.core.reconcile.Observer (Kafka replay collects settlement delays)
        self.reconciler = Reconciler(policy, observer, aging=True)
        self.keep = keep
        self.evidence_dir = self.out_dir / "evidence" if evidence else None
        if self.evidence_dir is not None:
            self.evidence_dir.mkdir(exist_ok=True)
            for old in self.evidence_dir.glob("*.json"):
                old.unlink()
        self._findings = open(self.out_dir / "findings.jsonl", "wb")
        self._deadletters = open(self.out_dir / "deadletter.jsonl", "wb")
        self.result = ReplayResult(self.out_dir)
        self.last_event_ms: int | None = None
        self._started = time.perf_counter()

    def record(self, topic: str, raw: bytes, record_time_ms: int, partition: int | None,
               offset: int | None, source: str | None = None) -> wire.PosEvent | wire.Credit | None:
        """Parse one record and reconcile it; a bad one becomes a dead letter."""
        event = wire.parse(topic, raw, record_time_ms, self.policy.max_future_ms)
        if type(event) is wire.Reject:
            self.reject(event, source or topic, partition, offset)
            return None
        self.event(event)
        return event

    def event(self, event) -> None:
        self.result.events += 1
        t = event.event_time_ms
        if self.last_event_ms is None or t > self.last_event_ms:
            self.last_event_ms = t
        findings = self.reconciler.on_event(event)
        if findings:
            self._write(findings)

    def reject(self, reject: wire.Reject, topic: str, partition: int | None,
               offset: int | None, record_time_ms: int | None = None) -> None:
        self.result.events += 1
        self.result.rejected += 1
        self.result.by_reason[reject.reason] += 1
        self._deadletters.write(
            wire.deadletter_to_json(reject, topic, partition, offset, record_time_ms) + b"\n")

    def _write(self, findings: Iterable[Finding]) -> None:
        keep = self.keep
        for f in findings:
            if keep is not None and not keep(f):
                continue
            self.result.findings += 1
            self.result.by_kind[f.kind.value] += 1
            self._findings.write(wire.finding_to_json(f) + b"\n")
            if self.evidence_dir is not None and f.evidence is not None:
                self._write_evidence(f)

    def _write_evidence(self, f: Finding) -> None:
        name = f"{f.anomaly_id}-{f.status.value}.json" if f.status.value == "resolved" \
            else f"{f.anomaly_id}.json"
        doc = {"finding": wire.finding_to_dict(f),
               "evidence": _evidence_for_people(f.evidence, f, self.policy)}
        (self.evidence_dir / name).write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def finish(self, until_ms: int | None = None) -> ReplayResult:
        """Move the clock to `until_ms` (default: the last event time), close the files."""
        if until_ms is None:
            until_ms = self.last_event_ms
        if until_ms is not None:
            self._write(self.reconciler.advance_to(until_ms))
        self._findings.close()
        self._deadletters.close()
        r = self.result
        r.until_ms = until_ms
        r.seconds = time.perf_counter() - self._started
        stats = self.reconciler.stats
        summary = {
            "events_read": r.events,
            "events_valid": r.events - r.rejected,
            "rejected": r.rejected,
            "rejected_by_reason": dict(sorted(r.by_reason.items())),
            "findings": r.findings,
            "findings_by_kind": dict(sorted(r.by_kind.items())),
            "late_data": stats.late_data,
            "redeliveries": stats.redeliveries,
            # items dropped with their missing still open, once missing_horizon passed
            "missing_expired": stats.missing_expired,
            "until": wire.format_time_ms(until_ms) if until_ms is not None else None,
        }
        if r.warnings:
            summary["warnings"] = list(r.warnings)
        book = self.reconciler.aging
        if book is not None and until_ms is not None:
            # open findings by SLA tier as of the final clock (streams.core.aging)
            summary["aging"] = aging_summary(aging.open_rows(book, self.reconciler.clock_ms))
        (self.out_dir / "summary.json").write_bytes(
            orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        return r


def aging_summary(rows: dict[str, Any]) -> dict[str, Any]:
    """streams.core.aging.open_rows for summary.json: the clock as RFC 3339 text."""
    doc = dict(rows)
    doc["as_of"] = wire.format_time_ms(doc.pop("as_of_ms"))
    return {"as_of": doc.pop("as_of"), **doc}


def merge_aging_summaries(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Several replays' summary.json "aging" (a Kafka replay's partitions) as one."""
    merged = aging.merge_open_rows([{**p, "as_of_ms": wire.parse_time_ms(p["as_of"])}
                                    for p in parts])
    return None if merged is None else aging_summary(merged)


# ---- files ---------------------------------------------------------------------------------

# How many following events of a file say where its event time is going (the median of them is
# the file's clock ahead of a line), and how many lines the look-ahead may buffer at most.
LOOKAHEAD_EVENTS = 5
LOOKAHEAD_LINES = 10_000
# A record time no event can be ahead of: parse every line once without the future rule.
_NO_FUTURE_MS = 1 << 62
_BEFORE_ALL = -(1 << 62)
_POS_TYPES = frozenset((AUTHORISATION, REVERSAL, REFUND))


class ReplayInputError(ValueError):
    """The inputs or options cannot give a meaningful replay (say what, not a traceback)."""


def file_topic(path: str, sample: int = 10_000) -> str:
    """The input topic a file is read as: the topic of most of its first `sample` typed lines'
    parsed `type` (ties: the type of its first typed line; a file with no typed line:
    authorisations). A line is never classified by a substring search: only the `type` of a
    line that parses as a JSON object counts, and a line of the other topic in the file is then
    `wrong_topic`."""
    votes = Counter()
    first = None
    loads = orjson.loads
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                d = loads(raw)
            except orjson.JSONDecodeError:
                continue
            t = d.get("type") if type(d) is dict else None
            if type(t) is not str:
                continue
            topic = (wire.SETTLEMENT_TOPIC if t in (SETTLEMENT_CREDIT, SETTLEMENT_FILE_COMPLETE)
                     else wire.AUTH_TOPIC if t in _POS_TYPES else None)
            if topic is None:
                continue
            votes[topic] += 1
            if first is None:
                first = topic
            if votes.total() >= sample:
                break
    if not votes:
        return wire.AUTH_TOPIC
    a, s = votes[wire.AUTH_TOPIC], votes[wire.SETTLEMENT_TOPIC]
    return first if a == s else (wire.AUTH_TOPIC if a > s else wire.SETTLEMENT_TOPIC)


def _source_names(inputs: list[str], topics: list[str]) -> list[str]:
    """The dead letters' `topic` per input: the topic it was read as and its base name (the
    path as typed would make the output depend on the working directory)."""
    bases = [os.path.basename(p) for p in inputs]
    return [f"{t}:{b}" if bases.count(b) == 1 else f"{t}:{b}#{i + 1}"
            for i, (t, b) in enumerate(zip(topics, bases))]


class _Line:
    __slots__ = ("n", "raw", "parsed", "t")

    def __init__(self, n: int, raw: bytes, parsed) -> None:
        self.n = n
        self.raw = raw
        self.parsed = parsed
        self.t = None if type(parsed) is wire.Reject else parsed.event_time_ms


def _judged_lines(path: str, topic: str, max_future_ms: int, end_ms: int | None,
                  fixed_record_ms: int | None = None) -> Iterator[tuple[int, int, object]]:
    """(merge key, line number, event or Reject) per non-empty line of a JSON-lines file.

    The record time of the future rule (DESIGN.md "file replay's record time") is a function of
    the file alone: the later of the largest event time of the file's accepted events before the
    line (its progress so far) and the median event time of the next LOOKAHEAD_EVENTS lines that
    parse as events (where it is going next); at the end of the file, where no event follows,
    `end_ms` (--until) stands for what follows. A line whose event time is more than
    max_future after that is `future_timestamp`, as live. An accepted event's merge key is its
    event time; a rejected line's is the key of the accepted event before it in its file, so it
    keeps its place and steers neither the merge of the files nor any clock.
    """
    parse = wire.parse
    reject_type = wire.Reject
    ahead: deque[_Line] = deque()
    events_ahead = 0  # lines in `ahead` that parsed as events
    progress: int | None = None  # largest accepted event time so far
    key = _BEFORE_ALL

    def judge(line: _Line) -> tuple[int, int, object]:
        nonlocal progress, key, events_ahead
        if line.t is None:
            return key, line.n, line.parsed
        events_ahead -= 1
        if fixed_record_ms is not None:
            record_ms = fixed_record_ms
        else:
            record_ms = _record_time(progress, ahead, end_ms, line.t)
        if line.t > record_ms + max_future_ms:
            rejected = parse(topic, line.raw, record_ms, max_future_ms)
            if type(rejected) is not reject_type:  # cannot be: same bytes, nearer record time
                rejected = reject_type(wire.FUTURE_TIMESTAMP, "event_time after the record time",
                                       line.raw)
            return key, line.n, rejected
        if progress is None or line.t > progress:
            progress = line.t
        key = line.t
        return key, line.n, line.parsed

    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            line = _Line(n, raw, parse(topic, raw, _NO_FUTURE_MS, max_future_ms))
            ahead.append(line)
            if line.t is not None:
                events_ahead += 1
            # judge the head once enough events follow it (or the buffer is full)
            while ahead and (ahead[0].t is None or events_ahead > LOOKAHEAD_EVENTS
                             or len(ahead) > LOOKAHEAD_LINES):
                yield judge(ahead.popleft())
    while ahead:
        yield judge(ahead.popleft())


def _record_time(progress: int | None, ahead: deque, end_ms: int | None, own_ms: int) -> int:
    """The file's clock at a line: see _judged_lines. `ahead` holds the lines after it."""
    nxt = []
    for later in ahead:
        if later.t is not None:
            nxt.append(later.t)
            if len(nxt) == LOOKAHEAD_EVENTS:
                break
    if nxt:
        nxt.sort()
        going = nxt[(len(nxt) - 1) // 2]  # the lower median: one outlier ahead cannot lift it
    else:
        going = end_ms  # nothing follows in this file: the end of the input
    if progress is None and going is None:
        return own_ms  # a file of one event and no --until: nothing to judge it against
    return max(x for x in (progress, going) if x is not None)


def replay_files(policy: Policy, inputs: list[str], out_dir: str, until_ms: int | None = None,
                 *, read_ms: int | None = None, evidence: bool = True) -> ReplayResult:
    """Replay JSON-lines files, merged by event time; see _judged_lines for the record time.

    `read_ms`, when given, is one fixed record time for every line (a file exported at a known
    time) instead of the files' own event-time progress. Raises ReplayInputError after writing
    the output when `until_ms` is before every accepted event (nothing could be judged).
    """
    run = ReplayRun(policy, out_dir, evidence=evidence)
    topics = [file_topic(path) for path in inputs]
    names = _source_names(inputs, topics)

    def numbered(i: int) -> Iterator[tuple[int, int, int, object]]:
        for k, n, item in _judged_lines(inputs[i], topics[i], policy.max_future_ms, until_ms,
                                        read_ms):
            yield k, i, n, item

    first_ms: int | None = None
    reject_type = wire.Reject
    for _, i, n, item in heapq.merge(*[numbered(i) for i in range(len(inputs))]):
        if type(item) is reject_type:
            run.reject(item, names[i], None, n)
        else:
            if first_ms is None or item.event_time_ms < first_ms:
                first_ms = item.event_time_ms
            run.event(item)
    last_ms = run.last_event_ms
    if until_ms is not None and last_ms is not None and until_ms < last_ms:
        run.result.warnings.append(
            f"--until {wire.format_time_ms(until_ms)} is before the last event "
            f"({wire.format_time_ms(last_ms)}): the clock had already passed it, so findings "
            "up to the last event are included")
    result = run.finish(until_ms)
    if until_ms is not None and first_ms is not None and until_ms < first_ms:
        raise ReplayInputError(
            f"--until {wire.format_time_ms(until_ms)} is before every event (the first is at "
            f"{wire.format_time_ms(first_ms)}): no deadline could pass; give a later --until, "
            "or leave it out to end at the last event")
    return result
