"""The early warning's learned baseline across worker restarts: where it is kept, when it is
written, how it comes back.

Where. In table `state`, the worker's one changelogged table, as one more key per input
partition: ``b"<p>\\x1ew"`` holds the whole baseline (`EarlyWarning.snapshot()`, every acquirer
and channel this worker learned), as zlib-compressed JSON. The baseline is one per worker (its
early warning is fed by all its partitions, streams.live.metrics), and the same copy goes to
each partition the worker owns, because a key of partition p travels with p: faust restores
changelog partition p to whichever worker is assigned p, so
- a restarted worker gets its baseline back from any of its partitions;
- a worker added by a scale-out starts with the baseline of the worker its partitions came
  from (learned from other merchants of the same acquirers: the share curves are the
  acquirer's, not the merchants');
- a worker taking over partitions of another (scale-in, a crash) merges their copies into its
  own: `EarlyWarning.restore` adds the settle days it has not learned, a deadline it has keeps
  its own days, copies taken in partition order.
No new topic, ACL, retention or start-up check: the changelog's compaction keeps the latest
copy per partition, and streams.live.state_guard already refuses a changelog cut short.
`LivePartition.restore` ignores the key (its tag is not one of its own).

When. Never per event: at the end of a batch, at most once per `interval` of wall clock, and
only to the partitions whose copy is older than the learned history (`EarlyWarning.revision`
moves when a settle day is learned or leaves the window: a few times a day); and once more
when the worker stops cleanly (SIGTERM). Bounded: a copy larger than `MAX_BYTES` keeps only
the newest days per acquirer and channel that fit (logged).

How it comes back. When the worker builds its partitions from the restored table
(`Runtime._build`), before they are served to the metrics: each copy is decoded and restored;
a copy that cannot be read (corrupt) or was learned under other `[early_warning]` settings
(incompatible) is logged with the reason, counted
(`settlewatch_early_warning_baseline_restores_total{result}`), and ignored: the worker
relearns, as it did before persistence.

Imports: the core's early warning, orjson, zlib; never faust or Kafka clients (the worker
does the I/O), so tests/live/test_ewstate.py drives it without a broker.
"""
from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from streams.core.earlywarning import EarlyWarning, SnapshotError

log = logging.getLogger("settlewatch.worker")

TAG = b"w"
MAGIC = b"SWB1"  # the record's first bytes: a settlewatch baseline, zlib-compressed JSON
MAX_BYTES = 4 * 1024 * 1024  # per copy, compressed: well under the table's record limit
RESTORED, CORRUPT, INCOMPATIBLE = "restored", "corrupt", "incompatible"


def baseline_key(partition: int) -> bytes:
    return b"%d\x1e%s" % (partition, TAG)


def encode(snap: dict[str, Any], max_bytes: int = MAX_BYTES,
           fewer: Any = None) -> tuple[bytes, int | None]:
    """The record for a snapshot, and the days kept per acquirer and channel when it had to
    be cut to `max_bytes` (None: whole). `fewer(max_days)` gives a smaller snapshot."""
    value = MAGIC + zlib.compress(orjson.dumps(snap), 6)
    kept = None
    while len(value) > max_bytes:
        longest = max((len(v) for part in ("curves", "fractions")
                       for v in snap.get(part, {}).values()), default=0)
        if fewer is None or longest <= 1:
            raise ValueError(f"an early-warning baseline of {len(value):,} bytes does not fit "
                             f"in {max_bytes:,}")
        kept = longest // 2
        snap = fewer(kept)
        value = MAGIC + zlib.compress(orjson.dumps(snap), 6)
    return value, kept


def decode(value: bytes) -> Any:
    """The snapshot in a record, or SnapshotError("corrupt", why)."""
    if not value.startswith(MAGIC):
        raise SnapshotError(CORRUPT, f"does not start with {MAGIC.decode()} (first bytes "
                            f"{value[:8]!r})")
    try:
        return orjson.loads(zlib.decompress(value[len(MAGIC):]))
    except zlib.error as exc:
        raise SnapshotError(CORRUPT, f"not zlib data: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(CORRUPT, f"not JSON: {exc}") from None


def restore(ew: EarlyWarning, copies: Iterable[tuple[int, bytes]],
            count: Any = None) -> dict[int, str]:
    """Merge the copies (partition, record) into `ew`, in partition order; each one's result
    (RESTORED, CORRUPT or INCOMPATIBLE), logged and passed to `count(result)`. Never raises
    for a bad copy: the worker relearns what it could not restore."""
    results = {}
    taken = 0
    for p, value in sorted(copies, key=lambda c: c[0]):
        try:
            taken += ew.restore(decode(value))
        except SnapshotError as exc:
            results[p] = exc.kind
            log.warning("partition %d: early-warning baseline in the changelog ignored, %s: "
                        "%s (the worker relearns it: warnings wait for min_history settle "
                        "days)", p, exc.kind, exc)
        else:
            results[p] = RESTORED
        if count is not None:
            count(results[p])
    good = [p for p, r in results.items() if r == RESTORED]
    if good:
        pairs = ew.learned()
        log.info("early-warning baseline restored from the changelog of partitions %s: %d "
                 "settle days taken, %d learned in all for %d acquirer/channels", good, taken,
                 sum(ew.history_days(*k) for k in pairs), len(pairs))
    return results


class Keeper:
    """When to write the baseline, and to which partitions: `due` after a batch (or at a
    stop, `final`), `written` once sent, `failed` when a send failed (written again at the
    next chance), `forget` for partitions that left."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.last_ms: int | None = None  # wall clock of the last write
        self._copies: dict[int, int] = {}  # partition -> revision of its copy

    def due(self, now_ms: int, revision: int, partitions: Iterable[int],
            final: bool = False) -> list[int]:
        if revision == 0:
            return []  # nothing learned or restored yet: nothing worth keeping
        stale = sorted(p for p in partitions if self._copies.get(p) != revision)
        if not stale:
            return []
        if not final and self.last_ms is not None and now_ms - self.last_ms < self.interval_ms:
            return []
        return stale

    def has(self, partition: int, revision: int) -> None:
        """Partition `partition`'s copy holds `revision` (restored, or written)."""
        self._copies[partition] = revision

    def written(self, partitions: Iterable[int], revision: int, now_ms: int) -> None:
        for p in partitions:
            self._copies[p] = revision
        self.last_ms = now_ms

    def failed(self, partition: int) -> None:
        self._copies.pop(partition, None)

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._copies.pop(p, None)
