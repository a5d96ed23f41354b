"""`settlewatch bench replay`: the Kafka audit replay end to end, from produced topics."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time

from streams.bench.core import core_stream
from streams.core.policy import Policy, default_policy
from streams.runtime import tune_gc


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
        cmd = [sys.executable, "-m", "streams.bench.command", "_replay-run", "--bootstrap", bootstrap,
               "--prefix", prefix, "--from-ms", str(start_ms), "--to-ms", str(to_ms)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        if not evidence:
            cmd += ["--no-evidence"]
        if profile:
            cmd = [sys.executable, "-m", "pyinstrument", "-o", profile, "-m", "streams.bench.command",
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
    from streams.audit.kafka import peak_rss_bytes, replay_kafka
    from streams.wire import Topics
    tune_gc()
    topics = Topics(authorisations=prefix + "pos.authorisations",
                    settlements=prefix + "pos.settlements",
                    anomalies=prefix + "settlewatch.anomalies")
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


