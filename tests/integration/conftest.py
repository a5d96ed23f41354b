"""Integration fixtures: one real Kafka 4.4.0 broker per test session.

The broker is started by ``deploy/local/stack up kafka`` with its own run directory (under
pytest's tmp dir) and its own ports, so it can run beside a developer's stack on 9092/9093;
it is stopped and deleted (``down --purge``) at the end of the session. When it cannot start,
the fixture fails with the script's output: integration tests never skip.

Ports: SW_TEST_KAFKA_PORT and SW_TEST_KAFKA_CONTROLLER_PORT (default the broker port + 1) when
set; otherwise 19092/19093, or two free ports when those are taken. Tests share the broker, so each test that writes makes its own topics
with ``new_topics`` (names carry a unique prefix).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaConnectionError, NodeNotReadyError

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "local" / "stack"

# Knobs of the stack script that the tests must not inherit from a developer's shell: the tests
# check the script's defaults (6 partitions, 366 days of retention on the audit topics).
_STACK_KNOBS = ("SW_RUN_DIR", "SW_KAFKA_PORT", "SW_KAFKA_CONTROLLER_PORT", "SW_PARTITIONS",
                "SW_RETENTION_MS", "SW_KAFKA_HEAP")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


def run_stack(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run deploy/local/stack with ``env``; output captured as text."""
    return subprocess.run([str(STACK), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports() -> tuple[int, int]:
    """SW_TEST_KAFKA_PORT (and _CONTROLLER_PORT) when set, used as given; otherwise 19092/19093,
    or, when those are taken (another session, a dev stack), two ports the kernel hands out."""
    if "SW_TEST_KAFKA_PORT" in os.environ:
        port = int(os.environ["SW_TEST_KAFKA_PORT"])
        return port, int(os.environ.get("SW_TEST_KAFKA_CONTROLLER_PORT", str(port + 1)))
    if _port_is_free(19092) and _port_is_free(19093):
        return 19092, 19093
    ports = []
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports[0], ports[1]


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory) -> dict[str, str]:
    """The environment under which this session's stack runs (for tests that call the script)."""
    port, controller_port = _pick_ports()
    env = {k: v for k, v in os.environ.items() if k not in _STACK_KNOBS}
    env.update(SW_RUN_DIR=str(tmp_path_factory.mktemp("stack")),
               SW_KAFKA_PORT=str(port), SW_KAFKA_CONTROLLER_PORT=str(controller_port))
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env) -> str:
    """'127.0.0.1:<port>' of a running broker with the settlewatch topics created."""
    up = run_stack(stack_env, "up", "kafka")
    if up.returncode != 0:
        down = run_stack(stack_env, "down", "--purge", "kafka", timeout=120)
        pytest.fail(
            f"deploy/local/stack up kafka failed (exit {up.returncode}):\n"
            f"{up.stdout}\n{up.stderr}\n(cleanup: {down.stdout}{down.stderr})",
            pytrace=False)
    try:
        yield f"127.0.0.1:{stack_env['SW_KAFKA_PORT']}"
    finally:
        down = run_stack(stack_env, "down", "--purge", "kafka", timeout=120)
        assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture(scope="session")
def stack(stack_env):
    """Run deploy/local/stack against this session's stack: ``stack("status", "kafka")``."""
    return lambda *args, timeout=300: run_stack(stack_env, *args, timeout=timeout)


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="settlewatch-tests")
    yield admin
    admin.close()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, e.g. 't3f9a1c2e.'; tests in one session share the broker."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def new_topics(kafka_admin, topic_prefix):
    """Create topics private to this test: ``new_topics("in", "out", partitions=6)`` returns
    the full names in the same order, once every partition has a leader."""
    def create(*names: str, partitions: int = 6) -> list[str]:
        full = [topic_prefix + name for name in names]
        # A test that restarted the broker leaves this shared client's connection stale: the
        # first requests after it raise NodeNotReadyError until the client has reconnected.
        deadline = time.monotonic() + 90
        while True:
            try:
                kafka_admin.create_topics(
                    {name: {"num_partitions": partitions, "replication_factor": 1}
                     for name in full}, wait_for_metadata=True)
                return full
            except (NodeNotReadyError, KafkaConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    return create


@pytest.fixture(scope="module")
def smtp_sink(tmp_path_factory):
    """A real SMTP sink (aiosmtpd) that requires AUTH, and the password file Alertmanager reads."""
    from streams.ops.smtpsink import SmtpSink
    password = tmp_path_factory.mktemp("secrets") / "smtp-password"
    password.write_text("alertmanager-test-password")  # no newline: Alertmanager sends it all
    with SmtpSink(tmp_path_factory.mktemp("mail"),
                  auth=("alertmanager", "alertmanager-test-password")) as sink:
        sink.password_file = password
        yield sink


# ------------------------------------------------------------------ the faults table (issue 15)
# Fault tests (tests/integration/test_faults*.py) carry @pytest.mark.fault("what was done",
# "what must hold"); each one's outcome becomes a row of the table printed at the end of the run
# (and copied into README.md). Tests may add a detail line with the `fault_note` fixture. The
# long ones are also marked `faults`: they run with `make test-faults` (pytest -m faults) or
# SW_TEST_FAULTS=1, and are deselected otherwise, so that `make test` keeps one SIGKILL and one
# broker restart.
_FAULT_ROWS: list[dict] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(done, expected): a row of the faults table")
    config.addinivalue_line("markers", "faults: a long fault test (make test-faults)")


_mark_integration = pytest_collection_modifyitems  # the hook above; one per module


def pytest_collection_modifyitems(config, items):  # noqa: F811  (extends the one above)
    _mark_integration(items)
    wanted = "faults" in (config.option.markexpr or "") or os.environ.get("SW_TEST_FAULTS") == "1"
    if wanted:
        return
    long_ones = [i for i in items if i.get_closest_marker("faults") is not None]
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = [i for i in items if i.get_closest_marker("faults") is None]


@pytest.fixture
def fault_note(request):
    """fault_note("worker killed after 3 batches, 2 self-restarts"): a detail for the table."""
    notes = request.node.__dict__.setdefault("_fault_notes", [])
    return notes.append


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    mark = item.get_closest_marker("fault")
    if mark is None:
        return
    report = outcome.get_result()
    rows = [r for r in _FAULT_ROWS if r["id"] == item.nodeid]
    row = rows[0] if rows else None
    if row is None:
        row = {"id": item.nodeid, "done": mark.args[0],
               "expected": mark.args[1] if len(mark.args) > 1 else "", "result": "passed",
               "seconds": 0.0, "long": item.get_closest_marker("faults") is not None}
        _FAULT_ROWS.append(row)
    row["seconds"] += report.duration
    if report.failed:
        row["result"] = "FAILED" if report.when == "call" else f"ERROR ({report.when})"
    elif report.skipped and row["result"] == "passed":
        row["result"] = "skipped"
    row["notes"] = "; ".join(item.__dict__.get("_fault_notes", []))


def fault_table(rows: list[dict]) -> list[str]:
    lines = ["| fault injected | must hold | result | time | observed |",
             "|---|---|---|---|---|"]
    for r in rows:
        where = " (make test-faults)" if r["long"] else ""
        lines.append(f"| {r['done']}{where} | {r['expected']} | {r['result']} | "
                     f"{r['seconds']:.0f} s | {r.get('notes', '')} |")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not _FAULT_ROWS:
        return
    terminalreporter.section("faults tried (issue 15)")
    for line in fault_table(_FAULT_ROWS):
        terminalreporter.write_line(line)
