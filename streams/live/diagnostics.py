"""SIGUSR1: log every asyncio task's stack and the faust consumer's state, for a worker that
seems stuck. Reads faust's private attributes with getattr defaults: diagnostics only."""
from __future__ import annotations

import asyncio
import logging
import os
import sys

log = logging.getLogger("settlewatch.worker")

def dump_tasks(rt) -> None:
    """Log every asyncio task's stack (SIGUSR1): what a stuck worker is waiting for."""
    import io
    c = rt.app.consumer
    lines = [f"SIGUSR1: {len(asyncio.all_tasks())} tasks; partitions {sorted(rt.parts)}, "
             f"building {sorted(rt._building)}, batches {rt.batches}, ready {rt.ready}, "
             f"stage {rt.stage}, watchdog: {rt.watchdog_state}",
             f"consumer: active {sorted(getattr(c, '_active_partitions', None) or [])}, "
             f"buffered {sorted(getattr(c, '_buffered_partitions', None) or [])}, "
             f"paused {sorted(getattr(c, '_paused_partitions', None) or [])}, "
             f"flow_active {getattr(c, 'flow_active', None)}, "
             f"read offsets {dict(getattr(c, '_read_offset', {}))}, "
             f"producer buffer {rt.app.producer.buffer.size}, "
             f"in_recovery {rt.app.in_recovery}, rebalancing {rt.app.rebalancing}"]
    acked = getattr(c, "_acked", {})
    for tp in sorted(acked, key=str):
        if tp.topic in rt.kind_of and acked[tp]:
            a = sorted(acked[tp])
            lines.append(f"acked {tp.topic}[{tp.partition}]: committed "
                         f"{c._committed_offset.get(tp)}, {len(a)} acked {a[:12]}..{a[-3:]}, "
                         f"gaps {list(getattr(c, '_gap', {}).get(tp, []))[:5]}, "
                         f"expected {rt.offsets_seen.expected.get((tp.topic, tp.partition))}")
    for agent in rt.app.agents.values():
        for actor in getattr(agent, "_actors", []):
            stream = getattr(actor, "stream", None)
            chan = getattr(stream, "channel", None)
            queue = getattr(chan, "queue", None)
            if queue is not None:
                lines.append(f"agent {agent.name}: channel queue {queue.qsize()}/"
                             f"{getattr(queue, 'maxsize', '?')}")
    loops = [asyncio.get_running_loop()]
    thread = getattr(rt.app.consumer, "_thread", None)  # faust's consumer thread
    if getattr(thread, "thread_loop", None) is not None:
        loops.append(thread.thread_loop)
    for loop in loops:
        for task in asyncio.all_tasks(loop):
            lines.append(f"task {task.get_name()}: " + " <- ".join(_await_chain(task)))
    buf = io.StringIO()
    for ident, frame in sys._current_frames().items():
        import traceback
        buf.write(f"--- thread {ident}\n")
        traceback.print_stack(frame, limit=12, file=buf)
    lines.append(buf.getvalue())
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


