"""End to end, real components only: Kafka (the session broker), the live worker
(`settlewatch worker` as a subprocess), Prometheus and Alertmanager from Debian's packages
(deploy/local/monitoring.sh on free loopback ports) and an SMTP sink with AUTH.

The scenario: an acquirer whose credits stop coming. Sales are produced to the input topics with
kafka-python as the wire contract says (JSON, key merchant_id, event time = now); some are
credited on time, three of one acquirer never are. The policy (written for this test) makes a
sale due 15 seconds after it, with no grace, so the worker's own silent-input clock ticks raise
the missing findings within seconds. Then:

- Prometheus scrapes the worker (up == 1, settlewatch_worker_up == 1);
- the worker publishes the three missing findings on the anomalies topic, and its metrics
  (findings counter, open missing gauges) show them for the acquirer;
- every alert and recording rule, and every dashboard expression, runs on the real Prometheus,
  and the dashboard panels show the incident;
- SettlewatchMissingCreditsAmountHigh fires (the three missing credits are above the
  1,000,000-minor-unit threshold of alerts/settlewatch.rules.yaml), and Alertmanager mails it,
  logging in to the sink, with the acquirer, the amount and the count in the text.

Wall time is set by the alert's `for: 1m` and the settlement route's `group_wait: 30s`: about
two and a half minutes. Every process started here is stopped by its fixture, also on failure.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.wire import Topics
from streams.ops.smtpsink import free_port, text_of

try:  # tests/integration is not a package: pytest puts it on sys.path
    from monitoring_helpers import (MonitoringStack, dashboard_queries, is_gone,
                                    scrape_metrics, wait_until)
except ModuleNotFoundError:  # it became one
    from tests.integration.monitoring_helpers import (MonitoringStack, dashboard_queries,
                                                      is_gone, scrape_metrics, wait_until)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6

# Sales are due 15 s after their event time, no grace; the allowed out-of-orderness is short so
# that the test's own events never count as late. Fee: 60 bps on the "credit" channel.
POLICY = """\
timezone = "UTC"

[tolerance]
absolute_minor = 1
relative_bps = 0

[fees.credit]
bps = 60

[[cycles]]
acquirer = "*"
mode = "per_sale"
due = "+15s"
grace = "0s"

