"""/healthz and /readyz (streams.live.health) over real HTTP, each test with a fresh registry.

The worker's own readiness during a changelog restore is in
tests/integration/test_health.py; here the probes' rules: heartbeat age, the start-up grace,
the injected readiness check, and that /metrics still answers on the same port.
"""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from streams.live.health import Health, worker_readiness
from streams.live.metrics import Metrics


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def served():
    """A worker's Metrics on a fresh registry, served on a free loopback port, with a clock."""
    clock = Clock()
    metrics = Metrics.create(CollectorRegistry(), now=lambda: 1_800_000_000.0, version="test",
                             worker="w1")
    metrics.__dict__["health"] = Health(stale_after_s=30, now=clock)
    server, thread = metrics.serve(0)
    try:
        yield metrics, server.server_port, clock
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_healthz_is_ok_while_heartbeats_are_fresh(served):
    metrics, port, clock = served
    metrics.health.beat()
    clock.t += 29
    status, body = get(port, "/healthz")
    assert status == 200 and body.startswith("ok: event loop alive")


def test_healthz_is_503_once_the_heartbeat_is_older_than_the_limit(served):
    metrics, port, clock = served
    metrics.health.beat()
    clock.t += 31
    status, body = get(port, "/healthz")
    assert status == 503 and "event loop stalled" in body


def test_healthz_gives_a_starting_process_the_limit_before_its_first_beat(served):
    _, port, clock = served
    assert get(port, "/healthz")[0] == 200
    clock.t += 31
    status, body = get(port, "/healthz")
    assert status == 503 and "no heartbeat" in body


def test_readyz_is_503_until_a_readiness_check_is_set(served):
    _, port, _ = served
    status, body = get(port, "/readyz")
    assert status == 503 and "no readiness check" in body


def test_readyz_answers_what_the_injected_check_says(served):
    metrics, port, _ = served
    state = {"ok": False}
    metrics.health.readiness = lambda: (state["ok"], "restoring partitions [1]" if not
                                        state["ok"] else "6 partitions")
    assert get(port, "/readyz") == (503, "restoring partitions [1]\n")
    state["ok"] = True
    assert get(port, "/readyz") == (200, "ok: 6 partitions\n")


def test_readyz_is_503_not_500_when_the_check_raises(served):
    metrics, port, _ = served

    def broken():
        raise RuntimeError("consumer gone")

    metrics.health.readiness = broken
    status, body = get(port, "/readyz")
    assert status == 503 and "RuntimeError: consumer gone" in body


def test_head_requests_get_the_status_without_a_body(served):
    metrics, port, _ = served
    metrics.health.beat()
    assert get(port, "/healthz", method="HEAD") == (200, "")
    assert get(port, "/readyz", method="HEAD") == (503, "")


def test_metrics_are_still_served_on_the_same_port(served):
    _, port, _ = served
    status, body = get(port, "/metrics")
    assert status == 200 and "settlewatch_worker_up 0.0" in body


def test_the_heartbeat_task_beats_on_the_running_loop():
    health = Health(stale_after_s=5)

    async def run():
        task = health.start_heartbeat(interval_s=0.01)
        assert health.start_heartbeat() is task  # one task, however often it is started
        await asyncio.sleep(0.05)
        first = health.beat_at
        await asyncio.sleep(0.05)
        task.cancel()
        return first

    first = asyncio.run(run())
    assert first is not None and health.beat_at > first
    assert health.live()[0]


class _App:
    in_recovery = False


class _Runtime:
    """The attributes of streams.live.app.Runtime that worker_readiness reads."""

    def __init__(self) -> None:
        self.app = _App()
        self._aux = None
        self.ready = False
        self.parts: dict[int, object] = {}
        self._assigned: list[int] = []

    def assigned(self) -> list[int]:
        return self._assigned


def test_worker_is_not_ready_until_connected_assigned_and_every_partition_rebuilt():
    rt = _Runtime()
    assert worker_readiness(rt) == (False, "connecting to Kafka")
    rt._aux = object()
    assert worker_readiness(rt)[1].startswith("waiting for a partition assignment")
    rt.app.in_recovery = True
    assert worker_readiness(rt) == (False, "restoring tables from their changelogs")
    rt.app.in_recovery = False
    rt.ready, rt._assigned, rt.parts = True, [0, 3], {0: object()}
    assert worker_readiness(rt) == (False, "restoring partitions [3]")
    rt.parts[3] = object()
    assert worker_readiness(rt) == (True, "2 partitions assigned and restored: [0, 3]")


def test_the_worker_runtime_has_what_worker_readiness_reads():
    """Against the real Runtime (a faust app that is never started): the names it reads exist,
    and a worker that has not joined its group is not ready."""
    from streams.live.app import create_app
    from streams.live.config import LiveConfig
    app = create_app(LiveConfig(metrics_port=0, app_id="health-test"))
    rt = app.settlewatch
    for name in ("ready", "parts", "_aux", "assigned"):
        assert hasattr(rt, name), name
    assert hasattr(app, "in_recovery")
    assert rt.metrics.health.readiness is not None
    assert rt.metrics.health.ready()[0] is False
