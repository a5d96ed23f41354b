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


def _history(events: int, merchants: int, seed: int, days: int = 3) -> tuple[list, int]:
    """`events` simulated records over `days`, all at least a week old, and their bytes."""
    from streams import wire
    from streams.core.policy import default_policy
    from streams.sim.simulator import SimConfig, Simulation, parse_faults
    now = _wall_ms()
    start = now - (days + 8) * 86_400_000
    cfg = SimConfig(start_ms=start, end_ms=start + days * 86_400_000, merchants=merchants,
                    sales_per_second=events / 1.5 / (days * 86_400), seed=seed,
                    jitter_ms=60_000,
                    faults=parse_faults("late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                                        "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%"))
    stream = [e for e in Simulation(cfg, default_policy()).events() if e.event_time_ms < now]
    return stream, sum(len(wire.event_to_json(e)) + len(e.merchant_id) for e in stream)


def create_topics(bootstrap: str, prefix: str, **configs: str) -> None:
    """The worker's topic set under `prefix`, 6 partitions each, never deleted by time."""
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # Records carry their event time (days ago): with the broker's default retention (7 days,
    # judged by record timestamps) it would delete the backlog under the bench.
    admin.create_topics({n: {"num_partitions": 6, "replication_factor": 1,
                             "configs": {"retention.ms": "-1", **configs}}
                         for n in LiveConfig(topic_prefix=prefix).topics.all()},
                        wait_for_metadata=True)
    admin.close()


def produce_history(bootstrap: str, prefix: str, events: int, merchants: int, *,
                    rate: float | None = None, seed: int = 3, echo=print) -> Backlog:
    """Simulated history into the topic set `prefix`, as fast as it goes or at `rate`/s."""
    from streams.sim.producer import simulate_to_kafka
    topics = LiveConfig(topic_prefix=prefix).topics
    stream, input_bytes = _history(events, merchants, seed)
    stats = simulate_to_kafka(stream, bootstrap, auth_topic=topics.authorisations,
                              settlement_topic=topics.settlements, rate=rate)
    echo(f"produced {stats.sent} records to {prefix}* in {stats.wall_s:.1f}s")
    return Backlog(prefix, stats.sent, input_bytes)


def make_backlog(bootstrap: str, events: int, merchants: int, echo=print) -> Backlog:
    """A private topic set holding `events` simulated records, all in the past."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    return produce_history(bootstrap, prefix, events, merchants, echo=echo)


def worker_command(bootstrap: str, prefix: str, app_id: str, port: int, workdir: str,
                   *extra: str) -> list[str]:
    return [sys.executable, "-c", "from streams.cli import main; main()", "worker",
            "--bootstrap", bootstrap, "--topic-prefix", prefix, "--app-id", app_id,
            "--metrics-port", str(port), "--tick-interval", "0", "--data-dir", workdir,
            "--loglevel", "warning", *extra]


def committed_offsets(bootstrap: str, group: str, topics: Any,
                      partitions: int = 6) -> list[tuple[str, int, int | None, int]]:
    """(topic, partition, the group's committed offset or None, end offset) of both inputs."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        tps = [TopicPartition(t, p) for t in (topics.authorisations, topics.settlements)
               for p in range(partitions)]
        ends = consumer.end_offsets(tps)
        return [(tp.topic, tp.partition, offsets[tp].offset if tp in offsets else None,
                 ends[tp]) for tp in tps]
    finally:
        consumer.close()
        admin.close()


def committed_all(bootstrap: str, group: str, topics: Any) -> bool:
    """The group's committed offsets have reached the end of both input topics."""
    return all(end == 0 or (done is not None and done >= end)
               for _, _, done, end in committed_offsets(bootstrap, group, topics))


def run_mode(bootstrap: str, backlog: Backlog, mode: str, workers: int = 1,
             store: str = "memory://") -> dict[str, Any]:
    """Start `workers` processes of `mode` ("count-only" or "worker") on the backlog and time
    them from their first record read until the group has committed the whole backlog. A
    worker that exits for a restart (EXIT_RESTART) is started again, as a supervisor would."""
    from streams.live.exits import EXIT_RESTART
    app_id = f"{backlog.prefix}{mode}{workers}"
    procs = []
    for i in range(workers):
        port = _free_port()
        workdir = tempfile.mkdtemp(prefix="sw-bench-")
        cmd = worker_command(bootstrap, backlog.prefix, app_id, port, workdir, "--store", store)
        if mode == "count-only":
            cmd.append("--count-only")
        procs.append([None, port, workdir, cmd])

    def start(entry: list) -> None:
        with open(os.path.join(entry[2], "worker.log"), "ab") as out:
            entry[0] = subprocess.Popen(entry[3], stdout=out, stderr=subprocess.STDOUT,
                                        cwd=entry[2])
    for entry in procs:
        start(entry)
    first = last = None
    restarts = 0
    changelog = 0.0
    peak: dict[int, float | None] = {}
    deadline = time.monotonic() + 180 + backlog.records / 500
    try:
        while time.monotonic() < deadline:
            time.sleep(1)  # each scrape reads the open-item counters: not too often
            for entry in procs:
                rc = entry[0].poll()
                if rc == EXIT_RESTART:
                    restarts += 1
                    start(entry)
                elif rc is not None:
                    raise click.ClickException(f"{mode}: a worker exited {rc}; log in "
                                               f"{entry[2]}")
            if first is None:
                counts = [_metric_sum(e[1], "settlewatch_events_read_total") for e in procs]
                if any(counts):
                    first = time.monotonic()
                continue
            for entry in procs:
                peak[entry[0].pid] = max(peak.get(entry[0].pid) or 0,
                                         _peak_rss_mb(entry[0].pid) or 0)
            if committed_all(bootstrap, app_id, LiveConfig(topic_prefix=backlog.prefix).topics):
                last = time.monotonic()
                break
        changelog = sum(_metric_sum(e[1], "settlewatch_changelog_bytes_total") or 0
                        for e in procs)
    finally:
        for entry in procs:
            entry[0].terminate()
        for entry in procs:
            try:
                entry[0].wait(30)
            except subprocess.TimeoutExpired:
                entry[0].kill()
    if first is None or last is None:
        raise click.ClickException(f"{mode}: the backlog was not committed in time; logs in "
                                   f"{', '.join(e[2] for e in procs)}")
    return {"records_per_s": round(backlog.records / max(last - first, 1e-9)),
            "seconds": round(last - first, 2), "restarts": restarts,
            "changelog_bytes_per_input_byte": round(changelog / backlog.input_bytes, 3),
            "peak_rss_mb": max((v for v in peak.values() if v), default=None)}


def bench_worker(bootstrap: str, events: int, *, merchants: int = 2_000, workers: int = 1,
                 store: str = "memory://", keep: bool = False, echo=print) -> dict[str, Any]:
    """One run: the counting baseline and one worker on one backlog; with `workers` > 1 also
    that many workers in one group on the same backlog, and their speed-up over one."""
    load_before = load_average()
    backlog = make_backlog(bootstrap, events, merchants, echo=echo)
    try:
        base = run_mode(bootstrap, backlog, "count-only")
        work = run_mode(bootstrap, backlog, "worker", store=store)
        many = run_mode(bootstrap, backlog, "worker", workers=workers, store=store) \
            if workers > 1 else None
    finally:
        if not keep:
            delete_topics(bootstrap, backlog.prefix)
    result = {"bench": "worker", "records": backlog.records, "merchants": merchants,
              "store": store,
              "worker_records_per_s": work["records_per_s"],
              "count_only_records_per_s": base["records_per_s"],
              "ratio": round(work["records_per_s"] / max(base["records_per_s"], 1), 3),
              "changelog_bytes_per_input_byte": work["changelog_bytes_per_input_byte"],
              "worker_peak_rss_mb": work["peak_rss_mb"],
              "count_only_peak_rss_mb": base["peak_rss_mb"],
              "worker_seconds": work["seconds"], "count_only_seconds": base["seconds"],
              "worker_restarts": work["restarts"],
              "load_average_1m": [load_before, load_average()]}
    if many is not None:
        result.update({"workers": workers, "workers_records_per_s": many["records_per_s"],
                       "workers_restarts": many["restarts"],
                       "workers_speedup": round(many["records_per_s"]
                                                / max(work["records_per_s"], 1), 2)})
    echo(json.dumps(result))
    return result


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Ours, and faust's changelog and assignor topics of the bench app ids."""
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
    admin.close()


def _read_all(bootstrap: str, topic: str) -> list:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise click.ClickException(f"could not read {topic} to its end")
            for tp, msgs in consumer.poll(500, max_records=50_000).items():
                out += [m for m in msgs if m.offset < ends[tp]]
        return out
    finally:
        consumer.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_latency(bootstrap: str, *, rate: float = 2_000, duration_s: float = 120,
                  merchants: int = 2_000, batch_within: str = "200ms", config: str | None = None,
                  keep: bool = False, echo=print) -> dict[str, Any]:
    """Steady load: a simulated history sent at `rate` records/s for `duration_s` to a running
    worker; p50/p99 from a credit's arrival on its topic to the finding about it on
    settlewatch.anomalies. Both topics stamp records with the broker's append time, so the two
    ends are the same clock. Timed: the findings a credit raises when it is read (late, and the
    missing it resolves); the others wait, by the rules, for a deadline or `orphan_after` in
    event time, which a history sent at a steady rate reaches at its own pace."""
    import orjson
    load_before = load_average()
    events = int(rate * duration_s)
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="sw-bench-latency-")

    # The topics first (empty), then the worker, then the traffic at the steady rate.
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    topics = LiveConfig(topic_prefix=prefix).topics
    create_topics(bootstrap, prefix, **{"message.timestamp.type": "LogAppendTime"})
    cmd = worker_command(bootstrap, prefix, f"{prefix}latency", port, workdir,
                         "--batch-within", batch_within)
    if config:
        cmd += ["--config", config]
    with open(os.path.join(workdir, "worker.log"), "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 120
        while (_metric_sum(port, "settlewatch_worker_up") or 0) < 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise click.ClickException(f"the worker did not start; log in {workdir}")
            time.sleep(0.5)
        started = time.monotonic()
        backlog = produce_history(bootstrap, prefix, events, merchants, rate=rate, seed=5,
                                  echo=echo)
        produce_s = time.monotonic() - started
        deadline = time.monotonic() + 120
        while (_metric_sum(port, "settlewatch_events_read_total") or 0) < backlog.records:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise click.ClickException(f"the worker fell behind; log in {workdir}")
            time.sleep(0.5)
        time.sleep(3)
        peak = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    arrived = {}
    for m in _read_all(bootstrap, topics.settlements):
        try:
            arrived[orjson.loads(m.value)["credit_id"]] = m.timestamp
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    lat = []
    kinds: dict[str, int] = {}
    for m in _read_all(bootstrap, topics.anomalies):
        d = orjson.loads(m.value)
        on_arrival = d["kind"] == "late" or (d["kind"] == "missing"
                                              and d["status"] == "resolved")
        times = [arrived[c] for c in d.get("credit_ids") or () if c in arrived]
        if times and on_arrival:
            lat.append((m.timestamp - max(times)) / 1000)
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    if not keep:
        delete_topics(bootstrap, prefix)
    if not lat:
        raise click.ClickException("no finding named a credit")
    result = {"bench": "latency", "rate_records_per_s": rate, "records": backlog.records,
              "produce_seconds": round(produce_s, 1), "batch_within": batch_within,
              "findings_timed": len(lat), "kinds": kinds,
              "p50_s": round(_percentile(lat, 0.5), 3), "p99_s": round(_percentile(lat, 0.99), 3),
              "max_s": round(max(lat), 3), "worker_peak_rss_mb": peak,
              "load_average_1m": [load_before, load_average()]}
    echo(json.dumps(result))
    return result


@click.command("bench-worker")
@click.option("--bootstrap", default="127.0.0.1:9092", envvar="SETTLEWATCH_BOOTSTRAP",
              show_default=True)
@click.option("--events", default=300_000, show_default=True, help="Records in the backlog.")
@click.option("--merchants", default=2_000, show_default=True)
@click.option("--workers", default=1, show_default=True,
              help="Also run this many workers in one group on the backlog (scale-out).")
@click.option("--store", default="memory://", show_default=True,
              help="faust table store of the worker: memory:// or rocksdb://.")
@click.option("--steady-rate", type=float, default=None,
              help="Latency instead: send records at this rate to a running worker.")
@click.option("--duration", type=float, default=120, show_default=True,
              help="With --steady-rate: seconds of traffic.")
@click.option("--batch-within", default="200ms", show_default=True,
              help="With --steady-rate: the worker's --batch-within.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="With --steady-rate: the worker's policy file.")
@click.option("--keep-topics", is_flag=True, help="Leave the bench<id>.* topics in place.")
def worker_bench_command(bootstrap: str, events: int, merchants: int, workers: int, store: str,
                         steady_rate: float | None, duration: float, batch_within: str,
                         config: str | None, keep_topics: bool) -> None:
    """Throughput of the live worker on a backlog, against a counting-only faust agent; or,
    with --steady-rate, its latency from a credit's arrival to its finding under steady load."""
    if steady_rate:
        bench_latency(bootstrap, rate=steady_rate, duration_s=duration, merchants=merchants,
                      batch_within=batch_within, config=config, keep=keep_topics,
                      echo=click.echo)
        return
    bench_worker(bootstrap, events, merchants=merchants, workers=workers, store=store,
                 keep=keep_topics, echo=click.echo)