[time]
lateness = "5s"
"""
DUE_S = 15

DOWN = "acq-e2e-down"  # its settlement run stops: three sales are never credited
FINE = "acq-e2e-fine"  # credits everything on time
CURRENCY = "CNY"
MISSING_SALE_MINOR = 400_000  # 4,000.00 CNY each
MISSING_NET_MINOR = 400_000 - 2_400  # minus 60 bps: what the credit should have been
MISSING_COUNT = 3
MISSING_TOTAL_MINOR = MISSING_COUNT * MISSING_NET_MINOR  # 1,192,800 > the 1,000,000 threshold
CREDITED_SALE_MINOR = 250_000
CREDITED_NET_MINOR = 250_000 - 1_500

ALERT = "SettlewatchMissingCreditsAmountHigh"


# ------------------------------------------------------------------------------------ helpers
def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def sale(auth_id: str, merchant: str, acquirer: str, amount_minor: int) -> dict:
    return {"type": "authorisation", "event_id": f"ev-{auth_id}", "auth_id": auth_id,
            "merchant_id": merchant, "terminal_id": f"T-{merchant}", "acquirer": acquirer,
            "channel": "credit", "amount_minor": amount_minor, "currency": CURRENCY,
            "event_time": rfc3339(now_ms()), "status": "approved",
            "pan_masked": "622848******1234"}


def credit(sale_record: dict, net_minor: int) -> dict:
    return {"type": "settlement_credit", "credit_id": f"cr-{sale_record['auth_id']}",
            "merchant_id": sale_record["merchant_id"], "acquirer": sale_record["acquirer"],
            "amount_minor": net_minor, "currency": CURRENCY,
            "event_time": rfc3339(now_ms()), "auth_ids": [sale_record["auth_id"]],
            "fee_minor": sale_record["amount_minor"] - net_minor}


def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of `topic` now, in offset order per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, msgs in consumer.poll(500).items():
                out += [m for m in msgs if m.offset < ends[tp]]
        return out
    finally:
        consumer.close()


class Worker:
    """`settlewatch worker` (the installed console script) in a subprocess."""

    def __init__(self, workdir: Path, args: list[str], metrics_port: int) -> None:
        self.workdir = workdir
        self.metrics_port = metrics_port
        self.log_path = workdir / "worker.log"
        exe = Path(sys.executable).with_name("settlewatch")
        if not exe.exists():
            exe = ROOT / ".venv" / "bin" / "settlewatch"
        assert exe.exists(), f"no settlewatch console script next to {sys.executable}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(exe), "worker", *args], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=workdir, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def samples(self) -> dict[tuple[str, tuple], float]:
        return scrape_metrics(self.metrics_port)

    def wait_ready(self, timeout: float = 90) -> None:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited with {self.proc.returncode}:\n"
                            f"{self.log()[-4000:]}", pytrace=False)
            return self.samples().get(("settlewatch_worker_up", ())) == 1
        wait_until(ready, timeout, "the worker to join its group and serve worker_up 1", 0.3)

    @contextlib.contextmanager
    def running(self, log_tail: int = 2000):
        """Ready on entry; stopped on exit, also on failure, its log's last lines printed."""
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()
            print(f"--- worker log (last lines)\n{self.log()[-log_tail:]}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}."


def create_topics(kafka_admin, prefix: str, partitions: int = PARTITIONS) -> Topics:
    """A topic set of its own (co-partitioned: the same number of partitions each)."""
    names = Topics.with_prefix(prefix)
    kafka_admin.create_topics(
        {name: {"num_partitions": partitions, "replication_factor": 1} for name in names.all()},
        wait_for_metadata=True)
    return names


@contextlib.contextmanager
def running_worker(kafka_bootstrap: str, prefix: str, workdir: Path, policy_text: str,
                   partitions: int = PARTITIONS):
    """`settlewatch worker` on `policy_text`, ready; stopped (and its log shown) on exit."""
    policy = workdir / "settlewatch.toml"
    policy.write_text(policy_text)
    port = free_port()
    w = Worker(workdir, [
        "--config", str(policy), "--bootstrap", kafka_bootstrap,
        "--metrics-port", str(port), "--app-id", f"sw-{prefix.rstrip('.')}",
        "--topic-prefix", prefix,
        "--partitions", str(partitions), "--data-dir", str(workdir / "faust-data"),
        # Silent inputs move event time to the wall clock minus 2 s, checked 5 times a second.
        "--tick-interval", "200ms", "--tick-idle", "1s", "--tick-allowance", "2s",
    ], port)
    with w.running():
        yield w


@contextlib.contextmanager
def running_monitoring(run_dir: Path, smtp_sink, worker: Worker, **env: str):
    """Prometheus and Alertmanager scraping `worker` every 2 s; every process gone on exit."""
    s = MonitoringStack(run_dir, [f"127.0.0.1:{worker.metrics_port}"],
                        smtp_sink, smtp_user="alertmanager",
                        smtp_password_file=smtp_sink.password_file,
                        env={"SW_SCRAPE_INTERVAL": "2s", **env})
    try:
        s.up()
        yield s
    finally:
        pids = s.pids()
        s.down()
        for pid in pids:
            assert is_gone(pid), f"pid {pid} still runs after monitoring_down"


@pytest.fixture(scope="module")
def topics(kafka_admin, prefix) -> Topics:
    return create_topics(kafka_admin, prefix)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap, topics, prefix, tmp_path_factory):
    with running_worker(kafka_bootstrap, prefix, tmp_path_factory.mktemp("worker"),
                        POLICY) as w:
        yield w


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp_sink, worker):
    with running_monitoring(tmp_path_factory.mktemp("run"), smtp_sink, worker) as s:
        yield s


@pytest.fixture(scope="module")
def incident(kafka_bootstrap, topics, worker, stack) -> dict:
    """Produce the scenario once Prometheus scrapes the worker; what was sent."""
    wait_until(lambda: stack.values('up{job="settlewatch"} == 1'), 30,
               "Prometheus to scrape the worker")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        return _produce_incident(producer, topics)
    finally:
        producer.close()


