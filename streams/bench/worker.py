"""`settlewatch bench-worker`: the live worker's throughput on a backlog, against a faust agent
that only counts records."""
from __future__ import annotations

import json
import os
import sys
import time

import click

from streams.live.app import _wall_ms
from streams.live.config import LiveConfig


def bench_worker(bootstrap: str, events: int, *, merchants: int = 2_000, days: int = 3,
                 modes: tuple[str, ...] = ("count-only", "worker"), keep: bool = False,
                 echo=print) -> list[dict]:
    """Events/s of the worker reading a backlog, against the counting-only baseline.

    Makes a private topic set, produces `events` simulated records (all in the past), then for
    each mode starts `settlewatch worker` on that backlog (a fresh app id, no ticks) and times
    it from its first record read to its last (from its own metrics).
    """
    import subprocess
    import urllib.request
    import uuid

    from kafka.admin import KafkaAdminClient

    from streams.core.policy import default_policy
    from streams.sim.producer import simulate_to_kafka
    from streams.sim.simulator import SimConfig, Simulation, parse_faults

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = LiveConfig(topic_prefix=prefix).topics
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({n: {"num_partitions": 6, "replication_factor": 1}
                         for n in topics.all()}, wait_for_metadata=True)
    now = _wall_ms()
    start = now - (days + 8) * 86_400_000
    cfg = SimConfig(start_ms=start, end_ms=start + days * 86_400_000, merchants=merchants,
                    sales_per_second=events / 1.5 / (days * 86_400), seed=3, jitter_ms=60_000,
                    faults=parse_faults("late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                                        "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%"))
    stream = [e for e in Simulation(cfg, default_policy()).events() if e.event_time_ms < now]
    stats = simulate_to_kafka(stream, bootstrap, auth_topic=topics.authorisations,
                              settlement_topic=topics.settlements)
    echo(f"produced {stats.sent} records to {prefix}* in {stats.wall_s:.1f}s")
    results = []
    import socket
    import tempfile
    for mode in modes:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        workdir = tempfile.mkdtemp(prefix="sw-bench-")
        cmd = [sys.executable, "-c", "from streams.cli import main; main()", "worker",
               "--bootstrap", bootstrap, "--topic-prefix", prefix,
               "--app-id", f"{prefix}{mode}", "--metrics-port", str(port),
               "--tick-interval", "0", "--data-dir", workdir, "--loglevel", "warning"]
        if mode == "count-only":
            cmd.append("--count-only")
        with open(os.path.join(workdir, "worker.log"), "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        first = last = None
        n = 0
        deadline = time.monotonic() + 120 + stats.sent / 1000
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=2) as r:
                        text = r.read().decode()
                except OSError:
                    continue
                n = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("settlewatch_events_read_total{"))
                if n and first is None:
                    first = (time.monotonic(), n)
                if n >= stats.sent:
                    last = time.monotonic()
                    break
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if first is None or last is None:
            raise click.ClickException(f"{mode}: read {n:.0f} of {stats.sent} records; "
                                       f"log in {workdir}/worker.log")
        rate = (stats.sent - first[1]) / max(last - first[0], 1e-9)
        result = {"bench": "worker", "mode": mode, "records": stats.sent,
                  "seconds": round(last - first[0], 2), "records_per_s": round(rate)}
        echo(json.dumps(result))
        results.append(result)
    if not keep:  # ours, and faust's changelog and assignor topics of the bench app ids
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    admin.close()
    return results


@click.command("bench-worker")
@click.option("--bootstrap", default="127.0.0.1:9092", envvar="SETTLEWATCH_BOOTSTRAP",
              show_default=True)
@click.option("--events", default=300_000, show_default=True, help="Records in the backlog.")
@click.option("--merchants", default=2_000, show_default=True)
@click.option("--keep-topics", is_flag=True, help="Leave the bench<id>.* topics in place.")
def worker_bench_command(bootstrap: str, events: int, merchants: int, keep_topics: bool) -> None:
    """Throughput of the live worker on a backlog, against a counting-only faust agent."""
    bench_worker(bootstrap, events, merchants=merchants, keep=keep_topics, echo=click.echo)


