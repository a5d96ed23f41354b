"""`settlewatch replay`: file replay, or a time range of the Kafka topics (streams.audit.kafka)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from streams import wire
from streams.audit.files import ReplayInputError, replay_files
from streams.core.policy import Policy, PolicyError, default_policy, load_policy
from streams.runtime import tune_gc


def _load(config: str | None) -> Policy:
    try:
        return load_policy(config) if config else default_policy()
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _writable_out(out_dir: str) -> None:
    """Create --out and write a probe file in it, so that a bad --out is one message up front
    (a path under a file, a read-only mount, a full disk) instead of a traceback later."""
    try:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".settlewatch-probe-"):
            pass
    except OSError as exc:
        raise click.BadParameter(f"cannot write to {out_dir!r}: {exc.strerror or exc}",
                                 param_hint="--out") from None


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
@click.option("--end-run", default=10_000, show_default=True, type=click.IntRange(min=2),
              help="Kafka replay: a partition's read also ends after this many records in a "
                   "row stamped past --to plus the tail (else at its end offset).")
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
                   lead_in, end_run, compare_live, report, progress, evidence) -> None:
    """Replay recorded events (files, or a time range of the Kafka topics) into findings."""
    if bootstrap and inputs:
        raise click.UsageError("give --input files or --bootstrap, not both")
    if not bootstrap and not inputs:
        raise click.UsageError("give at least one --input file (or --bootstrap)")
    policy = _load(config)
    _writable_out(out_dir)
    tune_gc()
    try:
        if bootstrap:
            from streams.audit import kafka as kafka_replay
            result = kafka_replay.replay_kafka_cli(
                policy=policy, bootstrap=bootstrap, from_ms=_time_option(from_),
                to_ms=_time_option(to), out_dir=out_dir, merchants=merchants,
                acquirers=acquirers, lead_in=lead_in, compare_live=compare_live, report=report,
                progress=progress, evidence=evidence, end_run=end_run)
        else:
            result = replay_files(policy, list(inputs), out_dir, _time_option(until),
                                  evidence=evidence)
    except ReplayInputError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. the disk filled up, or --out was removed under us
        where = exc.filename or out_dir
        raise click.ClickException(f"replay stopped: {where}: {exc.strerror or exc}") from None
    click.echo(result.line())
