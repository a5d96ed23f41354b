"""`settlewatch bench-worker`: the live worker's throughput on a backlog, against a faust agent
that only counts records, with the changelog it writes and its peak memory.

One JSON line per run: both modes read the same backlog on the same topics; the line has the
worker's records/s, the counting agent's, their ratio, changelog bytes written per input byte
and each one's peak RSS. `--workers 2` runs two reconciling workers in one group instead of one
(scale-out on one machine). The steady-load latency bench is `settlewatch bench-latency`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import click

from streams.live.config import LiveConfig


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metric_sum(port: int, name: str) -> float | None:
    """Sum of every sample of `name` on the worker's /metrics, None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class Backlog:
    prefix: str
    records: int
    input_bytes: int


def make_backlog(bootstrap: str, events: int, merchants: int, days: int = 3,
                 echo=print) -> Backlog:
    """A private topic set holding `events` simulated records, all in the past."""
    from kafka.admin import KafkaAdminClient

    from streams import wire
    from streams.core.policy import default_policy
    from streams.sim.producer import simulate_to_kafka
    from streams.sim.simulator import SimConfig, Simulation, parse_faults

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = LiveConfig(topic_prefix=prefix).topics
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # Records carry their event time (days ago): with the broker's default retention (7 days,
    # judged by record timestamps) it would delete the backlog under the bench.
    admin.create_topics({n: {"num_partitions": 6, "replication_factor": 1,
                             "configs": {"retention.ms": "-1"}}
                         for n in topics.all()}, wait_for_metadata=True)
    admin.close()
    now = _wall_ms()
    start = now - (days + 8) * 86_400_000
    cfg = SimConfig(start_ms=start, end_ms=start + days * 86_400_000, merchants=merchants,
                    sales_per_second=events / 1.5 / (days * 86_400), seed=3, jitter_ms=60_000,
                    faults=parse_faults("late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                                        "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%"))
    stream = [e for e in Simulation(cfg, default_policy()).events() if e.event_time_ms < now]
    input_bytes = sum(len(wire.event_to_json(e)) + len(e.merchant_id) for e in stream)
    stats = simulate_to_kafka(stream, bootstrap, auth_topic=topics.authorisations,
                              settlement_topic=topics.settlements)
    echo(f"produced {stats.sent} records to {prefix}* in {stats.wall_s:.1f}s")
    return Backlog(prefix, stats.sent, input_bytes)


def worker_command(bootstrap: str, prefix: str, app_id: str, port: int, workdir: str,
                   *extra: str) -> list[str]:
    return [sys.executable, "-c", "from streams.cli import main; main()", "worker",
            "--bootstrap", bootstrap, "--topic-prefix", prefix, "--app-id", app_id,
            "--metrics-port", str(port), "--tick-interval", "0", "--data-dir", workdir,
            "--loglevel", "warning", *extra]


def run_mode(bootstrap: str, backlog: Backlog, mode: str, workers: int = 1,
             store: str = "memory://") -> dict[str, Any]:
    """Start `workers` processes of `mode` ("count-only" or "worker") on the backlog and time
    them from their first record read to the last (from their own metrics)."""
    app_id = f"{backlog.prefix}{mode}{workers}"
    procs = []
    for i in range(workers):
        port = _free_port()
        workdir = tempfile.mkdtemp(prefix="sw-bench-")
        cmd = worker_command(bootstrap, backlog.prefix, app_id, port, workdir, "--store", store)
        if mode == "count-only":
            cmd.append("--count-only")
        with open(os.path.join(workdir, "worker.log"), "wb") as out:
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                           cwd=workdir), port, workdir))
    first = last = None
    n = 0.0
    peak: dict[int, float | None] = {}
    deadline = time.monotonic() + 180 + backlog.records / 500
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p, _, _ in procs):
            time.sleep(0.05)
            counts = [_metric_sum(port, "settlewatch_events_read_total") for _, port, _ in procs]
            if any(c is None for c in counts):
                continue
            n = sum(c or 0 for c in counts)
            if n and first is None:
                first = (time.monotonic(), n)
            if n >= backlog.records:
                last = time.monotonic()
                break
        changelog = sum(_metric_sum(port, "settlewatch_changelog_bytes_total") or 0
                        for _, port, _ in procs)
        for p, _, _ in procs:
            peak[p.pid] = _peak_rss_mb(p.pid)
    finally:
        for p, _, _ in procs:
            p.terminate()
        for p, _, _ in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    if first is None or last is None:
        raise click.ClickException(f"{mode}: read {n:.0f} of {backlog.records} records; "
                                   f"logs in {', '.join(w for _, _, w in procs)}")
    rate = (backlog.records - first[1]) / max(last - first[0], 1e-9)
    return {"records_per_s": round(rate), "seconds": round(last - first[0], 2),
            "changelog_bytes_per_input_byte": round(changelog / backlog.input_bytes, 3),
            "peak_rss_mb": max((v for v in peak.values() if v is not None), default=None)}


def bench_worker(bootstrap: str, events: int, *, merchants: int = 2_000, workers: int = 1,
                 store: str = "memory://", keep: bool = False, echo=print) -> dict[str, Any]:
    """One run: the counting baseline and the worker (or `workers` of them) on one backlog."""
    from kafka.admin import KafkaAdminClient
    load_before = load_average()
    backlog = make_backlog(bootstrap, events, merchants, echo=echo)
    try:
        base = run_mode(bootstrap, backlog, "count-only")
        work = run_mode(bootstrap, backlog, "worker", workers=workers, store=store)
    finally:
        if not keep:  # ours, and faust's changelog and assignor topics of the bench app ids
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.delete_topics([t for t in admin.list_topics()
                                 if t.startswith(backlog.prefix)])
            admin.close()
    result = {"bench": "worker", "records": backlog.records, "merchants": merchants,
              "workers": workers, "store": store,
              "worker_records_per_s": work["records_per_s"],
              "count_only_records_per_s": base["records_per_s"],
              "ratio": round(work["records_per_s"] / max(base["records_per_s"], 1), 3),
              "changelog_bytes_per_input_byte": work["changelog_bytes_per_input_byte"],
              "worker_peak_rss_mb": work["peak_rss_mb"],
              "count_only_peak_rss_mb": base["peak_rss_mb"],
              "worker_seconds": work["seconds"], "count_only_seconds": base["seconds"],
              "load_average_1m": [load_before, load_average()]}
    echo(json.dumps(result))
    return result


@click.command("bench-worker")
@click.option("--bootstrap", default="127.0.0.1:9092", envvar="SETTLEWATCH_BOOTSTRAP",
              show_default=True)
@click.option("--events", default=300_000, show_default=True, help="Records in the backlog.")
@click.option("--merchants", default=2_000, show_default=True)
@click.option("--workers", default=1, show_default=True,
              help="Reconciling workers in one group (scale-out).")
@click.option("--store", default="memory://", show_default=True,
              help="faust table store of the worker: memory:// or rocksdb://.")
@click.option("--keep-topics", is_flag=True, help="Leave the bench<id>.* topics in place.")
def worker_bench_command(bootstrap: str, events: int, merchants: int, workers: int, store: str,
                         keep_topics: bool) -> None:
    """Throughput of the live worker on a backlog, against a counting-only faust agent."""
    bench_worker(bootstrap, events, merchants=merchants, workers=workers, store=store,
                 keep=keep_topics, echo=click.echo)
