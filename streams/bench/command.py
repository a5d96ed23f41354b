"""`settlewatch bench`: benchmarks that print their figures as one JSON line each."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import click

from streams.bench.core import bench_core_throughput, bench_floor, bench_open_sales
from streams.bench.replay import _run_replay, bench_replay
from streams.core.policy import default_policy, load_policy


@click.group("bench")
def bench_command() -> None:
    """Benchmarks that print their figures as JSON lines."""


@bench_command.command("core")
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--events", default=5_000_000, show_default=True, type=int)
@click.option("--small", default=500_000, show_default=True, type=int,
              help="The smaller stream of the same generator, for the ratio.")
@click.option("--open-sales", default=1_000_000, show_default=True, type=int)
@click.option("--batch", default=1_000, show_default=True, type=int,
              help="Events per on_events call (1: on_event per event).")
def bench_core_command(config: str | None, events: int, small: int, open_sales: int,
                       batch: int) -> None:
    """The reconciler alone: events/s at two stream sizes, bytes per open sale (one line)."""
    def fresh(*args: str) -> dict:
        # a fresh process per phase, so that one's memory does not weigh on the next
        cmd = [sys.executable, "-m", "streams.bench.command", *args]
        if config:
            cmd += ["--config", config]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    load_before = os.getloadavg()
    at_small = fresh("_throughput", str(small), "--batch", str(batch))
    at_large = fresh("_throughput", str(events), "--batch", str(batch))
    live = fresh("_throughput", str(small), "--batch", str(batch), "--live")
    memory = fresh("_open-sales", str(open_sales))  # the live worker's state
    with_evidence = fresh("_open-sales", str(open_sales), "--evidence")  # replay's
    at_end = fresh("_open-sales", str(open_sales), "--at-end")
    result = {
        "bench": "core", "batch": batch,
        "small": at_small["events"], "large": at_large["events"],
        "events_per_s_small": at_small["events_per_s"],
        "events_per_s_large": at_large["events_per_s"],
        "ratio_large_to_small": round(at_large["events_per_s"] / at_small["events_per_s"], 3),
        "events_per_cpu_s_small": at_small["events_per_cpu_s"],
        "events_per_cpu_s_large": at_large["events_per_cpu_s"],
        "gc_share_small": at_small["gc_share"], "gc_share_large": at_large["gc_share"],
        "peak_rss_mb_small": at_small["peak_rss_mb"],
        "peak_rss_mb_large": at_large["peak_rss_mb"],
        "findings_large": at_large["findings"],
        "live_events_per_cpu_s_small": live["events_per_cpu_s"],
        "live_held_sales_small": live["held_sales"],
        "bytes_per_held_sale_live": live["bytes_per_held_sale"],
        "open_sales": memory["open_sales"], "bytes_per_open_sale": memory["bytes_per_open_sale"],
        "bytes_per_open_sale_with_evidence": with_evidence["bytes_per_open_sale"],
        "bytes_per_open_sale_released_at_end": at_end["bytes_per_open_sale"],
        "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    click.echo(json.dumps(result))


@bench_command.command("core-floor")
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--events", default=500_000, show_default=True, type=int)
def bench_core_floor_command(config: str | None, events: int) -> None:
    """The least per-event work of a pure-Python core on the same stream: a bound on it."""
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps({"bench": "core-floor", **bench_floor(policy, events)}))


@bench_command.command("_throughput", hidden=True)
@click.argument("events", type=int)
@click.option("--batch", default=1_000, type=int)
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--live", is_flag=True, help="The live worker's reconciler (no evidence, aging).")
def _throughput_command(events: int, batch: int, config: str | None, live: bool) -> None:
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps(bench_core_throughput(policy, events, batch, live)))


@bench_command.command("_open-sales", hidden=True)
@click.argument("sales", type=int)
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--evidence", is_flag=True, help="The replay's state (evidence kept).")
@click.option("--at-end", is_flag=True, help="Release every sale at the end, not as they come.")
def _open_sales_command(sales: int, config: str | None, evidence: bool, at_end: bool) -> None:
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps(bench_open_sales(policy, sales, evidence, at_end)))


@bench_command.command("causes")
@click.option("--days", default=6.0, show_default=True, type=float)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--fault-share", default=0.04, show_default=True, type=float,
              help="Share of credits given each fault kind.")
@click.option("--fee-table-bps", default=30, show_default=True, type=int,
              help="What the fault fee_table adds to every agreed rate.")
def bench_causes_command(days: float, seed: int, fault_share: float, fee_table_bps: int) -> None:
    """Probable causes against the faults put in: a confusion table (streams.bench.causes)."""
    from streams.bench.causes import run
    text, shares = run(days, seed, fault_share, fee_table_bps)
    click.echo(text)
    click.echo(json.dumps({"bench": "causes", "right": shares}))


@bench_command.command("early-warning")
@click.option("--config", type=click.Path(exists=True, dir_okay=False))
@click.option("--weeks", default=5.0, show_default=True, type=float,
              help="Simulated weeks of event time per run (two runs: steady and slowed).")
@click.option("--seed", default=11, show_default=True, type=int)
@click.option("--merchants", default=200, show_default=True, type=int)
@click.option("--rate", default=0.1, show_default=True, type=float,
              help="Sales per second of event time, over all merchants.")
@click.option("--slowed", default="acq-t1", show_default=True,
              help="The acquirer that slows down in the second run.")
@click.option("--slow-from-day", default=28, show_default=True, type=int,
              help="Days after the start (Sunday 2026-03-08) the slowdown begins.")
@click.option("--delay", default="3h", show_default=True,
              help="How much later the slowed acquirer books its credits.")
def bench_early_warning_command(config: str | None, weeks: float, seed: int, merchants: int,
                                rate: float, slowed: str, slow_from_day: int, delay: str) -> None:
    """The early warning on simulated weeks: lead time before the first missing for a slowed
    acquirer, false warnings per acquirer-week without one, and the fixed "slower than last
    week" rule on the same runs (streams.bench.earlywarning)."""
    from streams.bench.earlywarning import run
    from streams.core.policy import parse_duration_ms
    policy = load_policy(config) if config else default_policy()
    click.echo(json.dumps(run(policy, weeks=weeks, seed=seed, merchants=merchants, rate=rate,
                              slowed=slowed, slow_from_day=slow_from_day,
                              delay_ms=parse_duration_ms(delay, "--delay"))))


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
