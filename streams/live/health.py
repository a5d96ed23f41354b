"""/healthz and /readyz of the worker, served next to /metrics on the metrics port.

Owns the two probes a supervisor asks (Kubernetes' liveness and readiness probes, the
Dockerfile's HEALTHCHECK, a load balancer): what they answer and why. Imports only the
standard library and prometheus_client (for /metrics on the same server), never faust: the
worker injects what the checks read.

- `/healthz` (liveness): the process and its event loop are alive. An asyncio task
  (`Health.start_heartbeat`) stamps `beat()` every second; the loop counts as alive while the
  last beat is younger than `stale_after_s`. Before the first beat (start-up, before faust runs
  its tasks) the process counts as alive for `stale_after_s` after `Health` was made. A loop
  blocked longer than that (a stuck C call, a busy loop) answers 503, and a supervisor restarts
  the process. The batch handler runs on the loop, so `stale_after_s` must exceed the longest
  batch (50,000 records at ~5k/s: ~10 s); the default is 60 s.
- `/readyz` (readiness): the worker is doing its job: consumer connected, partitions assigned,
  tables restored from their changelogs and every assigned partition's reconciler rebuilt.
  503 while restoring or rebalancing. The check is injected (`Health.readiness`, for the
  worker `worker_readiness`); none set: not ready.

Both answer `200 ok: <detail>` or `503 <detail>` as text/plain, and a HEAD gets the status only.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import make_wsgi_app

Check = Callable[[], "tuple[bool, str]"]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


class Health:
    """Liveness from a heartbeat, readiness from an injected check (see the module docstring)."""

    def __init__(self, stale_after_s: float = 60.0, *, now: Callable[[], float] = time.monotonic,
                 readiness: Check | None = None) -> None:
        self.stale_after_s = stale_after_s
        self.now = now
        self.readiness = readiness
        self.born = now()
        self.beat_at: float | None = None
        self._task: asyncio.Task | None = None

    def beat(self) -> None:
        self.beat_at = self.now()

    def start_heartbeat(self, interval_s: float = 1.0) -> asyncio.Task:
        """Beat every `interval_s` from a task on the running event loop (call it from there)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._beat_forever(interval_s),
                                                                name="settlewatch-heartbeat")
        return self._task

    async def _beat_forever(self, interval_s: float) -> None:
        while True:
            self.beat()
            await asyncio.sleep(interval_s)

    def live(self) -> tuple[bool, str]:
        now = self.now()
        if self.beat_at is None:
            age = now - self.born
            if age <= self.stale_after_s:
                return True, f"starting ({age:.0f}s, no heartbeat yet)"
            return False, f"no heartbeat {age:.0f}s after start (limit {self.stale_after_s:g}s)"
        age = now - self.beat_at
        if age <= self.stale_after_s:
            return True, f"event loop alive (last heartbeat {age:.1f}s ago)"
        return False, (f"event loop stalled: last heartbeat {age:.0f}s ago "
                       f"(limit {self.stale_after_s:g}s)")

    def ready(self) -> tuple[bool, str]:
        check = self.readiness
        if check is None:
            return False, "no readiness check set"
        try:
            ok, detail = check()
        except Exception as exc:  # a check that fails says "not ready", never a 500
            return False, f"readiness check failed: {type(exc).__name__}: {exc}"
        return bool(ok), detail


def worker_readiness(rt: Any) -> tuple[bool, str]:
    """Readiness of the live worker's `Runtime` (streams.live.app): reads `rt.app.in_recovery`
    (faust restoring tables), `rt._aux` (our own Kafka consumer, connected at start),
    `rt.ready` (set when a rebalance completes, which faust signals after table recovery;
    cleared on revoke), `rt.assigned()` and `rt.parts` (partitions whose reconciler is rebuilt
    from the tables)."""
    if getattr(rt.app, "in_recovery", False):
        return False, "restoring tables from their changelogs"
    if getattr(rt, "_aux", None) is None:
        return False, "connecting to Kafka"
    if not rt.ready:
        return False, "waiting for a partition assignment (rebalance in progress)"
    assigned = rt.assigned()
    pending = [p for p in assigned if p not in rt.parts]
    if pending:
        return False, f"restoring partitions {pending}"
    return True, f"{len(assigned)} partitions assigned and restored: {assigned}"


def health_app(registry: Any, health: Health) -> Callable:
    """WSGI app: /healthz, /readyz, and prometheus_client's /metrics for everything else."""
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in (HEALTH_PATH, READY_PATH):
            ok, detail = health.live() if path == HEALTH_PATH else health.ready()
            body = (("ok: " if ok else "") + detail + "\n").encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        return metrics_app(environ, start_response)

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung client never keeps the worker from exiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # probes every few seconds would flood the log
        pass


def serve(registry: Any, health: Health, port: int, addr: str = "127.0.0.1"):
    """Serve /metrics, /healthz and /readyz from a daemon thread; returns (server, thread):
    server.shutdown() stops it. `port` 0 picks a free port (server.server_port)."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]

    class Server(_Server):
        address_family = family

    httpd = make_server(addr, port, health_app(registry, health), Server,
                        handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="settlewatch-metrics",
                              daemon=True)
    thread.start()
    return httpd, thread
