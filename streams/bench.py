"""Benchmarks that print their figures (one JSON line each); numbers go in README.md.

    settlewatch bench core [--events 5000000] [--open-sales 1000000]

`core` generates a multi-day stream with the simulator (not timed), runs the reconciler alone
over it and reports events/s and peak RSS; then, in a fresh process so that the first phase's
memory does not count, it opens `--open-sales` sales (released by the clock, none paid yet)
and reports the resident memory they take, in bytes per open sale.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time

import click

from streams.core.policy import Policy, default_policy, load_policy
from streams.core.reconcile import Reconciler
from streams.runtime import tune_gc
from streams.simulator import SimConfig, Simulation, parse_faults

DAY_MS = 86_400_000
START_MS = 1_791_244_800_000  # 2026-10-06T00:00:00Z


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def core_stream(policy: Policy, events: int, days: int = 5, merchants: int = 20_000,
                seed: int = 1) -> list:
    """About `events` events over `days` days of event time, all modes, faults at ~1%."""
    # a sale brings about 1.5 events (its credit, voids, refunds, faults); sales/s to match
    sales_per_second = events / 1.5 / (days * 86_400)
    cfg = SimConfig(start_ms=START_MS, end_ms=START_MS + days * DAY_MS, merchants=merchants,
                    sales_per_second=sales_per_second, seed=seed, jitter_ms=120_000,
                    faults=parse_faults("late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                                        "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%,"
                                        "redelivery=0.5%"))
    return list(Simulation(cfg, policy).events())


def bench_core_throughput(policy: Policy, events: int) -> dict:
    t0 = time.perf_counter()
    stream = core_stream(policy, events)
    generated_s = time.perf_counter() - t0
    tune_gc()
    r = Reconciler(policy)
    on_event = r.on_event
    findings = 0
    t0 = time.perf_counter()
    for e in stream:
        findings += len(on_event(e))
    findings += len(r.advance_to(stream[-1].event_time_ms + 10 * DAY_MS))
    seconds = time.perf_counter() - t0
    return {"events": len(stream), "seconds": round(seconds, 2),
            "events_per_s": round(len(stream) / seconds), "findings": findings,
            "late_data": r.stats.late_data, "redeliveries": r.stats.redeliveries,
            "generate_seconds": round(generated_s, 1),
            "peak_rss_mb": round(_peak_rss_bytes() / 2**20)}


def bench_open_sales(policy: Policy, sales: int) -> dict:
    """Resident bytes per open sale: `sales` sales in one hour over 50k merchants, released."""
    import random

    from streams.core.events import AUTHORISATION, PosEvent
    rng = random.Random(1)
    acquirers = ("acq-t1", "acq-d0", "acq-instant", "acq-std")
    channels = ("debit", "credit", "qr", "qr_large")
    merchants = [f"M{n:06d}" for n in range(50_000)]
    tune_gc()
    r = Reconciler(policy)
    # sales span one hour: T+1 and batch items stay open; "+30m" ones would close, so the
    # instant acquirer's sales get a late enough credits watermark only at the end (below).
    start = START_MS + 2 * 3_600_000  # 10:00 local
    gc.collect()
    before = _rss_bytes()
    step = 3_600_000 / sales
    for n in range(sales):
        mid = merchants[n % len(merchants)]
        acq = acquirers[n % 3 if acquirers[n % 4] == "acq-instant" else n % 4]
        r.on_event(PosEvent(AUTHORISATION, f"EA{n:010d}", f"A{n:010d}", mid, f"T{n % 7}", acq,
                            channels[n % 4], 1_000 + rng.randrange(100_000), "CNY",
                            start + int(n * step), "approved",
                            None, f"622848******{n % 10_000:04d}", None, None, None))
    r.advance_to(start + 3_600_000)  # release every sale; no deadline has passed yet
    gc.collect()
    after = _rss_bytes()
    open_items = r.open_item_count()
    return {"open_sales": sales, "open_items": open_items,
            "bytes_per_open_sale": round((after - before) / sales),
            "rss_mb": round(after / 2**20)}


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
    cmd = [sys.executable, "-m", "streams.bench", "_open-sales", str(open_sales)]
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
def bench_replay_command(config: str | None, bootstrap: str, events: int) -> None:
    """Replay from Kafka end to end: events/s and peak memory (see streams.kafka_replay)."""
    policy = load_policy(config) if config else default_policy()
    from streams.bench_replay import bench_replay
    click.echo(json.dumps({"bench": "replay", **bench_replay(bootstrap, events, policy=policy)}))


if __name__ == "__main__":
    bench_command()
