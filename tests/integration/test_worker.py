"""The live worker against a real broker: what it publishes equals the pure reconciler's
findings for the same events; the wall clock raises missing findings when the settlement feed
is dead, and does not overtake a backlog being read.

Each test gets its own topic set (a unique prefix) and its own faust app id, and runs
`settlewatch worker` as a subprocess. The helpers here are shared with test_restart.py and
test_deadletter.py.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams import wire
from streams.core.events import Credit, PosEvent
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed
from streams.live.exits import EXIT_RESTART
from streams.live.partition import encode_tick
from streams.wire import Topics
from streams.sim.producer import simulate_to_kafka
from streams.sim.simulator import SimConfig, Simulation, parse_faults

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import scrape_metrics
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import scrape_metrics

PARTITIONS = 6
MIN = 60_000
HOUR = 60 * MIN
POLICY = default_policy()


# ------------------------------------------------------------------------------------ helpers
def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 0.2):
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(every)


class Worker:
    """`settlewatch worker` in a subprocess, on a private topic set; log in `log_path`.

    Supervised as systemd's Restart=on-failure would: a worker that exits with EXIT_RESTART
    (it saw a hole in its input) is started again, as the demo and Kubernetes do."""

    env: dict[str, str] = {}  # extra environment (test_faults*.py: SETTLEWATCH_FAULT, ...)

    def __init__(self, bootstrap: str, prefix: str, workdir: Path, *, app_id: str,
                 options: Iterable[str] = (), name: str = "worker") -> None:
        self.bootstrap, self.prefix, self.workdir = bootstrap, prefix, workdir
        self.app_id = app_id
        self.options = list(options)
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.data_dir = workdir / f"faust-data-{name}"  # each worker its own, as on two hosts
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.restarts = 0
        self._stopping = False
        self._lock = threading.Lock()

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
        env.update(self.env)
        cmd = [sys.executable, "-c", "from streams.cli import main; main()", "worker",
               "--bootstrap", self.bootstrap, "--app-id", self.app_id,
               "--topic-prefix", self.prefix, "--metrics-port", str(self.port),
               "--data-dir", str(self.data_dir), *self.options]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir, env=env)
        threading.Thread(target=self._supervise, args=(self.proc,), daemon=True).start()
        return self

    def _supervise(self, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        with self._lock:
            if rc == EXIT_RESTART and not self._stopping and proc is self.proc:
                self.restarts += 1
                self.start()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics, keyed by (name, sorted labels); {} when not serving."""
        return scrape_metrics(self.port)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.metrics().items() if n == name)

    def alive(self) -> bool:
        """True while running; fails the test with the log's tail once it has exited (other
        than for a restart)."""
        assert self.proc is not None
        rc = self.proc.poll()
        if rc == EXIT_RESTART and not self._stopping:
            return False  # being restarted
        if rc is not None:
            pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}",
                        pytrace=False)
        return True

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for("the worker to join its group",
                 lambda: self.alive() and self.value("settlewatch_worker_up") == 1, timeout)

    def wait_read(self, n: int, timeout: float = 60) -> None:
        """Until this incarnation has read `n` input records."""
        wait_for(f"the worker to read {n} records",
                 lambda: self.alive() and self.total("settlewatch_events_read_total") >= n,
                 timeout)

    def kill(self) -> None:
        assert self.proc is not None
        with self._lock:
            self._stopping = True
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def topics(new_topics, topic_prefix) -> Topics:
    """A private topic set: inputs, ticks, anomalies, dead letters (6 partitions each)."""
    names = Topics.with_prefix(topic_prefix)
    new_topics(*(n.removeprefix(topic_prefix) for n in names.all()), partitions=PARTITIONS)
    return names


@pytest.fixture
def worker(kafka_bootstrap, topics, topic_prefix, tmp_path):
    """worker(*options) -> a started Worker on this test's topics; stopped at the end."""
    started: list[Worker] = []

    def make(*options: str, name: str = "worker") -> Worker:
        w = Worker(kafka_bootstrap, topic_prefix, tmp_path, app_id=f"sw-{topic_prefix}",
                   options=options, name=name)
        started.append(w)
        return w.start()
    yield make
    for w in started:
        w.stop()


