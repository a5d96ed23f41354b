"""Fault injection for the fault tests: a TEST-ONLY switch, a no-op in production.

    SETTLEWATCH_FAULT=before_state_acked        SIGKILL at the first pass of that point
    SETTLEWATCH_FAULT=before_state_acked:3      ... at the third pass

`fault_point(name)` is called (one line each) at the points of the worker where a crash is
the most damaging (streams.live.app `Runtime.handle_batch`):

- ``before_state_acked``: a batch has been fed to the reconcilers and its changelog writes
  handed to the producer, but the broker has not acknowledged them yet;
- ``after_state_acked_before_send``: the changelog writes are acknowledged, the findings of
  the batch are not sent yet.

When SETTLEWATCH_FAULT does not name the point (the normal case: the variable is unset) the call
costs one dict lookup. When it does, the process kills itself with SIGKILL, as the kernel's OOM
killer or `kill -9` would: no finally blocks, no flush, no commit. The counter is per process,
so a worker started again with the same environment dies again at its N-th pass: tests start
the replacement worker without the variable. tests/integration/test_faults*.py use it; nothing
else may.
"""
from __future__ import annotations

import os
import signal

ENV = "SETTLEWATCH_FAULT"

POINTS = ("before_state_acked", "after_state_acked_before_send")


def _parse(value: str | None) -> tuple[str, int] | None:
    """('name', hits) from 'name' or 'name:N' (N >= 1); None when unset or malformed."""
    if not value:
        return None
    name, _, hits = value.strip().partition(":")
    try:
        n = int(hits) if hits else 1
    except ValueError:
        return None
    return (name, n) if name and n >= 1 else None


_armed = _parse(os.environ.get(ENV))
_hits = 0


def fault_point(name: str) -> None:
    """SIGKILL this process when SETTLEWATCH_FAULT names `name` and this is its N-th pass."""
    global _hits
    if _armed is None or _armed[0] != name:
        return
    _hits += 1
    if _hits >= _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def arm(value: str | None) -> None:
    """Re-read the switch (for unit tests of this module; the worker reads it at import)."""
    global _armed, _hits
    _armed, _hits = _parse(value), 0
