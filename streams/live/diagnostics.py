"""SIGUSR1: log every asyncio task's stack and the faust consumer's state, for a worker that
seems stuck (faust's own bookkeeping through streams.live.faust_compat.consumer_state)."""
from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("settlewatch.worker")

def dump_tasks(rt) -> None:
    """Log every asyncio task's stack and every thread's (SIGUSR1): what a stuck worker is
    waiting for."""
    import faulthandler
    import tempfile

    from streams.live.faust_compat import consumer_state
    lines = [f"SIGUSR1: {len(asyncio.all_tasks())} tasks; partitions {sorted(rt.parts)}, "
             f"building {sorted(rt._building)}, batches {rt.batches}, ready {rt.ready}, "
             f"stage {rt.stage}, watchdog: {rt.watchdog_state}, "
             f"in_recovery {rt.app.in_recovery}, rebalancing {rt.app.rebalancing}"]
    lines += consumer_state(rt.app.consumer)
    for (topic, p), nxt in sorted(rt.offsets_seen.expected.items()):
        lines.append(f"expected next {topic}[{p}]: {nxt}")
    for agent in rt.app.agents.values():
        for actor in getattr(agent, "_actors", []):
            stream = getattr(actor, "stream", None)
            queue = getattr(getattr(stream, "channel", None), "queue", None)
            if queue is not None:
                lines.append(f"agent {agent.name}: channel queue {queue.qsize()}/"
                             f"{getattr(queue, 'maxsize', '?')}")
    for task in asyncio.all_tasks():
        lines.append(f"task {task.get_name()}: " + " <- ".join(_await_chain(task)))
    with tempfile.TemporaryFile("w+") as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        lines.append(f.read())
    log.warning("\n".join(lines))


def _await_chain(task: asyncio.Task) -> list[str]:
    """Where a task waits: its coroutine and what each awaits, innermost last."""
    out, obj = [], task.get_coro()
    for _ in range(40):
        if obj is None:
            break
        frame = (getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
                 or getattr(obj, "gi_frame", None))
        if frame is not None:
            out.append(f"{frame.f_code.co_name}@{os.path.basename(frame.f_code.co_filename)}:"
                       f"{frame.f_lineno}")
        obj = (getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None)
               or getattr(obj, "gi_yieldfrom", None))
    return out