def _produce_incident(producer: KafkaProducer, topics: Topics) -> dict:
    def send(topic: str, record: dict | bytes, key: str) -> None:
        value = record if isinstance(record, bytes) else orjson.dumps(record)
        producer.send(topic, key=key.encode(), value=value)

    # First the history: both acquirers' sales credited on time, and one unreadable record,
    # which goes to the dead-letter topic. These items close, matched, five seconds before the
    # missing ones: streams.live.metrics creates an acquirer's finding counters (at 0) only when its
    # first item closes, and a counter that Prometheus first sees at 3 shows no increase(), so
    # without a history the "amount at stake" panel would miss the acquirer's first findings.
    credited = []
    for i, acquirer in enumerate((DOWN, DOWN, FINE, FINE, FINE)):
        s = sale(f"e2e-ok-{i}", f"M-E2E-{i}", acquirer, CREDITED_SALE_MINOR)
        send(topics.authorisations, s, s["merchant_id"])
        credited.append(s)
    for s in credited:
        send(topics.settlements, credit(s, CREDITED_NET_MINOR), s["merchant_id"])
    send(topics.authorisations, b'{"type": "authorisation", "amount_minor": 12', "M-E2E-0")
    producer.flush()
    time.sleep(5)
    # Then DOWN stops paying: three sales, of three merchants, never credited.
    missing = [sale(f"e2e-missing-{i}", f"M-E2E-{10 + i}", DOWN, MISSING_SALE_MINOR)
               for i in range(MISSING_COUNT)]
    for s in missing:
        send(topics.authorisations, s, s["merchant_id"])
    producer.flush()
    return {"credited": credited, "missing": missing, "sent_at": time.monotonic()}


# -------------------------------------------------------------------------------------- tests
def test_prometheus_scrapes_the_live_worker(stack, worker):
    target = wait_until(
        lambda: [t for t in stack.targets()
                 if t["labels"]["instance"] == f"127.0.0.1:{worker.metrics_port}"
                 and t["health"] == "up"], 30, "the worker target to be up")
    assert target[0]["labels"]["job"] == "settlewatch"
    assert [v for _, v in stack.values('up{job="settlewatch"}')] == [1]
    wait_until(lambda: stack.values("settlewatch_worker_up"), 30, "settlewatch_worker_up")
    assert [v for _, v in stack.values("settlewatch_worker_up")] == [1]


def test_the_worker_publishes_the_missing_findings_on_the_anomalies_topic(
        kafka_bootstrap, topics, incident):
    def found():
        records = read_topic(kafka_bootstrap, topics.anomalies)
        return records if len(records) >= MISSING_COUNT else None

    records = wait_until(found, DUE_S + 30, "three findings on the anomalies topic", 0.5)
    time.sleep(2)  # nothing else may follow: the credited sales were paid in full and on time
    records = read_topic(kafka_bootstrap, topics.anomalies)
    findings = [orjson.loads(m.value) for m in records]
    assert sorted((f["kind"], f["status"], f["acquirer"], f["subject"]) for f in findings) == [
        ("missing", "open", DOWN, s["auth_id"]) for s in incident["missing"]]
    by_subject = {s["auth_id"]: s for s in incident["missing"]}
    for m, f in zip(records, findings):
        merchant = by_subject[f["subject"]]["merchant_id"]
        assert m.key == merchant.encode() and f["merchant_id"] == merchant
        assert (f["expected_minor"], f["received_minor"], f["currency"]) == \
            (MISSING_NET_MINOR, 0, CURRENCY)
    # The unreadable record went to the dead-letter topic, not into the reconciler.
    dead = [orjson.loads(m.value) for m in read_topic(kafka_bootstrap, topics.deadletter)]
    assert [d["reason"] for d in dead] == ["malformed_json"]


def test_prometheus_sees_the_missing_findings_and_the_open_missing_credits(stack, incident):
    def missing_counted():
        v = stack.values(f'sum(settlewatch_findings_total{{kind="missing",status="open",'
                         f'acquirer="{DOWN}"}})')
        return v and v[0][1] == MISSING_COUNT

    wait_until(missing_counted, DUE_S + 40, "settlewatch_findings_total{kind=missing} at 3")
    assert [v for _, v in stack.values(
        'sum(settlewatch_findings_total{kind="missing"}) > 0')] == [MISSING_COUNT]
    assert {(m["acquirer"], m["currency"], v) for m, v in stack.values(
        "settlewatch_open_missing_items > 0")} == {(DOWN, CURRENCY, MISSING_COUNT)}
    assert {(m["acquirer"], m["currency"], v) for m, v in stack.values(
        "settlewatch_open_missing_amount_minor > 0")} == {(DOWN, CURRENCY, MISSING_TOTAL_MINOR)}
    # The credited sales closed matched, the missing ones unmatched; every acquirer's series
    # exist from its first sale on, at 0 until something closes (so increase() sees the first).
    closed = {(m["acquirer"], m["outcome"]): v for m, v in stack.values(
        "sum by (acquirer, outcome) (settlewatch_items_closed_total)")}
    assert closed == {(DOWN, "matched"): 2, (FINE, "matched"): 3,
                      (DOWN, "unmatched"): MISSING_COUNT, (FINE, "unmatched"): 0}


