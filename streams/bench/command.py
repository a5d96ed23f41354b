"""`settlewatch bench`: benchmarks that print their figures as one JSON line each."""
from __future__ import annotations

import json
import subprocess
import sys

import click

from streams.bench.core import bench_core_throughput, bench_open_sales
from streams.bench.replay import _run_replay, bench_replay
from streams.core.policy import default_policy, load_policy


@click.group("bench")
def bench_command() -> None:
    """Benchmarks that print their figures as JSON lines."""


@bench_command.command("core")
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--events", default=5_000_000, show_default=True, type=int)
@click.option("--open-sales", default=1_000_000, show_default=True, type=int)
def bench_core_command(config: str | None, events: int, open_sales: int) -> None:
    """The reconciler alone: events/s over a multi-day stream, and bytes per open sale."""
    policy = load_policy(config) if config else default_policy()
    result = {"bench": "core", **bench_core_throughput(policy, events)}
    # a fresh process, so that the stream above does not weigh on the memory figure
    cmd = [sys.executable, "-m", "streams.bench.command", "_open-sales", str(open_sales)]
    if config:
        cmd += ["--config", config]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result.update(json.loads(out.strip().splitlines()[-1]))
    click.echo(json.dumps(result))


@bench_command.command("_open-sales", hidden=True)
@click.argument("sales", type=int)
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
def _open_sales_command(sales: int, config: str | None) -> None:
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps(bench_open_sales(policy, sales)))


@bench_command.command("replay")
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--bootstrap", required=True, help="Kafka to produce the stream to and replay.")
@click.option("--events", default=2_000_000, show_default=True, type=int)
@click.option("--days", default=5.0, show_default=True, type=float,
              help="Days of event time the events span (memory follows the event rate and "
              "the keep_settled window, not the span).")
@click.option("--workers", type=int, help="Replay worker processes (default: CPUs).")
@click.option("--evidence/--no-evidence", default=True, show_default=True,
              help="Write evidence/<anomaly_id>.json (one file per finding).")
@click.option("--profile", type=click.Path(dir_okay=False),
              help="Profile the replay (one worker) with pyinstrument into this file.")
@click.option("--out-parent", type=click.Path(file_okay=False, exists=True),
              help="Where to make the replay's temporary output directory.")
def bench_replay_command(config: str | None, bootstrap: str, events: int, days: float,
                         workers: int | None, evidence: bool, profile: str | None,
                         out_parent: str | None) -> None:
    """Replay from Kafka end to end: produce a stream to fresh topics, time the replay, report
    events/s and peak memory (see streams.audit.kafka)."""
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps({"bench": "replay", **bench_replay(
        bootstrap, events, policy=policy, days=days, workers=workers, evidence=evidence,
        profile=profile, out_parent=out_parent)}))


@bench_command.command("_replay-run", hidden=True)
@click.option("--bootstrap", required=True)
@click.option("--prefix", required=True)
@click.option("--from-ms", type=int, required=True)
@click.option("--to-ms", type=int, required=True)
@click.option("--out", required=True)
@click.option("--workers", type=int)
@click.option("--no-evidence", is_flag=True)
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
def _replay_run_command(bootstrap: str, prefix: str, from_ms: int, to_ms: int, out: str,
                        workers: int | None, no_evidence: bool, config: str | None) -> None:
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps(_run_replay(bootstrap, prefix, from_ms, to_ms, out, workers,
                                      not no_evidence, policy)))


if __name__ == "__main__":
    bench_command()
