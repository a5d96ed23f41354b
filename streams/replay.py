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
stops the run. The Kafka range replay (streams.kafka_replay) feeds the same `ReplayRun`.
"""
from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import orjson

from streams import wire
from streams.core.events import Finding
from streams.core.policy import Policy, PolicyError, default_policy, load_policy
from streams.core.reconcile import Reconciler
from streams.runtime import tune_gc

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


def _evidence_for_people(evidence: dict, finding: Finding | None = None,
                         policy: Policy | None = None) -> dict:
    """Evidence as a merchant hands it to its bank: every sale and credit behind the finding
    (masked card number, terminal, times in RFC 3339 beside the raw milliseconds), the fee rule
    applied to each sale and the net it should have brought, the settlement terms (cycle, due
    time, cut-off, grace, time zone), and a plain-language `statement` of the claim."""
    def times(d: dict) -> dict:
        out = dict(d)
        for k, v in d.items():
            if k.endswith("_ms") and isinstance(v, int):
                out[k[:-3]] = wire.format_time_ms(v)
        return out

    sales = []
    for s in evidence.get("sales", []):
        sale = times(s)
        sale["adjustments"] = [
            {"type": a[0], "event_id": a[1], "amount_minor": a[2], "event_time_ms": a[3],
             "event_time": wire.format_time_ms(a[3]), "netted_into_a_later_credit": a[4]}
            for a in s.get("adjustments") or ()]
        if policy is not None and "channel" in s:
            rule = policy.fee_rule(s["channel"])
            sale["fee_rule"] = {"channel": s["channel"], "bps": rule.bps,
                                "cap_minor": rule.cap_minor}
        if s.get("status") == "approved":
            captured = max(s["amount_minor"] - s.get("reversed_minor", 0), 0)
            sale["expected_net_minor"] = (captured - s.get("fee_minor", 0)
                                          - s.get("refunded_minor", 0))
        else:
            sale["expected_net_minor"] = 0
        sales.append(sale)
    cycle = evidence.get("cycle")
    if cycle is not None and policy is not None and 0 <= cycle.get("index", -1) < len(
            policy.cycles):
        cycle = {**cycle, **_cycle_terms(policy.cycles[cycle["index"]])}
    out = {
        "sales": sales,
        "credits": [times(c) for c in evidence.get("credits", [])],
        "cycle": cycle,
        **({"close": wire.format_time_ms(evidence["close_ms"])} if "close_ms" in evidence else {}),
    }
    if finding is not None:
        out["statement"] = _statement(finding, out, cycle)
    return out


def _cycle_terms(c) -> dict:
    """A policy cycle's terms as the config file spells them."""
    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}:{minute % 60:02d}"
    due = (f"T+{c.due_days} {hhmm(c.due_minute)}" if c.due_kind == "business"
           else f"+{_duration(c.due_after_ms)}")
    return {"due": due, "cutoff": None if c.cutoff_minute is None else hhmm(c.cutoff_minute),
            "grace": _duration(c.grace_ms), "timezone": c.timezone}


def _duration(ms: int) -> str:
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts) or "0s"