def scenario(hours: float, merchants: int, sales_per_second: float, *, seed: int,
             faults: str = "", acquirers: tuple[str, ...] = (),
             end_before_now_ms: int = 2 * MIN) -> list[PosEvent | Credit]:
    """A seeded simulation ending `end_before_now_ms` ago, cut at that time (the wall clock
    must never be behind an event)."""
    end = now_ms() - end_before_now_ms
    cfg = SimConfig(start_ms=end - int(hours * HOUR), end_ms=end, merchants=merchants,
                    sales_per_second=sales_per_second, faults=parse_faults(faults), seed=seed,
                    jitter_ms=30_000, acquirers=acquirers)
    return [e for e in Simulation(cfg, POLICY).events() if e.event_time_ms <= end]


def produce(bootstrap: str, topics: Topics, events, **kwargs):
    return simulate_to_kafka(events, bootstrap, auth_topic=topics.authorisations,
                             settlement_topic=topics.settlements, **kwargs)


def read_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> list:
    """Every record of `topic` now, partition by partition in offset order."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[int, list] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, msgs in consumer.poll(500, max_records=50_000).items():
                out[tp.partition] += [m for m in msgs if m.offset < ends[tp]]
        return [m for p in range(partitions) for m in out[p]]
    finally:
        consumer.close()


def send_ticks(bootstrap: str, topics: Topics, tick_ms: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for p in range(PARTITIONS):
        producer.send(topics.ticks, key=b"tick", value=encode_tick(tick_ms), partition=p)
    producer.flush()
    producer.close()


def expected_findings(bootstrap: str, topics: Topics, until_ms: int) -> list[dict]:
    """What one pure reconciler per input partition publishes for the records on the input
    topics (read back, so that partitions are Kafka's), each fed in event-time order and run
    to `until_ms`: the contract records, without detected_at."""
    per: dict[int, list] = {p: [] for p in range(PARTITIONS)}
    for topic, wire_topic in ((topics.authorisations, wire.AUTH_TOPIC),
                              (topics.settlements, wire.SETTLEMENT_TOPIC)):
        for m in read_topic(bootstrap, topic):
            e = wire.parse(wire_topic, m.value, m.timestamp)
            if not isinstance(e, wire.Reject):
                per[m.partition].append(e)
    out = []
    for p, events in per.items():
        events.sort(key=lambda e: e.event_time_ms)
        out += [_record(wire.finding_to_dict(f))
                for f in feed(Reconciler(POLICY), events, until_ms=until_ms)]
    return out


def _record(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "detected_at"}


def published(bootstrap: str, topics: Topics) -> list[dict]:
    """The anomaly records on the topic, without detected_at, checked for key and partition."""
    out = []
    for m in read_topic(bootstrap, topics.anomalies):
        d = orjson.loads(m.value)
        assert m.key == d["merchant_id"].encode()
        out.append(_record(d))
    return out


def key(d: dict) -> bytes:
    return orjson.dumps(d, option=orjson.OPT_SORT_KEYS)


def assert_same_findings(got: list[dict], want: list[dict]) -> None:
    repeats = [k for k, n in Counter((d["anomaly_id"], d["status"]) for d in got).items() if n > 1]
    assert not repeats, f"published more than once: {repeats[:5]}"
    got_keys, want_keys = {key(d) for d in got}, {key(d) for d in want}
    lost = [orjson.loads(k) for k in want_keys - got_keys]
    extra = [orjson.loads(k) for k in got_keys - want_keys]
    assert not lost and not extra, (
        f"{len(lost)} findings lost, {len(extra)} not expected; lost kinds "
        f"{Counter(d['kind'] for d in lost)}, extra kinds {Counter(d['kind'] for d in extra)}; "
        f"first lost {lost[:1]}, first extra {extra[:1]}")


# -------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_the_worker_publishes_exactly_the_findings_of_the_pure_reconciler(
        kafka_bootstrap, topics, worker, store):
    events = scenario(8, merchants=60, sales_per_second=0.6, seed=11,
                      faults="late=3%,missing=3%,duplicate=2%,underpaid=3%,overpaid=1%,"
                             "orphan=1%,refund_netted=1%,redelivery=1%")
    stats = produce(kafka_bootstrap, topics, events)
    w = worker("--tick-interval", "0", "--store", store)
    w.wait_ready()
    w.wait_read(stats.sent)
    # A tick three days past the last event closes every item and waits out every orphan.
    end = max(e.event_time_ms for e in events) + 3 * 24 * HOUR
    send_ticks(kafka_bootstrap, topics, end)
    want = expected_findings(kafka_bootstrap, topics, end)
    assert len(want) > 100 and {d["kind"] for d in want} == {
        "late", "missing", "duplicate", "underpaid", "overpaid", "orphan"}
    wait_for(f"{len(want)} findings", lambda: len(published(kafka_bootstrap, topics)) >= len(want),
             timeout=30)
    time.sleep(1)  # anything beyond the expected ones would show up now
    assert_same_findings(published(kafka_bootstrap, topics), want)

    # The worker's metrics say the same: records read per topic, findings per kind.
    assert w.value("settlewatch_events_read_total", topic=topics.authorisations) == \
        stats.authorisations
    assert w.value("settlewatch_events_read_total", topic=topics.settlements) == \
        stats.settlements
    by_kind = Counter((d["kind"], d["status"]) for d in want)
    got_kind: Counter = Counter()
    for (name, labels), v in w.metrics().items():
        if name == "settlewatch_findings_total":
            d = dict(labels)
            got_kind[(d["kind"], d["status"])] += int(v)
    assert +got_kind == by_kind


@pytest.mark.fault("settlement feed silent while sales come in (no credit ever)",  # faults table
                   "missing fires on time from the wall-clock ticks, not before")
def test_a_dead_settlement_feed_still_raises_missing_findings_by_the_wall_clock(
        kafka_bootstrap, topics, worker):
    # acq-instant: each sale is due 30 minutes after it, plus 5 minutes of grace.
    now = now_ms()
    def sale(auth_id: str, merchant: str, at: int) -> PosEvent:
        return PosEvent("authorisation", f"E{auth_id}", auth_id, merchant, "T1", "acq-instant",
                        "qr", 12_000, "CNY", at)
    overdue = [sale("A1", "M1", now - 50 * MIN), sale("A2", "M2", now - 40 * MIN),
               sale("A3", "M3", now - 37 * MIN)]
    not_yet = [sale("A4", "M1", now - 30 * MIN), sale("A5", "M4", now - 5 * MIN)]
    produce(kafka_bootstrap, topics, overdue + not_yet)  # and no credit, ever
    w = worker("--tick-interval", "200ms", "--tick-idle", "1s", "--tick-allowance", "1m")
    w.wait_ready()
    w.wait_read(5)
    found = wait_for("three missing findings",
                     lambda: (lambda p: p if len(p) >= 3 else None)(
                         published(kafka_bootstrap, topics)), timeout=20)
    time.sleep(1.5)  # the sales not yet due must stay quiet
    found = published(kafka_bootstrap, topics)
    assert sorted((d["kind"], d["status"], d["subject"]) for d in found) == [
        ("missing", "open", "A1"), ("missing", "open", "A2"), ("missing", "open", "A3")]
    # Event time moved with the wall clock (minus the allowance), not with the silent feed.
    lag = w.value("settlewatch_event_clock_lag_seconds")
    assert lag is not None and 59 <= lag < 75


def test_history_streaming_in_is_not_overtaken_by_the_wall_clock(kafka_bootstrap, topics, worker):
    # Two hours of instant settlement (every credit on time) stream in while the worker
    # runs, hours behind the wall clock: no finding is right. A tick that moved event time to
    # the wall clock past inputs still delivering records would close sales before their
    # credits were read and report them missing.
    events = scenario(2, merchants=40, sales_per_second=3, seed=5,
                      acquirers=("acq-instant",), end_before_now_ms=MIN)
    events = [e for e in events if e.event_time_ms <= now_ms() - 2 * MIN]
    w = worker("--tick-interval", "100ms", "--tick-idle", "1s", "--tick-allowance", "1m")
    w.wait_ready()
    stats = produce(kafka_bootstrap, topics, events, rate=6000)
    assert stats.sent > 35_000
    w.wait_read(stats.sent)
    # Once the inputs fall silent, the wall clock takes over.
    wait_for("event time to reach the wall clock minus the allowance",
             lambda: (w.value("settlewatch_event_clock_lag_seconds") or 1e9) < 75, timeout=20)
    assert published(kafka_bootstrap, topics) == []
    assert w.total("settlewatch_late_data_total") == 0


def test_the_demo_runs_by_itself_and_shows_findings_arriving(kafka_bootstrap, topic_prefix,
                                                              tmp_path):
    cmd = [sys.executable, "-c", "from streams.cli import main; main()", "demo", "--no-stack",
           "--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix, "--duration", "20",
           "--history", "3h", "--speed", "1500", "--seed", "3",
           "--metrics-port", str(free_port()), "--smtp-port", str(free_port()),
           "--run-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    # It started a worker and a mail sink, and stopped them again.
    assert "worker: up" in out and "stopped worker" in out and "stopped smtp sink" in out
    summary = next(line for line in out.splitlines() if line.startswith("demo done"))
    counts = {kind: int(n) for kind, n in
              re.findall(r"([a-z]+) (\d+)", summary.split("findings: ")[1])}
    assert counts["missing"] > 0 and counts["underpaid"] > 0, summary
    assert "injected faults found so far" in out


def _readme_worker_command() -> list[str]:
    """The worker command of README.md's "The worker" section, split into words."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines()
                if ln.startswith(".venv/bin/settlewatch worker "))
    return line.split()


