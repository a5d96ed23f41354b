"""The worker, the simulator and audit replay against a real broker that authenticates: a
SASL_SSL listener (SCRAM-SHA-512) and a mutual-TLS listener, both added by deploy/local/stack
(SW_KAFKA_SASL_PORT, SW_KAFKA_SSL_PORT), with certificates made here by `openssl` and the SCRAM
user set by the stack (Kafka's AlterUserScramCredentials). All clients take their settings from
the SETTLEWATCH_KAFKA_* variables (streams/kafka_security.py). The password is checked to be in
no log, no command line and no environment of the processes, and in no file of the stack but
its own password file.

This module runs its own broker (its own run dir and ports, 512 MB heap) beside the session's.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streams.kafka_security import KafkaSecurity
from streams.wire import Topics

try:  # tests/integration is not a package: pytest puts it on sys.path
    from conftest import run_stack
    from test_worker import (HOUR, Worker, assert_same_findings, expected_findings, produce,
                             published, scenario, send_ticks, wait_for)
except ModuleNotFoundError:  # it became one
    from tests.integration.conftest import run_stack
    from tests.integration.test_worker import (HOUR, Worker, assert_same_findings,
                                               expected_findings, produce, published, scenario,
                                               send_ticks, wait_for)

PASSWORD = "scram-Secret-4-settlewatch-tests"
USER = "settlewatch"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(d: Path) -> dict[str, Path]:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, all PEM."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=settlewatch-test-ca", cwd=d)
    for name, cn, ext in (("broker", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                           "extendedKeyUsage=serverAuth,clientAuth\n"),
                          ("client", "settlewatch-worker", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=d)
        os.chmod(d / f"{name}.key", 0o600)
    return {n: d / n for n in ("ca.pem", "broker.pem", "broker.key", "client.pem",
                               "client.key")}


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """A broker with PLAINTEXT (for the test's own checks), SASL_SSL and SSL listeners."""
    root = tmp_path_factory.mktemp("secure")
    certs = make_certificates(root / "certs")
    password_file = root / "secrets" / "kafka-password"
    password_file.parent.mkdir()
    password_file.write_text(PASSWORD)
    os.chmod(password_file, 0o600)
    plain, controller, sasl, ssl_port = _free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SW_", "SETTLEWATCH_"))}
    env.update(SW_RUN_DIR=str(root / "run"), SW_KAFKA_PORT=str(plain),
               SW_KAFKA_CONTROLLER_PORT=str(controller), SW_KAFKA_SASL_PORT=str(sasl),
               SW_KAFKA_SSL_PORT=str(ssl_port), SW_KAFKA_SSL_CERT=str(certs["broker.pem"]),
               SW_KAFKA_SSL_KEY=str(certs["broker.key"]), SW_KAFKA_SSL_CA=str(certs["ca.pem"]),
               SW_KAFKA_SCRAM_USER=USER, SW_KAFKA_SCRAM_PASSWORD_FILE=str(password_file),
               SW_KAFKA_HEAP="512m")
    if "SW_LIBS_DIR" in os.environ:
        env["SW_LIBS_DIR"] = os.environ["SW_LIBS_DIR"]
    up = run_stack(env, "up", "kafka")
    if up.returncode != 0:
        run_stack(env, "down", "--purge", "kafka", timeout=120)
        pytest.fail(f"secured stack did not start:\n{up.stdout}\n{up.stderr}", pytrace=False)
    sasl_env = {"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "SETTLEWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "SETTLEWATCH_KAFKA_SASL_USERNAME": USER,
                "SETTLEWATCH_KAFKA_SASL_PASSWORD_FILE": str(password_file),
                "SETTLEWATCH_KAFKA_SSL_CAFILE": str(certs["ca.pem"])}
    mtls_env = {"SETTLEWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
                "SETTLEWATCH_KAFKA_SSL_CAFILE": str(certs["ca.pem"]),
                "SETTLEWATCH_KAFKA_SSL_CERTFILE": str(certs["client.pem"]),
                "SETTLEWATCH_KAFKA_SSL_KEYFILE": str(certs["client.key"])}
    try:
        yield {"plain": f"127.0.0.1:{plain}", "sasl": f"127.0.0.1:{sasl}",
               "ssl": f"127.0.0.1:{ssl_port}", "sasl_env": sasl_env, "mtls_env": mtls_env,
               "certs": certs, "password_file": password_file, "root": root,
               "up": up.stdout + up.stderr}
    finally:
        down = run_stack(env, "down", "--purge", "kafka", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def files_holding(root: Path, secret: str, but: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p != but
            and secret.encode() in p.read_bytes()]


def test_worker_simulator_and_replay_work_over_sasl_ssl_and_mutual_tls(secure, tmp_path,
                                                                      monkeypatch):
    topics = Topics.with_prefix("")  # the standard set, made by the stack on this broker
    events = scenario(3, merchants=15, sales_per_second=0.5, seed=61,
                      faults="missing=5%,underpaid=5%,duplicate=3%")
    # The simulator over mutual TLS (its producer reads SETTLEWATCH_KAFKA_* when it is made).
    for k, v in secure["mtls_env"].items():
        monkeypatch.setenv(k, v)
    sent = produce(secure["ssl"], topics, events).sent
    assert sent == len(events)
    for k in secure["mtls_env"]:
        monkeypatch.delenv(k)

    # The worker over SASL_SSL with SCRAM-SHA-512.
    w = Worker(secure["sasl"], "", tmp_path, app_id="sw-secure",
               options=("--tick-interval", "0", "--session-timeout", "6s"), name="worker")
    w.env = dict(secure["sasl_env"])
    w.start()
    try:
        w.wait_ready(timeout=90)
        w.wait_read(sent, timeout=120)
        end = max(e.event_time_ms for e in events) + 3 * 24 * HOUR
        send_ticks(secure["plain"], topics, end)
        want = expected_findings(secure["plain"], topics, end)
        assert want
        wait_for(f"{len(want)} findings",
                 lambda: len(published(secure["plain"], topics)) >= len(want), timeout=60)
        assert_same_findings(published(secure["plain"], topics), want)
        # Where the secret is not: the worker's command line, environment and log.
        pid = w.proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        ps = subprocess.run(["ps", "axeww", "-o", "pid,args"], capture_output=True,
                            text=True).stdout
    finally:
        w.stop()
    log = w.log()
    assert "Authenticated as settlewatch via SASL / SCRAM-SHA-512" in log
    for where, text in (("cmdline", cmdline), ("environ", environ), ("ps", ps.encode()),
                        ("log", log.encode())):
        assert PASSWORD.encode() not in text, f"the Kafka password is in the worker's {where}"

    # Audit replay over mutual TLS, as a command with the same variables.
    out = tmp_path / "replay"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTLEWATCH_")}
    env.update(secure["mtls_env"])
    first = min(e.event_time_ms for e in events)
    from streams.wire import format_time_ms
    done = subprocess.run(
        [sys.executable, "-c", "from streams.cli import main; main()", "replay",
         "--bootstrap", secure["ssl"], "--from", format_time_ms(first),
         "--to", format_time_ms(end), "--out", str(out), "--no-report", "--no-evidence",
         "--lead-in", "0s"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    replayed = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    assert replayed and {d["kind"] for d in replayed} <= {d["kind"] for d in want}
    assert PASSWORD not in done.stdout + done.stderr

    # Nothing of the stack's holds the password but the password file itself.
    assert files_holding(secure["root"], PASSWORD, secure["password_file"]) == []
    assert PASSWORD not in secure["up"]


def test_a_wrong_password_and_a_client_without_certificate_are_refused(secure, tmp_path):
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password")
    bad_sasl = KafkaSecurity(security_protocol="SASL_SSL", sasl_username=USER,
                             sasl_password_file=str(wrong),
                             ssl_cafile=str(secure["certs"]["ca.pem"]))
    no_cert = KafkaSecurity(security_protocol="SSL", ssl_cafile=str(secure["certs"]["ca.pem"]))
    good = KafkaSecurity.from_environment(secure["sasl_env"])
    admin = KafkaAdminClient(bootstrap_servers=secure["sasl"], request_timeout_ms=10_000,
                             **good.kafka_python())
    assert "pos.authorisations" in admin.list_topics()
    admin.close()

    def refused(sec: KafkaSecurity, address: str) -> None:
        with pytest.raises((KafkaError, OSError)):
            a = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5_000,
                                 **sec.kafka_python())
            try:
                a.list_topics()
            finally:
                a.close()

    # A refused client retries until its bootstrap timeout (30 s): the three at once, each in
    # its own thread; a client that got in fails its pytest.raises, and .result() raises that here.
    attempts = ((bad_sasl, secure["sasl"]), (no_cert, secure["ssl"]),
                (KafkaSecurity(), secure["sasl"]))
    with ThreadPoolExecutor(len(attempts)) as pool:
        for done in [pool.submit(refused, sec, address) for sec, address in attempts]:
            done.result()
