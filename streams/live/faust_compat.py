"""Where the worker reaches past faust's public API, in one place, each with the upstream issue
it works around and a test (tests/live/test_faust_compat.py) that fails when faust's behaviour
changes, so that a faust upgrade shows which of these can go.

Everything else the worker does with faust is public API: `Stream.take_events`, `app.Table`
with `Table.data` and its `changelog_topic`, `app.producer.send` (the ProducerT interface, by
keyword), `Topic.send(..., force=True)`, `app.timer`, the rebalance signals, `app.sensors`,
`faust.Worker.stop`.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any


@contextmanager
def in_partition(event: Any):
    """Make `event` faust's current event while a batch's table writes go to the store.

    faust-streaming/faust#497 (open): a table cannot be written from the body of
    `stream.take()`/`take_events()`, which runs outside faust's per-event context. The worker
    writes the store (`Table.data`) and sends the changelog records to the partition itself
    (streams.live.app.Runtime._write_state), but faust's RocksDB store still files each local
    write under the current event's partition
    (`faust.stores.rocksdb.Store._set` reads `current_event()`), so set it to an event of the
    partition being written (faust keeps it in the context variable `faust.streams._current_event`).
    """
    from faust.streams import _current_event
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def repair_acks(consumer: Any) -> list[str]:
    """Drop repeated and already-committed offsets from faust's lists of acked offsets; the
    "topic[partition]"s repaired.

    robinhood/faust#625 (open, carried into faust-streaming 0.15.3): an offset acked twice
    (after a rebalance faust delivers again from the committed offset records the agent had
    already taken, and `take_events` acks them again) makes `Consumer._new_offset` stop at the
    repeat: its commits then advance by an offset or two at a time, the committed offset falls
    ever further behind, and a restart re-reads hours of input. The lists are faust's own
    (`Consumer._acked`, `_acked_index`, `_committed_offset`); this runs on the event loop's
    thread, like every ack and commit.
    """
    acked = getattr(consumer, "_acked", None)
    index = getattr(consumer, "_acked_index", None)
    committed = getattr(consumer, "_committed_offset", None)
    if acked is None or index is None or committed is None:
        return []
    repaired = []
    for tp, offsets in list(acked.items()):
        if not offsets:
            continue
        floor = committed.get(tp)
        clean = sorted({o for o in offsets if floor is None or o >= floor})
        if len(clean) != len(offsets):
            offsets[:] = clean
            index[tp] = set(clean)
            repaired.append(f"{tp.topic}[{tp.partition}]")
    return repaired


def consumer_state(consumer: Any) -> list[str]:
    """faust's consumer bookkeeping for the SIGUSR1 dump (diagnostics only: every attribute
    read with a default, so a faust change makes the dump poorer, never the worker fail)."""
    lines = [f"consumer: active {sorted(getattr(consumer, '_active_partitions', None) or [])}, "
             f"paused {sorted(getattr(consumer, '_paused_partitions', None) or [])}, "
             f"read offsets {dict(getattr(consumer, '_read_offset', {}))}"]
    acked = getattr(consumer, "_acked", {})
    committed = getattr(consumer, "_committed_offset", {})
    for tp in sorted(acked, key=str):
        if acked[tp]:
            a = sorted(acked[tp])
            lines.append(f"acked {tp.topic}[{tp.partition}]: committed {committed.get(tp)}, "
                         f"{len(a)} acked {a[:12]}..{a[-3:]}")
    return lines