def test_the_readme_worker_command_runs_as_written_from_a_fresh_directory(
        kafka_bootstrap, tmp_path):
    # Issue 14 item 1: faust made its data dir .settlewatch/<app id> without the parent.
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "settlewatch.toml").write_text((repo / "settlewatch.toml").read_text())
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "settlewatch") if w == ".venv/bin/settlewatch"
           else kafka_bootstrap if w == "127.0.0.1:9092" else str(port) if w == "9308" else w
           for w in _readme_worker_command()]
    assert cmd[1:3] == ["worker", "--config"], cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("the README's worker to join its group",
                 lambda: proc.poll() is None and scrape_metrics(port).get(
                     ("settlewatch_worker_up", ())) == 1 or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert (tmp_path / ".settlewatch" / "settlewatch").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]


def test_the_worker_stops_within_seconds_on_sigterm_after_its_broker_went_away(
        stack_env, tmp_path, topic_prefix):
    # Issue 14 item 13: with the broker gone, SIGTERM took more than 13 s. A broker of its own
    # (the session's is shared), stopped under the running worker.
    from conftest import run_stack
    port, controller = free_port(), free_port()
    env = dict(stack_env, SW_RUN_DIR=str(tmp_path / "stack"), SW_KAFKA_PORT=str(port),
               SW_KAFKA_CONTROLLER_PORT=str(controller))
    up = run_stack(env, "up", "kafka")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        w = Worker(f"127.0.0.1:{port}", "", tmp_path, app_id="sw-stop", name="stop",
                   options=("--tick-interval", "200ms"))
        w.start()
        try:
            w.wait_ready(timeout=90)
            down = run_stack(env, "down", "kafka", timeout=120)
            assert down.returncode == 0, down.stdout + down.stderr
            time.sleep(3)  # the worker notices: fetches, heartbeats and ticks now fail
            started = time.monotonic()
            w.proc.send_signal(signal.SIGTERM)
            rc = w.proc.wait(30)
            took = time.monotonic() - started
        finally:
            w.stop()
        assert took < 8, f"stopping took {took:.1f}s:\n{w.log()[-3000:]}"
        assert rc == 0, w.log()[-3000:]
    finally:
        run_stack(env, "down", "--purge", "kafka", timeout=120)