def test_the_missing_credit_alert_fires_and_its_email_reaches_the_sink(stack, smtp_sink,
                                                                      incident):
    firing = f'ALERTS{{alertname="{ALERT}",alertstate="firing",acquirer="{DOWN}"}}'
    wait_until(lambda: stack.values(firing), DUE_S + 120, f"{ALERT} to fire for {DOWN}")
    msg = smtp_sink.wait_for(lambda m: ALERT in text_of(m), timeout=90)
    print(f"missing-credit mail {time.monotonic() - incident['sent_at']:.0f}s after the "
          f"missing sales were produced")
    lines = text_of(msg).splitlines()
    body = "\n".join(lines)
    amount = f"{MISSING_TOTAL_MINOR / 100:.2f} CNY ({MISSING_TOTAL_MINOR} minor units)"
    assert msg["Subject"] == (f"[FIRING:1] settlewatch critical {DOWN}: Missing credits at "
                              f"{DOWN}: {MISSING_TOTAL_MINOR / 100:.2f} CNY not credited past "
                              f"the deadline")
    assert msg["To"] == "ops@test.example" and msg["From"] == "settlewatch@test.example"
    assert f"  Acquirer:         {DOWN}" in lines
    assert f"  Amount at stake:  {amount}" in lines
    assert f"  Count:            {MISSING_COUNT}" in lines
    assert f"<b>{amount}</b>" in text_of(msg, "html")
    assert FINE not in body
    # Alertmanager logged in with the password it read from its password file.
    assert smtp_sink.authenticator.logins


def test_every_rule_expression_runs_on_the_real_prometheus(stack, incident):
    rules = stack.rules()
    in_files = [m for f in (ROOT / "alerts").glob("*.rules.yaml")
                for m in re.findall(r"^\s*- (?:alert|record):", f.read_text(), re.M)]
    assert len(rules) == len(in_files) > 20
    for rule in rules:
        answer = stack.query(rule["query"])
        assert answer["status"] == "success", (rule["name"], answer)
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in stack.rules()),
               30, "every rule to be evaluated")
    bad = [(r["name"], r.get("lastError")) for r in stack.rules() if r["health"] != "ok"]
    assert bad == []


def test_every_dashboard_query_runs_and_the_panels_show_the_incident(stack, incident):
    # After the alert fired (the "alerts firing" panels count it).
    wait_until(lambda: stack.values(f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}'),
               DUE_S + 120, f"{ALERT} to fire")
    queries = dashboard_queries()
    assert len(queries) > 40
    empty = []
    for dashboard, panel, q in queries:
        answer = stack.query(q)
        assert answer["status"] == "success", (dashboard, panel, q, answer)
        if not answer["data"]["result"]:
            empty.append((dashboard, panel, q))
    assert empty == [], "panels that find no data in a live incident"

    def panel(title: str) -> list[tuple[dict, float]]:
        """The series of a panel's queries (all of them, for a panel with several)."""
        return [s for q in dict.fromkeys(q for _, p, q in queries if p == title)
                for s in stack.values(q)]

    major = MISSING_TOTAL_MINOR / 100
    assert panel("Open missing amount") == [({"currency": CURRENCY}, major)]
    assert panel("Open missing items") == [({}, MISSING_COUNT)]
    assert panel("Open missing amount by acquirer (major units)") == [
        ({"acquirer": DOWN, "currency": CURRENCY}, major)]
    assert panel("Settlement alerts firing") == [({}, 1)]
    at_stake = {(m["acquirer"], m["kind"]): v for m, v in panel(
        "Amount at stake in the range by acquirer and kind (major units)")}
    assert at_stake.keys() == {(DOWN, "missing")}
    assert at_stake[(DOWN, "missing")] == pytest.approx(major, rel=0.25)  # increase() extrapolates
    assert [v for _, v in panel("Workers up")] == [1, 1]
    assert {m["reason"] for m, _ in panel("Dead letters per second by reason")} == \
        {"malformed_json"}
