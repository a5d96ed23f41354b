"""The local Kafka stack (deploy/local/stack) and the client libraries settlewatch pins.

Against a real Kafka 4.4.0 broker started by the session fixture ``kafka_bootstrap``: the
topics of wire contract v1 and their retention, the broker refusing to create topics on
demand, round trips with kafka-python 3 and aiokafka 0.14, ``offsets_for_times`` for audit
replay, and a faust 0.15 worker whose table survives ``kill -9``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaTimeoutError

pytestmark = pytest.mark.integration

AUDIT_TOPICS = ("pos.authorisations", "pos.settlements", "settlewatch.anomalies")
OTHER_TOPICS = ("settlewatch.deadletter", "settlewatch.ticks")
DAYS_366_MS = 366 * 24 * 3600 * 1000
KAFKA_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


def consume_all(consumer, expected: int, timeout_s: float = 15.0) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            records.extend(batch)
    return records


# --- the stack script ------------------------------------------------------------------------

def test_the_broker_answers_as_one_kraft_node_on_the_test_port(kafka_admin, kafka_bootstrap):
    cluster = kafka_admin.describe_cluster()
    brokers = [(b["host"], b["port"]) for b in cluster["brokers"]]
    host, port = kafka_bootstrap.split(":")
    assert brokers == [(host, int(port))]
    quorum = kafka_admin.describe_metadata_quorum()
    assert [v["replica_id"] for v in quorum["topics"][0]["partitions"][0]["current_voters"]] == [1]


def test_the_five_topics_exist_with_six_partitions_each(kafka_admin):
    topics = {t["name"]: t for t in kafka_admin.describe_topics(list(AUDIT_TOPICS + OTHER_TOPICS))}
    assert sorted(topics) == sorted(AUDIT_TOPICS + OTHER_TOPICS)
    for name, topic in topics.items():
        assert topic["error_code"] == 0, name
        assert len(topic["partitions"]) == 6, name
        assert all(p["replica_nodes"] == [1] for p in topic["partitions"]), name


def test_the_audit_topics_keep_366_days_and_the_others_the_broker_default(kafka_admin):
    configs = kafka_admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, ["retention.ms"])
         for name in AUDIT_TOPICS + OTHER_TOPICS],
        config_filter="all")["topic"]
    for name in AUDIT_TOPICS:
        assert configs[name]["retention.ms"]["value"] == str(DAYS_366_MS), name
        assert configs[name]["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", name
    for name in OTHER_TOPICS:
        assert configs[name]["retention.ms"]["value"] == str(KAFKA_DEFAULT_RETENTION_MS), name
        assert configs[name]["retention.ms"]["config_source"] == "DEFAULT_CONFIG", name


def test_the_broker_does_not_create_a_topic_a_producer_names(kafka_bootstrap, kafka_admin, topic_prefix):
    name = topic_prefix + "typo"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_block_ms=1500)
    try:
        with pytest.raises(KafkaTimeoutError):
            producer.send(name, b"lost").get(timeout=5)
    finally:
        producer.close(timeout=2)
    assert name not in kafka_admin.list_topics()


def test_up_again_is_a_no_op_that_keeps_the_running_broker(kafka_bootstrap, stack):
    before = stack("status", "kafka")
    again = stack("up", "kafka")
    after = stack("status", "kafka")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout
    assert again.stdout.count("(exists)") == 5
    assert before.returncode == after.returncode == 0
    assert before.stdout.split(",")[:2] == after.stdout.split(",")[:2]  # same pid, same port


def test_status_names_the_pid_and_the_ports(kafka_bootstrap, stack, stack_env):
    status = stack("status", "kafka")
    assert status.returncode == 0, status.stdout + status.stderr
    pid = int(Path(stack_env["SW_RUN_DIR"], "kafka", "kafka.pid").read_text())
    assert f"pid {pid}," in status.stdout
    assert f"broker {kafka_bootstrap}," in status.stdout
    # the pid file holds java's own pid (not a shell's), and it is this run dir's broker
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert Path(cmdline[0].decode()).name == "java"
    assert b"kafka.Kafka" in cmdline


# --- kafka-python 3 ----------------------------------------------------------------------------

def test_kafka_python_round_trips_keyed_records_in_order(kafka_bootstrap, new_topics, topic_prefix):
    (topic,) = new_topics("events")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    sent = [(f"m{i % 7}".encode(), json.dumps({"seq": i}).encode()) for i in range(200)]
    metadata = [producer.send(topic, key=k, value=v) for k, v in sent]
    producer.flush()
    partition_of = {}
    for (key, _), future in zip(sent, metadata):
        partition_of.setdefault(key, set()).add(future.get(timeout=5).partition)
    producer.close()
    assert all(len(parts) == 1 for parts in partition_of.values())  # one key, one partition

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=topic_prefix + "g",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        records = consume_all(consumer, len(sent))
        consumer.commit()
    finally:
        consumer.close()
    assert len(records) == len(sent)
    for key in partition_of:
        seqs = [json.loads(r.value)["seq"] for r in records if r.key == key]
        assert seqs == sorted(seqs) and len(seqs) == sum(1 for k, _ in sent if k == key)


def test_kafka_python_and_aiokafka_put_a_merchant_on_the_same_partition(kafka_bootstrap, new_topics):
    # The reconciler joins sales and credits locally because both topics are keyed by merchant:
    # the simulator (kafka-python) and the worker (aiokafka, via faust) must agree on partitions.
    sales, credits = new_topics("sales", "credits")
    merchants = [f"merchant-{i}".encode() for i in range(40)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    by_kafka_python = {m: producer.send(sales, key=m, value=b"{}").get(timeout=5).partition for m in merchants}
    producer.close()

    async def send_with_aiokafka():
        aproducer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await aproducer.start()
        try:
            return {m: (await aproducer.send_and_wait(credits, key=m, value=b"{}")).partition
                    for m in merchants}
        finally:
            await aproducer.stop()

    by_aiokafka = asyncio.run(send_with_aiokafka())
    assert by_aiokafka == by_kafka_python
    assert len(set(by_kafka_python.values())) > 1


# --- aiokafka 0.14 -------------------------------------------------------------------------------

def test_aiokafka_round_trips_records_through_a_consumer_group(kafka_bootstrap, new_topics, topic_prefix):
    (topic,) = new_topics("events")

    async def round_trip():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for i in range(100):
                await producer.send(topic, key=f"m{i % 5}".encode(), value=str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                    group_id=topic_prefix + "g", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        received = []
        try:
            async with asyncio.timeout(20):
                while len(received) < 100:
                    batches = await consumer.getmany(timeout_ms=200)
                    for records in batches.values():
                        received.extend(records)
            await consumer.commit()
            committed = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
        finally:
            await consumer.stop()
        return received, committed

    received, committed = asyncio.run(round_trip())
    assert sorted(int(r.value) for r in received) == list(range(100))
    assert sum(committed.values()) == 100


# --- offsets_for_times (audit replay) ---------------------------------------------------------

def test_offsets_for_times_finds_the_first_record_at_or_after_a_time(kafka_bootstrap, new_topics):
    (topic,) = new_topics("audit", partitions=2)
    t0 = int(time.time() * 1000) - 3_600_000  # an hour ago, within the broker's timestamp bounds
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for offset_ms in (0, 10_000, 20_000, 30_000):
        producer.send(topic, partition=0, value=b"x", timestamp_ms=t0 + offset_ms)
    producer.send(topic, partition=1, value=b"y", timestamp_ms=t0)
    producer.flush()
    producer.close()

    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        found = consumer.offsets_for_times({p0: t0 + 15_000, p1: t0 + 15_000})
        exact = consumer.offsets_for_times({p0: t0 + 10_000})
        before_all = consumer.offsets_for_times({p0: t0 - 1, p1: t0 - 1})
        ends = consumer.end_offsets([p0, p1])
    finally:
        consumer.close()

    assert (found[p0].offset, found[p0].timestamp) == (2, t0 + 20_000)
    assert found[p1] is None  # no record at or after the time on that partition: replay must cope
    assert (exact[p0].offset, exact[p0].timestamp) == (1, t0 + 10_000)
    assert before_all[p0].offset == before_all[p1].offset == 0
    assert ends == {p0: 4, p1: 1}


# --- faust 0.15 with a table, auto topic creation off ------------------------------------------

FAUST_APP = textwrap.dedent('''
    import json, os
    import faust

    app = faust.App(
        os.environ["APP_ID"], broker="kafka://" + os.environ["BOOTSTRAP"], store="memory://",
        topic_partitions=6, web_enabled=False, datadir=os.environ["DATADIR"],
        # a restarted worker waits for the killed one's session to expire (6 s is the broker minimum)
        broker_session_timeout=6, broker_heartbeat_interval=1, broker_commit_interval=0.5,
    )
    source = app.topic(os.environ["SOURCE"], key_type=str, value_type=int)
    counts = app.Table("counts", default=int, partitions=6)

    @app.agent(source)
    async def count(stream):
        async for merchant, amount in stream.items():
            counts[merchant] += amount

    @app.timer(0.25)
    async def dump():
        path = os.environ["DUMP"]
        with open(path + ".tmp", "w") as f:
            json.dump(dict(counts.items()), f)
        os.replace(path + ".tmp", path)
''')


class FaustWorker:
    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env, self.proc, self.runs = workdir, env, None, 0
        (workdir / "sw_faust_check.py").write_text(FAUST_APP)

    def start(self):
        self.runs += 1
        self.dump = self.workdir / f"table.{self.runs}.json"
        self.log = self.workdir / f"worker.{self.runs}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "sw_faust_check", "worker", "-l", "info"],
                cwd=self.workdir, env={**self.env, "DUMP": str(self.dump)},
                stdout=log, stderr=subprocess.STDOUT)

    def wait_for_table(self, expected: dict, timeout_s: float = 45) -> dict:
        deadline, table = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()[-3000:]}"
            if self.dump.exists():
                table = json.loads(self.dump.read_text())
                if table == expected:
                    return table
            time.sleep(0.2)
        pytest.fail(f"table {table} never became {expected}; log:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_a_faust_table_is_restored_from_its_changelog_after_kill_9(
        kafka_bootstrap, kafka_admin, new_topics, topic_prefix, tmp_path):
    (source,) = new_topics("sales")
    app_id = topic_prefix + "faust"
    worker = FaustWorker(tmp_path, {**os.environ, "APP_ID": app_id, "BOOTSTRAP": kafka_bootstrap,
                                    "SOURCE": source, "DATADIR": str(tmp_path / "data"),
                                    "PYTHONPATH": str(tmp_path)})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    expected: dict[str, int] = {}

    def send(n: int):
        for i in range(n):
            merchant, amount = f"m{i % 13}", i % 5 + 1
            producer.send(source, key=merchant.encode(), value=str(amount).encode())
            expected[merchant] = expected.get(merchant, 0) + amount
        producer.flush()

    try:
        send(300)
        worker.start()
        worker.wait_for_table(expected)
        # faust created its changelog itself (auto-create is off), co-partitioned with the source
        changelog = app_id + "-counts-changelog"
        (described,) = kafka_admin.describe_topics([changelog])
        assert len(described["partitions"]) == 6
        probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        written = probe.end_offsets([TopicPartition(changelog, p) for p in range(6)])
        assert sum(written.values()) >= len(expected)  # at least one record per key
        # kill only once every processed offset is committed, so a restart must not recount
        ends = probe.end_offsets([TopicPartition(source, p) for p in range(6)])
        probe.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            committed = kafka_admin.list_group_offsets(app_id).get(app_id, {})
            if all((committed[tp].offset if tp in committed else 0) == end for tp, end in ends.items()):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"offsets never committed: {committed} vs {ends}")
        worker.proc.kill()  # SIGKILL: no leave-group, no flush
        worker.proc.wait()

        worker.start()
        worker.wait_for_table(expected)  # every key back, exactly, from the changelog alone
        send(130)
        worker.wait_for_table(expected)  # and the restarted worker carries on from its offsets
    finally:
        producer.close()
        worker.stop()
