"""Replay: run recorded events through the same reconciler as the live worker, into files.

    settlewatch replay --config settlewatch.toml --input auths.jsonl --input credits.jsonl \\
        [--until 2026-10-20T00:00:00Z] --out DIR

writes DIR/findings.jsonl (contract anomaly records, one a line, in the order they became
known), DIR/deadletter.jsonl, DIR/summary.json and DIR/evidence/<anomaly_id>.json. Output is
byte-identical for the same input and config: `detected_at` is the reconciler's event-time
clock, and nothing written depends on the wall clock. `--until` is the final watermark (default:
the last event time), so the end of a file closes every item whose deadline + grace it passes,
as the live clock would.

Input files hold events of either topic, one JSON object a line, each file in event-time order
within the policy's lateness. Files are merged by event time, as the two topics are merged live.
A line that is not a valid event is a dead letter with its file and line number; it never
stops the run. The Kafka range replay (streams.audit.kafka) feeds the same `ReplayRun`.
"""
from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streams import wire
from streams.audit.evidence import _evidence_for_people
from streams.core.events import Finding
from streams.core.policy import Policy
from streams.core.reconcile import Reconciler

_CREDIT_MARK = b'"settlement_credit"'


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

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items())) or "none"
        rate = self.events / self.seconds if self.seconds else 0
        return (f"read {self.events} events ({self.rejected} rejected), "
                f"{self.findings} findings: {kinds}; {rate:,.0f} events/s; out {self.out_dir}")


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
        self.reconciler = Reconciler(policy, observer)
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
            "until": wire.format_time_ms(until_ms) if until_ms is not None else None,
        }
        (self.out_dir / "summary.json").write_bytes(
            orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        return r


# ---- files ---------------------------------------------------------------------------------


def _file_records(path: str, read_ms: int) -> Iterator[tuple[int, int, str, bytes, int]]:
    """(sort time, line number, topic, raw, line number) per non-empty line of a JSON-lines file.

    The sort time is the line's event_time when it has one, else the previous line's, so that a
    bad line keeps its place in the merge.
    """
    last = -(1 << 62)
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            topic = wire.SETTLEMENT_TOPIC if _CREDIT_MARK in raw else wire.AUTH_TOPIC
            t = _peek_time(raw)
            if t is not None:
                last = t
            yield last, n, topic, raw, n


def _peek_time(raw: bytes) -> int | None:
    """The event_time of a line, cheaply, for ordering only (validation comes later)."""
    i = raw.find(b'"event_time"')
    if i < 0:
        return None
    j = raw.find(b'"', raw.find(b":", i + 12) + 1)
    k = raw.find(b'"', j + 1)
    if j < 0 or k < 0:
        return None
    try:
        return wire.parse_time_ms(raw[j + 1:k].decode())
    except (ValueError, UnicodeDecodeError):
        return None


def replay_files(policy: Policy, inputs: list[str], out_dir: str, until_ms: int | None = None,
                 *, read_ms: int | None = None, evidence: bool = True) -> ReplayResult:
    """Replay JSON-lines files, merged by event time."""
    read_ms = int(time.time() * 1000) if read_ms is None else read_ms
    run = ReplayRun(policy, out_dir, evidence=evidence)
    def numbered(i: int, path: str):
        for t, n, topic, raw, _ in _file_records(path, read_ms):
            yield t, i, n, topic, raw

    streams = [numbered(i, path) for i, path in enumerate(inputs)]
    for _, i, n, topic, raw in heapq.merge(*streams):
        run.record(topic, raw, read_ms, None, n, source=f"{inputs[i]}")
    return run.finish(until_ms)


# ---- CLI -----------------------------------------------------------------------------------


