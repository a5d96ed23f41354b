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
import tempfile
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


# ---- replay from Kafka ---------------------------------------------------------------------


def _partition_of(key: bytes, partitions: int, cache: dict) -> int:
    """kafka-python's (and Java's) default partitioner: murmur2 of the key."""
    p = cache.get(key)
    if p is None:
        from kafka.partitioner.default import murmur2
        p = cache[key] = (murmur2(key) & 0x7FFFFFFF) % partitions
    return p


def _encode(chunk: list) -> list[tuple[bytes, bytes, int, bool]]:
    from streams.core.events import Credit
    from streams.wire import event_to_json
    return [(e.merchant_id.encode(), event_to_json(e), e.event_time_ms, type(e) is Credit)
            for e in chunk]


def produce_fast(bootstrap: str, records: list[tuple[bytes, bytes, int, bool]],
                 auth_topic: str, settlement_topic: str, partitions: int) -> float:
    """Send (key, value, record time, is credit) records as fast as aiokafka's batch builder
    goes, keyed partitions as the default partitioner puts them; returns the seconds taken."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                    max_batch_size=1 << 20, max_request_size=8 << 20,
                                    enable_idempotence=False)
        await producer.start()
        try:
            t0 = time.perf_counter()
            cache: dict = {}
            batches: dict = {}
            sent = []
            for key, value, ts, is_credit in records:
                topic = settlement_topic if is_credit else auth_topic
                part = _partition_of(key, partitions, cache)
                batch = batches.get((topic, part))
                if batch is None:
                    batch = batches[(topic, part)] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=ts) is None:
                    sent.append(await producer.send_batch(batch, topic, partition=part))
                    batch = batches[(topic, part)] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=ts)
            for (topic, part), batch in batches.items():
                sent.append(await producer.send_batch(batch, topic, partition=part))
            await asyncio.gather(*sent)
            return time.perf_counter() - t0
        finally:
            await producer.stop()

    return asyncio.run(run())


def bench_replay(bootstrap: str, events: int, *, policy: Policy | None = None, days: float = 5,
                 workers: int | None = None, evidence: bool = True, partitions: int = 6,
                 keep_topics: bool = False, profile: str | None = None,
                 out_parent: str | None = None) -> dict:
    """Produce about `events` simulated events (`days` of event time, record time = event time)
    to fresh topics, then time `settlewatch replay` over their whole range, end to end (offset
    look-up, reading, reconciling, every output file and report.html), in a fresh process so
    that the generated stream does not count in its memory. Returns the figures.

    With `profile` (a file name), the replay runs with one worker under pyinstrument, which
    writes its text profile there. The output goes to a temporary directory under `out_parent`
    (default: the system's); evidence is one file per finding, so the file system's cost of
    creating a file weighs on the result (measured here: 15 us on one directory tree, 450 us
    on another of the same disk).
    """
    import multiprocessing
    import uuid

    from kafka.admin import KafkaAdminClient, NewTopic
    policy = policy or default_policy()
    t0 = time.perf_counter()
    stream = core_stream(policy, events, days=days)
    start_ms = min(e.event_time_ms for e in stream)
    to_ms = max(e.event_time_ms for e in stream) + 1
    generated_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    chunks = [stream[i:i + 50_000] for i in range(0, len(stream), 50_000)]
    del stream
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        records = [r for part in pool.map(_encode, chunks) for r in part]
    del chunks
    encoded_s = time.perf_counter() - t0
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    auth_topic, settlement_topic = prefix + "pos.authorisations", prefix + "pos.settlements"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="settlewatch-bench")
    try:
        admin.create_topics([NewTopic(t, partitions, 1, topic_configs={"retention.ms": "-1"})
                             for t in (auth_topic, settlement_topic)])
        produce_s = produce_fast(bootstrap, records, auth_topic, settlement_topic, partitions)
        n = len(records)
        del records
        gc.collect()
        cmd = [sys.executable, "-m", "streams.bench", "_replay-run", "--bootstrap", bootstrap,
               "--prefix", prefix, "--from-ms", str(start_ms), "--to-ms", str(to_ms)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        if not evidence:
            cmd += ["--no-evidence"]
        if profile:
            cmd = [sys.executable, "-m", "pyinstrument", "-o", profile, "-m", "streams.bench",
                   *cmd[3:], "--workers", "1"]
        with tempfile.TemporaryDirectory(prefix="settlewatch-bench-", dir=out_parent) as out:
            cmd += ["--out", out]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"the replay failed (exit {done.returncode}):\n"
                                   + done.stderr[-12000:])
        replay = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if not keep_topics:
            try:
                admin.delete_topics([auth_topic, settlement_topic])
            except Exception:  # the figures matter more than the clean-up
                pass
        admin.close()
    return {"events": n, "days": days, "partitions": partitions,
            "generate_seconds": round(generated_s, 1), "encode_seconds": round(encoded_s, 1),
            "produce_seconds": round(produce_s, 1), "produce_per_s": round(n / produce_s),
            **replay}


def _run_replay(bootstrap: str, prefix: str, from_ms: int, to_ms: int, out: str,
                workers: int | None, evidence: bool, policy: Policy) -> dict:
    from streams.kafka_replay import Topics, peak_rss_bytes, replay_kafka
    tune_gc()
    topics = Topics(prefix + "pos.authorisations", prefix + "pos.settlements",
                    prefix + "settlewatch.anomalies")
    r = replay_kafka(policy, bootstrap, from_ms, to_ms, out, lead_in_ms=0, topics=topics,
                     workers=workers, progress=False, evidence=evidence)
    worker_peaks = [w["peak_rss_mb"] for w in r.worker_stats]
    own = peak_rss_bytes() / 2**20
    phases = {k: round(sum(w[k] for w in r.worker_stats), 1)
              for k in ("poll_s", "parse_s", "reconcile_s", "finish_s", "cpu_s")}
    return {"replay_records": r.records, "replay_seconds": round(r.seconds, 2),
            "replay_events_per_s": round(r.records / r.seconds), "workers": r.workers,
            "findings": r.findings, "evidence": evidence,
            "peak_rss_mb": round(own + (sum(worker_peaks) if r.workers > 1 else 0)),
            "peak_rss_mb_per_worker": worker_peaks, "worker_phase_seconds": phases,
            "cpu_us_per_event": round(phases["cpu_s"] / max(r.records, 1) * 1e6, 1)}


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
    events/s and peak memory (see streams.kafka_replay)."""
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
