"""Where the worker reaches past faust's public API, in one place, each with the reason.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import weakref
from contextlib import contextmanager
from typing import Any

import faust

from streams.live.exits import EXIT_UNSAFE, _die

log = logging.getLogger("settlewatch.worker")

_RESTARTS_ENV = "SW_LIVE_SELF_RESTARTS"  # "<count> <epoch s of the first>"


MAX_SELF_RESTARTS = 5  # within SELF_RESTART_WINDOW_S; then exit and leave it to a supervisor


SELF_RESTART_WINDOW_S = 600


def _restart_self(reason: str) -> None:
    """Start this worker again in place (same pid, same command line), without acking or
    committing: the new process reads on from the committed offsets. For input faust lost on
    its way to the agent (see streams.live.OffsetChecker); exits instead after
    MAX_SELF_RESTARTS in ten minutes."""
    raw = os.environ.get(_RESTARTS_ENV, "").split()
    now = int(time.time())
    count, first = (int(raw[0]), int(raw[1])) if len(raw) == 2 else (0, now)
    if now - first > SELF_RESTART_WINDOW_S:
        count, first = 0, now
    if count >= MAX_SELF_RESTARTS:
        _die(f"{reason}; {count} restarts in {SELF_RESTART_WINDOW_S}s already")
    log.error("%s; restarting this worker to read again from the committed offsets", reason)
    logging.shutdown()
    os.environ[_RESTARTS_ENV] = f"{count + 1} {first}"
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *argv[1:]])
    except OSError:
        os._exit(EXIT_UNSAFE)


@contextmanager
def _in_partition(event: Any):
    """Table writes of a batch go to the changelog partition of `event`'s source partition.

    faust picks the changelog partition from the current event; the agent body of
    `take_events` runs outside faust's own per-event context, so set it to an event of the
    partition being flushed (faust.streams keeps it in a context variable).
    """
    from faust.streams import _current_event
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class SourcePartitionTable(faust.Table):
    """A faust Table whose changelog partition is the current event's partition, like
    faust's own, without faust's check that the changelog has as many partitions as the
    source topic: that check reads the consumer's metadata, which for a changelog faust has
    just created can still say 0 partitions (then every write raised PartitionsMismatch on a
    fresh app id). The worker checks the partition counts of its own topics at start-up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sent: list = []

    def partition_for_key(self, key: Any) -> int | None:
        from faust.streams import current_event
        event = current_event()
        if event is None:
            raise TypeError("Cannot modify table key from outside of stream iteration")
        return event.message.partition

    # As faust's Table, and keep each changelog send's future, to be awaited.
    def on_key_set(self, key: Any, value: Any) -> None:
        self._sent.append(self.send_changelog(self.partition_for_key(key), key, value))
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        self._sent.append(self.send_changelog(self.partition_for_key(key), key, value=None,
                                              value_serializer="raw"))
        self._sensor_on_del(self, key)

    def take_sent(self) -> list:
        """Futures of the changelog records sent since the last call."""
        sent, self._sent = self._sent, []
        return sent


