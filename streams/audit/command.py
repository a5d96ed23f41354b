"""`settlewatch replay`: file replay, or a time range of the Kafka topics (streams.audit.kafka)."""
from __future__ import annotations

import click

from streams import wire
from streams.audit.files import replay_files
from streams.core.policy import Policy, PolicyError, default_policy, load_policy
from streams.runtime import tune_gc


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
        from streams.audit import kafka as kafka_replay
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


