"""Integration fixtures: one real Kafka 4.4.0 broker per test session.

The broker is started by ``deploy/local/stack up kafka`` with its own run directory (under
pytest's tmp dir) and its own ports, so it can run beside a developer's stack on 9092/9093;
it is stopped and deleted (``down --purge``) at the end of the session. When it cannot start,
the fixture fails with the script's output: integration tests never skip.

Ports: SW_TEST_KAFKA_PORT and SW_TEST_KAFKA_CONTROLLER_PORT (default the broker port + 1) when
set; otherwise 19092/19093, or two free ports when those are taken (also when the broker finds
one taken as it binds: another session got there between the check and the start). Tests share
the broker, so each test that writes makes its own topics with ``new_topics`` (names carry a
unique prefix).

Under pytest-xdist (``make test`` runs ``pytest -n 2 --dist loadfile``) each worker process is a
session of its own: its own broker, run dir and ports (worker N adds 2 * N to the ports above),
and every module runs whole on one worker, so module fixtures are made once.
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


def _xdist_index() -> int:
    """0 in a plain session; N in pytest-xdist's worker gwN."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def _kernel_ports() -> tuple[int, int]:
    ports = []
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports[0], ports[1]


def _pick_ports() -> tuple[int, int]:
    """SW_TEST_KAFKA_PORT (and _CONTROLLER_PORT) when set, used as given (plus 2 * N on xdist
    worker N); otherwise 19092/19093 (plus 2 * N), or, when those are taken (another session,
    a dev stack), two ports the kernel hands out."""
    shift = 2 * _xdist_index()
    if "SW_TEST_KAFKA_PORT" in os.environ:
        port = int(os.environ["SW_TEST_KAFKA_PORT"])
        controller = int(os.environ.get("SW_TEST_KAFKA_CONTROLLER_PORT", str(port + 1)))
        return port + shift, controller + shift
    if _port_is_free(19092 + shift) and _port_is_free(19093 + shift):
        return 19092 + shift, 19093 + shift
    return _kernel_ports()


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory) -> dict[str, str]:
    """The environment under which this session's stack runs (for tests that call the script).
    kafka_bootstrap updates the ports in place if it had to move the broker to free ones."""
    port, controller_port = _pick_ports()
    env = {k: v for k, v in os.environ.items() if k not in _STACK_KNOBS}
    env.update(SW_RUN_DIR=str(tmp_path_factory.mktemp("stack")),
               SW_KAFKA_PORT=str(port), SW_KAFKA_CONTROLLER_PORT=str(controller_port))
    return env


def _port_was_taken(up: subprocess.CompletedProcess) -> bool:
    """The stack script or the broker found a port in use (a race with another process)."""
    return "already in use" in up.stdout + up.stderr


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env) -> str:
    """'127.0.0.1:<port>' of a running broker with the settlewatch topics created."""
    up = run_stack(stack_env, "up", "kafka")
    # Free when checked is not free when bound: on a shared machine another session may take a
    # port in between. Then start over on two ports the kernel hands out (not when the ports were
    # given by SW_TEST_KAFKA_PORT: those are used as given).
    for _ in range(3):
        if up.returncode == 0 or "SW_TEST_KAFKA_PORT" in os.environ or not _port_was_taken(up):
            break
        run_stack(stack_env, "down", "--purge", "kafka", timeout=120)
        port, controller_port = _kernel_ports()
        stack_env.update(SW_KAFKA_PORT=str(port), SW_KAFKA_CONTROLLER_PORT=str(controller_port))
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
# (and copied into README.md; the table is kept and printed by tests/conftest.py, which the
# xdist controller loads too). Tests may add a detail line with the `fault_note` fixture. The
# long ones are also marked `faults`: they run with `make test-faults` (pytest -m faults) or
# SW_TEST_FAULTS=1, and are deselected otherwise, so that `make test` keeps one SIGKILL and one
# broker restart.
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
    # Carried on the report: under pytest-xdist the controller prints the table, and it sees
    # the workers' reports, never their items.
    outcome.get_result().user_properties.append(("fault", {
        "done": mark.args[0], "expected": mark.args[1] if len(mark.args) > 1 else "",
        "long": item.get_closest_marker("faults") is not None,
        "notes": "; ".join(item.__dict__.get("_fault_notes", []))}))
