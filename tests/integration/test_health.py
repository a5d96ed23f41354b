"""/healthz and /readyz of a real worker (`settlewatch worker` on the session's Kafka): not ready
while it restores its partitions from the changelogs after a restart, ready once every
partition's state is back, alive throughout.

The first worker reads a few thousand merchants' traffic, so the changelog holds real state;
it is stopped, and a second worker with the same app id is polled from the moment its metrics
port answers until it is ready.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_worker import produce, scenario, wait_for
    from test_worker import topics, worker  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_worker import produce, scenario, wait_for
    from tests.integration.test_worker import topics, worker  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def probe(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of GET path, or None while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_a_restarted_worker_is_not_ready_while_it_restores_its_partitions(
        kafka_bootstrap, topics, worker):
    events = scenario(6, merchants=3000, sales_per_second=2.0, seed=31,
                      faults="missing=2%,late=1%")
    first = worker(name="first")
    first.wait_ready(timeout=120)
    wait_for("the first worker's /readyz", lambda: (probe(first.port, "/readyz") or (0,))[0]
             == 200, timeout=120)
    assert probe(first.port, "/healthz")[0] == 200
    produce(kafka_bootstrap, topics, events, rate=20_000)
    first.wait_read(len(events), timeout=600)
    open_before = first.total("settlewatch_open_unsettled_items")
    assert open_before > 1000  # real state to restore
    first.stop()

    second = worker(name="second")
    seen: list[tuple[float, int, str]] = []  # (time, /readyz status, body)
    live: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        second.alive()
        ready = probe(second.port, "/readyz")
        if ready is None:  # not serving yet
            time.sleep(0.05)
            continue
        seen.append((time.monotonic(), *ready))
        health = probe(second.port, "/healthz")
        if health is not None:
            live.append(health[0])
        if ready[0] == 200:
            break
        time.sleep(0.05)
    statuses = [s for _, s, _ in seen]
    assert statuses and statuses[-1] == 200, f"never ready: {seen[-5:]}\n{second.log()[-3000:]}"
    restoring = [body for _, s, body in seen if s == 503 and "restoring" in body]
    assert restoring, f"no 503 'restoring' was seen before ready: {sorted(set(b for *_, b in seen))}"
    assert 200 not in statuses[:statuses.index(200)]
    assert live and set(live) == {200}, "the worker must stay alive while it restores"
    # Ready means restored: all six partitions have their reconciler, and the state is back.
    assert second.value("settlewatch_reconcilers") == 6
    assert second.total("settlewatch_open_unsettled_items") >= open_before * 0.9
    assert "6 partitions assigned and restored" in seen[-1][2]
