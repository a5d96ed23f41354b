"""`settlewatch demo`: the whole live pipeline in one command, for a first look.

It brings up what is not running yet, and stops on Ctrl-C (or after `--duration`) only what it
started itself:

1. the local stack (deploy/local/stack): Kafka 4.4.0, and Prometheus + Alertmanager when
   deploy/local/monitoring.sh can start them (they scrape the worker and mail alerts);
2. an SMTP sink (streams.ops.smtpsink) that keeps the alert mails as files;
3. a worker (`settlewatch worker`) with a fresh app id that starts at the end of the inputs;
4. the simulator: `--history` of traffic with injected faults, sent at `--speed` times real
   time until it reaches the wall clock, then in real time (event time starts in the past and
   never runs ahead of the wall clock, or the future_timestamp rule would reject it), plus a
   few bad records for the dead-letter path.

Meanwhile it shows the findings arriving: counts by kind, the last few, where the metrics,
Prometheus and the mails are. At the end it compares what was found with what was injected.

Ids of simulated events carry the run's id, so findings of an earlier demo run (same
simulator counters) are never mistaken for this run's.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import click

from streams.wire import Topics

REPO = Path(__file__).resolve().parents[2]  # streams/ops/demo.py -> the repository
STACK = REPO / "deploy" / "local" / "stack"
MONITORING = REPO / "deploy" / "local" / "monitoring.sh"
HOUR_MS = 3_600_000

KIND_ORDER = ("missing", "late", "duplicate", "underpaid", "overpaid", "orphan")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens there (SO_REUSEADDR, as the servers bind: a socket of a process that
    just stopped, in TIME_WAIT, does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%MZ", time.gmtime(ms / 1000))


@dataclass
class Plan:
    bootstrap: str
    use_stack: bool
    topic_prefix: str
    metrics_port: int
    smtp_port: int
    prometheus_port: int
    history_ms: int
    speed: float
    sales_per_second: float
    merchants: int
    faults: str
    seed: int
    duration_s: float | None
    config: str | None
    run_dir: Path
    run_id: str = field(default_factory=lambda: _base36(int(time.time())))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


class Demo:
    def __init__(self, plan: Plan, echo=click.echo) -> None:
        self.plan = plan
        self.echo = echo
        self.topics = Topics.with_prefix(plan.topic_prefix)
        self._stops: list[tuple[str, object]] = []  # (what, how to stop it), in start order
        self.monitoring = False
        self.worker: subprocess.Popen | None = None
        self.worker_log = plan.run_dir / f"demo-{plan.run_id}-worker.log"
        self.maildir = plan.run_dir / "mail"
        self.stop_sim = threading.Event()
        self.sim_stats = None
        self.sim_error: BaseException | None = None
        self.sim_thread: threading.Thread | None = None
        self.simulation = None
        self.findings: Counter = Counter()
        self.found_subjects: dict[str, set[str]] = {}
        self.last: deque = deque(maxlen=8)
        self._stack_env = dict(os.environ)
        port = plan.bootstrap.rsplit(":", 1)[-1]
        self._stack_env.update(SW_KAFKA_PORT=port, SW_METRICS_TARGETS=f"127.0.0.1:{plan.metrics_port}",
                               SW_SMTP_PORT=str(plan.smtp_port),
                               SW_PROMETHEUS_PORT=str(plan.prometheus_port))

    # -- start ------------------------------------------------------------------------------

    def run(self) -> int:
        interrupted = False
        previous = signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C
        try:
            self.plan.run_dir.mkdir(parents=True, exist_ok=True)
            if self.plan.use_stack:
                self._start_stack()
            self._ensure_topics()
            self._start_smtp()
            consumer = self._anomaly_consumer()
            self._start_worker()
            self._start_simulator()
            self._watch(consumer)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._stop_all()
        self._summary(interrupted)
        return 0

    def _stack(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(STACK), *args], env=self._stack_env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def _start_stack(self) -> None:
        if not STACK.exists():
            raise click.ClickException(
                f"{STACK} not found (an installed package has no deploy/); start Kafka yourself "
                f"and use --no-stack --bootstrap HOST:PORT")
        if self._stack("status", "kafka").returncode == 0:
            self.echo(f"kafka: already running at {self.plan.bootstrap} (left running)")
        else:
            self.echo("kafka: starting (deploy/local/stack up kafka) ...")
            up = self._stack("up", "kafka")
            if up.returncode != 0:
                raise click.ClickException(f"deploy/local/stack up kafka failed:\n{up.stdout}"
                                           f"{up.stderr}")
            self._stops.append(("kafka", lambda: self._stack("down", "kafka")))
            self.echo(up.stdout.strip().splitlines()[-1] if up.stdout.strip() else "kafka: up")
        if not MONITORING.exists():
            self.echo("monitoring: deploy/local/monitoring.sh not present, no Prometheus")
            return
        if self._stack("status", "monitoring").returncode == 0:
            self.echo("monitoring: already running (left running)")
            self.monitoring = True
            return
        self.echo("monitoring: starting Prometheus and Alertmanager ...")
        up = self._stack("up", "monitoring", timeout=600)
        if up.returncode != 0:
            self.echo(f"monitoring: could not start, going on without it:\n"
                      f"{(up.stdout + up.stderr).strip()[-800:]}")
            return
        self.monitoring = True
        self._stops.append(("monitoring", lambda: self._stack("down", "monitoring")))

    def _ensure_topics(self) -> None:
        """The topics exist with the same partition count (the stack makes the standard ones;
        a --topic-prefix set or a bare broker gets them here)."""
        from kafka.admin import KafkaAdminClient
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.plan.bootstrap,
                                         client_id="settlewatch-demo")
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"no Kafka at {self.plan.bootstrap}: {exc}") from exc
                time.sleep(0.5)
        try:
            names = list(self.topics.all())
            found = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(names)
                     if not d.get("error_code")}
            missing = [n for n in names if n not in found]
            if missing:
                admin.create_topics({n: {"num_partitions": 6, "replication_factor": 1}
                                     for n in missing}, wait_for_metadata=True)
                self.echo(f"kafka: created {', '.join(missing)}")
        finally:
            admin.close()

    def _start_smtp(self) -> None:
        port = self.plan.smtp_port
        if not _port_free(port):
            self.echo(f"smtp: something already listens on 127.0.0.1:{port}; alerts go there")
            self.maildir = None
            return
        self.maildir.mkdir(parents=True, exist_ok=True)
        log = open(self.plan.run_dir / f"demo-{self.plan.run_id}-smtp.log", "ab")
        proc = subprocess.Popen([sys.executable, "-c", "from streams.cli import main; main()",
                                 "smtp-sink", "--port", str(port), "--maildir", str(self.maildir)],
                                stdout=log, stderr=subprocess.STDOUT)
        self._stops.append(("smtp sink", lambda: _terminate(proc)))
        self.echo(f"smtp: sink on 127.0.0.1:{port}, mails in {self.maildir}")

    def _anomaly_consumer(self):
        from kafka import KafkaConsumer, TopicPartition
        consumer = KafkaConsumer(bootstrap_servers=self.plan.bootstrap, group_id=None,
                                 enable_auto_commit=False, client_id="settlewatch-demo")
        tps = [TopicPartition(self.topics.anomalies, p) for p in range(6)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve "end" now, before the worker writes
        return consumer

    def _start_worker(self) -> None:
        p = self.plan
        if not _port_free(p.metrics_port):
            raise click.ClickException(f"port {p.metrics_port} is taken (another worker?); "
                                       f"use --metrics-port")
        cmd = [sys.executable, "-c", "from streams.cli import main; main()", "worker",
               "--bootstrap", p.bootstrap, "--app-id", f"settlewatch-demo-{p.run_id}",
               "--topic-prefix", p.topic_prefix, "--metrics-port", str(p.metrics_port),
               "--offset-reset", "latest",
               "--data-dir", str(p.run_dir / f"demo-{p.run_id}-faust")]
        if p.config:
            cmd += ["--config", p.config]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
        log = open(self.worker_log, "ab")
        self.worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._stops.append(("worker", lambda: _terminate(self.worker, 30)))
        self.echo(f"worker: starting (log {self.worker_log}) ...")
        deadline = time.monotonic() + 120
        while self._metric("settlewatch_worker_up") != 1:
            if self.worker.poll() is not None:
                raise click.ClickException(f"the worker exited ({self.worker.returncode}); "
                                           f"see {self.worker_log}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"the worker did not start; see {self.worker_log}")
            time.sleep(0.3)
        self.echo(f"worker: up, metrics on http://127.0.0.1:{p.metrics_port}/metrics")

    def _start_simulator(self) -> None:
        from streams.core.policy import default_policy, load_policy
        from streams.sim.producer import simulate_to_kafka
        from streams.sim.simulator import SimConfig, Simulation, bad_records, parse_faults
        p = self.plan
        policy = load_policy(p.config) if p.config else default_policy()
        now = _now_ms()
        cfg = SimConfig(start_ms=now - p.history_ms, end_ms=now + 365 * 24 * HOUR_MS,
                        merchants=p.merchants, sales_per_second=p.sales_per_second,
                        faults=parse_faults(p.faults), seed=p.seed, jitter_ms=60_000)
        self.simulation = Simulation(cfg, policy)
        tag = p.run_id + "-"
        events = (_tagged(e, tag) for e in self.simulation.events())
        bad = bad_records(random.Random(p.seed), 24, now)

        def run() -> None:
            try:
                self.sim_stats = simulate_to_kafka(
                    events, p.bootstrap, auth_topic=self.topics.authorisations,
                    settlement_topic=self.topics.settlements, speed=p.speed, bad=bad,
                    bad_every=5_000, stop=self.stop_sim, progress=self._progress)
            except BaseException as exc:  # shown by the watcher
                self.sim_error = exc

        self.sim_thread = threading.Thread(target=run, name="simulator", daemon=True)
        self.sim_thread.start()
        self._stops.append(("simulator", self._stop_simulator))
        self.echo(f"simulator: {p.merchants} merchants, {p.sales_per_second:g} sales/s, "
                  f"faults {p.faults or 'none'}; from {_iso(now - p.history_ms)} at x{p.speed:g}")

    def _progress(self, stats) -> None:
        self.sim_stats = stats

    def _stop_simulator(self) -> None:
        self.stop_sim.set()
        if self.sim_thread is not None:
            self.sim_thread.join(30)

    # -- watch ------------------------------------------------------------------------------

    def _metric_families(self) -> dict:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.plan.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return {}
        from prometheus_client.parser import text_string_to_metric_families
        out: dict = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def _metric(self, name: str) -> float | None:
        return self._metric_families().get((name, ()))

    def _watch(self, consumer) -> None:
        started = time.monotonic()
        tty = sys.stdout.isatty()
        next_line = 0.0
        while True:
            for records in consumer.poll(500, max_records=10_000).values():
                for m in records:
                    self._take(m.value)
            if self.worker is not None and self.worker.poll() is not None:
                self.echo(f"worker exited ({self.worker.returncode}); see {self.worker_log}")
                return
            if self.sim_error is not None:
                self.echo(f"simulator failed: {self.sim_error}")
                return
            elapsed = time.monotonic() - started
            if tty:
                self._screen(elapsed)
            elif elapsed >= next_line:
                self.echo(self._line(elapsed))
                next_line = elapsed + 5
            if self.plan.duration_s is not None and elapsed >= self.plan.duration_s:
                return

    def _take(self, value: bytes) -> None:
        try:
            d = json.loads(value)
        except ValueError:
            return
        kind, status = d.get("kind"), d.get("status")
        self.findings[(kind, status)] += 1
        if status == "open":
            self.found_subjects.setdefault(kind, set()).add(d.get("subject"))
        self.last.append(d)

    def _counts(self) -> str:
        parts = []
        for kind in KIND_ORDER:
            n = self.findings[(kind, "open")]
            text = f"{kind} {n}"
            if kind == "missing" and self.findings[(kind, "resolved")]:
                text += f" ({self.findings[(kind, 'resolved')]} resolved)"
            parts.append(text)
        return "  ".join(parts)

    def _line(self, elapsed: float) -> str:
        m = self._metric_families()
        read = sum(v for (n, _), v in m.items() if n == "settlewatch_events_read_total")
        sent = self.sim_stats.sent if self.sim_stats else 0
        return f"[{elapsed:5.0f}s] sent {sent} read {read:.0f} | findings: {self._counts()}"

    def _screen(self, elapsed: float) -> None:
        p, m = self.plan, self._metric_families()
        read = sum(v for (n, _), v in m.items() if n == "settlewatch_events_read_total")
        rejected = Counter()
        for (n, labels), v in m.items():
            if n == "settlewatch_events_rejected_total" and v:
                rejected[dict(labels)["reason"]] += int(v)
        lag = m.get(("settlewatch_event_clock_lag_seconds", ()))
        st = self.sim_stats
        sim_t = st.last_event_ms if st else None
        behind = "" if sim_t is None else f" ({(_now_ms() - sim_t) / HOUR_MS:.1f}h behind the wall clock)"
        lines = [
            f"settlewatch demo, run {p.run_id}: {elapsed:.0f}s   (Ctrl-C stops what it started)",
            "",
            f"  simulator   event time {_iso(sim_t)}{behind}, x{p.speed:g}; "
            f"sent {st.sent if st else 0:,} records ({st.bad if st else 0} bad)",
            f"  worker      read {read:,.0f}; event clock "
            f"{'-' if lag is None else f'{lag / 3600:.1f}h'} behind the wall clock",
            f"  findings    {self._counts()}",
            f"  dead letters {sum(rejected.values())}"
            + (f" ({', '.join(f'{r} {n}' for r, n in rejected.most_common())})" if rejected else ""),
            "",
            "  last findings:",
        ]
        for d in list(self.last)[::-1]:
            amount = d.get("difference_minor") or d.get("expected_minor") or 0
            lines.append(f"    {d.get('event_time', '')[:16]}Z {d.get('kind', ''):9} "
                         f"{d.get('status', ''):8} {d.get('merchant_id', '')} "
                         f"{d.get('subject', '')[:28]:28} {amount / 100:>10.2f} "
                         f"{d.get('currency', '')} {d.get('probable_cause') or ''}")
        lines += ["", f"  metrics      http://127.0.0.1:{p.metrics_port}/metrics"]
        if self.monitoring:
            lines += [f"  prometheus   http://127.0.0.1:{p.prometheus_port}/alerts",
                      f"  alertmanager http://127.0.0.1:"
                      f"{os.environ.get('SW_ALERTMANAGER_PORT', '9095')}"]
        if self.maildir is not None:
            mails = len(list(self.maildir.glob("*.eml"))) if self.maildir.exists() else 0
            lines.append(f"  alert mails  {mails} in {self.maildir}")
        sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        sys.stdout.flush()

    # -- stop -------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        for what, stop in reversed(self._stops):
            try:
                stop()
                self.echo(f"stopped {what}")
            except Exception as exc:  # keep stopping the rest
                self.echo(f"stopping {what} failed: {exc}")
        self._stops.clear()

    def _summary(self, interrupted: bool) -> None:
        st = self.sim_stats
        self.echo("")
        self.echo(f"demo {'interrupted' if interrupted else 'done'}: sent "
                  f"{st.sent if st else 0:,} records; findings: {self._counts()}")
        if self.simulation is None:
            return
        injected: dict[str, set[str]] = {}
        for inj in self.simulation.injected:
            injected.setdefault(inj.kind, set()).add(self.plan.run_id + "-" + inj.subject)
        rows = []
        for kind in KIND_ORDER:
            want = injected.get(kind, set())
            if not want:
                continue
            hit = len(want & self.found_subjects.get(kind, set()))
            rows.append(f"{kind} {hit}/{len(want)}")
        if rows:
            self.echo("injected faults found so far (faults not yet due are not findings yet): "
                      + ", ".join(rows))


def _tagged(e, tag: str):
    """The event with its ids (not its merchant) prefixed by the run's tag."""
    from streams.core.events import Credit
    if type(e) is Credit:
        return e._replace(credit_id=tag + e.credit_id,
                          auth_ids=tuple(tag + a for a in e.auth_ids),
                          batch_id=None if e.batch_id is None else tag + e.batch_id)
    return e._replace(event_id=tag + e.event_id, auth_id=tag + e.auth_id,
                      batch_id=None if e.batch_id is None else tag + e.batch_id)


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def _terminate(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _duration_ms(text: str) -> int:
    from streams.core.policy import PolicyError, parse_duration_ms
    try:
        return parse_duration_ms(text, "history")
    except PolicyError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("demo")
@click.option("--bootstrap", default="127.0.0.1:9092", show_default=True,
              help="Kafka; the local stack is started on this port when it is not running.")
@click.option("--no-stack", is_flag=True, help="Do not touch deploy/local/stack (Kafka must "
              "already answer at --bootstrap).")
@click.option("--duration", type=float, help="Stop by itself after this many seconds.")
@click.option("--history", default="36h", show_default=True,
              help="How far in the past the simulated traffic starts.")
@click.option("--speed", default=600.0, show_default=True,
              help="Event time per wall-clock time while catching up with the present.")
@click.option("--rate", default="2/s", show_default=True, help="Sales per second of event time.")
@click.option("--merchants", default=200, show_default=True)
@click.option("--faults", default="late=2%,missing=2%,duplicate=1%,underpaid=2%,overpaid=1%,"
              "orphan=0.5%,refund_netted=1%,redelivery=1%", show_default=True)
@click.option("--seed", type=int, help="Simulator seed [random].")
@click.option("--config", type=click.Path(exists=True, dir_okay=False),
              help="Policy file [the packaged sample].")
@click.option("--topic-prefix", default="", help="Use a private topic set (created if absent).")
@click.option("--metrics-port", default=9308, show_default=True,
              help="The worker's /metrics (Prometheus scrapes 127.0.0.1:9308).")
@click.option("--smtp-port", default=2525, show_default=True)
@click.option("--prometheus-port", default=9090, show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Logs, mails and state [deploy/local/run, or ./settlewatch-demo].")
def demo_command(bootstrap: str, no_stack: bool, duration: float | None, history: str,
                 speed: float, rate: str, merchants: int, faults: str, seed: int | None,
                 config: str | None, topic_prefix: str, metrics_port: int, smtp_port: int,
                 prometheus_port: int, run_dir: str | None) -> None:
    """Start Kafka, monitoring, a mail sink, a worker and the simulator; watch findings arrive."""
    from streams.sim.simulator import parse_faults, parse_rate
    try:
        parse_faults(faults)
        sales_per_second = parse_rate(rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if speed <= 0:
        raise click.BadParameter("--speed must be positive")
    default_run = REPO / "deploy" / "local" / "run" if STACK.exists() else Path("settlewatch-demo")
    plan = Plan(bootstrap=bootstrap, use_stack=not no_stack, topic_prefix=topic_prefix,
                metrics_port=metrics_port, smtp_port=smtp_port, prometheus_port=prometheus_port,
                history_ms=_duration_ms(history), speed=speed, sales_per_second=sales_per_second,
                merchants=merchants, faults=faults,
                seed=seed if seed is not None else random.randrange(1 << 30),
                duration_s=duration, config=config,
                run_dir=Path(run_dir) if run_dir else default_run)
    if shutil.which("java") is None and plan.use_stack:
        click.echo("note: no java on PATH; the local stack needs it (or use --no-stack)")
    Demo(plan).run()