def money(amount_minor: int, currency: str) -> str:
    """1234567 CNY -> '12,345.67 CNY' (the currency's minor-unit digits)."""
    from streams.currencies import CURRENCIES
    digits = CURRENCIES.get(currency, (0, 2))[1]
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10 ** digits)
    text = f"{whole:,}" + (f".{frac:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}"


def _statement(f: Finding, ev: dict, cycle: dict | None) -> list[str]:
    """The claim in sentences, from the finding and its evidence."""
    cur = f.currency
    lines = [f"{f.kind.value} ({f.status.value}): merchant {f.merchant_id}, acquirer "
             f"{f.acquirer}, {f.subject}"]
    for s in ev["sales"]:
        rule = s.get("fee_rule") or {}
        cap = rule.get("cap_minor")
        fee = (f"fee {money(s.get('fee_minor', 0), cur)} ({s.get('channel')}, "
               f"{rule.get('bps', s.get('fee_bps'))} bps"
               + (f", capped at {money(cap, cur)}" if cap is not None else "") + ")")
        extra = ""
        if s.get("reversed_minor"):
            extra += f", reversed {money(s['reversed_minor'], cur)}"
        if s.get("refunded_minor"):
            extra += f", refunded {money(s['refunded_minor'], cur)}"
        lines.append(f"sale {s['auth_id']} at {s['event_time']} on terminal {s['terminal_id']}"
                     f", card {s.get('pan_masked') or 'not given'}: "
                     f"{money(s['amount_minor'], cur)} {s['status']}, {fee}{extra}"
                     f", net due {money(s['expected_net_minor'], cur)}")
    for c in ev["credits"]:
        lines.append(f"credit {c['credit_id']} booked {c['event_time']}: "
                     f"{money(c['amount_minor'], c['currency'])}"
                     + (f" (acquirer's fee {money(c['fee_minor'], c['currency'])})"
                        if c.get("fee_minor") is not None else ""))
    if f.kind.value == "orphan" and f.deadline_ms is not None:
        lines.append(f"no sale or batch of the merchant matched it by "
                     f"{wire.format_time_ms(f.deadline_ms)}")
    elif f.deadline_ms is not None:
        terms = ""
        if cycle and "due" in cycle:
            due = cycle["due"] + (f" {cycle['timezone']}" if cycle["due"].startswith("T")
                                  else " after the sale")
            terms = (f" (cycle {cycle['mode']}, due {due}"
                     + (f", cut-off {cycle['cutoff']}" if cycle.get("cutoff") else "")
                     + f", grace {cycle['grace']})")
        lines.append(f"due by {wire.format_time_ms(f.deadline_ms)}{terms}")
    lines.append(f"expected {money(f.expected_minor, cur)}, received "
                 f"{money(f.received_minor, cur)}, difference {money(f.difference_minor, cur)}"
                 + (f"; probable cause: {f.probable_cause}" if f.probable_cause else ""))
    return lines


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


def _load(config: str | None) -> Policy:
    try:
        return load_policy(config) if config else default_policy()
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _time_option(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return wire.parse_time_ms(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time (2026-10-20T00:00:00Z)") from exc


@click.command("replay")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Policy file (TOML); default: the packaged sample.")
@click.option("--input", "inputs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON-lines file of events (either topic); repeatable.")
@click.option("--until", help="Final watermark, RFC 3339 (default: the last event time).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for findings.jsonl, deadletter.jsonl, summary.json, evidence/.")
@click.option("--bootstrap", help="Kafka bootstrap servers: replay a time range of the topics.")
@click.option("--from", "from_", help="Kafka replay: start of the range (RFC 3339).")
@click.option("--to", help="Kafka replay: end of the range (RFC 3339).")
@click.option("--merchant", "merchants", multiple=True, help="Kafka replay: merchant_id glob.")
@click.option("--acquirer", "acquirers", multiple=True, help="Kafka replay: acquirer glob.")
@click.option("--lead-in", default="2d", show_default=True,
              help="Kafka replay: read this much before --from so earlier sales are known.")
@click.option("--compare-live", is_flag=True,
              help="Kafka replay: also read settlewatch.anomalies and list disagreements.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write report.html (Kafka replay).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: only on a terminal).")
@click.option("--evidence/--no-evidence", default=True, show_default=True,
              help="Write evidence/<anomaly_id>.json per finding (one file each: slow for "
                   "millions of findings).")
def replay_command(config, inputs, until, out_dir, bootstrap, from_, to, merchants, acquirers,
                   lead_in, compare_live, report, progress, evidence) -> None:
    """Replay recorded events (files, or a time range of the Kafka topics) into findings."""
    policy = _load(config)
    tune_gc()
    if bootstrap:
        if inputs:
            raise click.UsageError("give --input files or --bootstrap, not both")
        from streams import kafka_replay
        result = kafka_replay.replay_kafka_cli(
            policy=policy, bootstrap=bootstrap, from_ms=_time_option(from_),
            to_ms=_time_option(to), out_dir=out_dir, merchants=merchants, acquirers=acquirers,
            lead_in=lead_in, compare_live=compare_live, report=report, progress=progress,
            evidence=evidence)
    else:
        if not inputs:
            raise click.UsageError("give at least one --input file (or --bootstrap)")
        result = replay_files(policy, list(inputs), out_dir, _time_option(until),
                              evidence=evidence)
    click.echo(result.line())
