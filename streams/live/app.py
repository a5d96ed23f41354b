"""The live worker: a faust app that runs the pure reconciler on the two input topics.

Shape. One agent (concurrency=1, faust issue 606) reads pos.authorisations, pos.settlements and
settlewatch.ticks, all keyed by merchant_id and co-partitioned, so partition n of each lands on
the same worker; it keeps one `LivePartition` (streams.live.partition) per partition number.
Records are taken in batches (`take_events`, up to `batch_max` records or `batch_within`); each
batch is decoded (streams.wire), fed to the partition's reconciler in record order, and
flushed: the state keys that changed, one key per new finding (the outbox) and the clock go to
table `state`, in changelog partition n; the batch then waits until the broker has
acknowledged those changelog records and its dead letters, and only then sends the new
findings to settlewatch.anomalies (partition n, key merchant_id) and lets faust ack it. So
offsets are committed only once the state they produced is on the broker. (faust's own
producer flush before a commit gives up after 0.1 s; it is not relied on.)

Guarantee: each (anomaly_id, status) reaches settlewatch.anomalies exactly once across worker
crashes (SIGKILL included) and rebalances: the outbox gives at-least-once, dedupe against the
output partition's recent records on restore removes the repeats. See streams.live.partition
for the argument. Dead letters are at-least-once. A batch the worker cannot make durable (a
failed send) exits the process non-zero at once, without acking, so the batch is read again by
the next incarnation instead of being skipped (streams.live.exits).

Whole input. faust 0.15.3 can lose records between its consumer and the agent after a
rebalance with a changelog to restore (faust-streaming/faust#596). The worker checks that each
input partition arrives gap-free from its committed offset (streams.live.partition.
OffsetChecker); on a hole, or when the agent has been idle for a while with records unread on
an assigned partition (the watchdog), it exits with EXIT_RESTART for its supervisor (the demo,
systemd, Kubernetes) to start it again, reading from the committed offset that the hole held
back. Where it still reaches past faust's public API is streams.live.faust_compat, each place
with its upstream issue. SIGUSR1 logs every task's stack and the consumer's state.

Stopping. SIGTERM lets the batch in hand finish (so that what faust acks is durable), then
faust stops; if the broker has gone away and that would take longer than
streams.live.exits.STOP_GRACE_S, the process exits anyway (nothing unsaved was acked).

Time. Watermarks come from the reconciler. A timer (`tick_interval`) sends each assigned
partition of settlewatch.ticks the wall clock minus `tick_allowance` when that partition's
silent inputs would hold the clock back (streams.live.partition.tick_target): never past an
input that still delivers records, never while a backlog is unread, never past the wall clock
minus the allowance. The agent applies a tick in order with the partition's events.

Run: `settlewatch worker --config settlewatch.toml`, or `faust -A streams.live.faust_app worker`
with SETTLEWATCH_* variables (streams.live.command).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import click
import faust
import orjson
from faust.types import TP

from streams.core.policy import Policy, default_policy, load_policy
from streams.kafka_security import from_environment as kafka_security
from streams.live import ewstate
from streams.live.config import LiveConfig
from streams.live.diagnostics import dump_tasks
from streams.live.exits import _die, arm_stop_deadline, exit_for_restart
from streams.live.faust_compat import in_partition, repair_acks
from streams.live.health import worker_readiness
from streams.live.faults import fault_point
from streams.live.state_guard import refuse_lost_state
from streams.live.partition import (
    AUTH,
    SETTLEMENT,
    TICK,
    InputProgress,
    InputView,
    LivePartition,
    OffsetChecker,
    RateLimitedLog,
    encode_tick,
    key_partition,
    published_key,
    tick_target,
)

log = logging.getLogger("settlewatch.worker")

# A finding's record (evidence included) can exceed Kafka's 1 MB default for a batch of many
# sales; state keys are small whatever a merchant holds.
MAX_VALUE_BYTES = 32 * 1024 * 1024


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Runtime:
    """Everything the agent, the timer and the rebalance hooks share in one worker process."""

    def __init__(self, app: faust.App, cfg: LiveConfig, policy: Policy) -> None:
        self.app = app
        self.cfg = cfg
        self.policy = policy
        self.topics = cfg.topics
        self.allowance_ms = cfg.allowance_ms(policy)
        self.parts: dict[int, LivePartition] = {}
        self._building: dict[int, asyncio.Future] = {}
        self._aux_lock = asyncio.Lock()
        self._aux: Any = None  # our own aiokafka consumer: offsets, the output's tail
        self.progress = InputProgress(_wall_ms())
        self.ready = False
        self.kind_of = {self.topics.authorisations: AUTH, self.topics.settlements: SETTLEMENT,
                        self.topics.ticks: TICK}
        self.reject_log = RateLimitedLog(10)
        self.metrics: Any = None
        self.observer: Any = None
        self._metrics_server: Any = None
        self._create_metrics()
        self.state: Any = None  # faust table `state` and the output topics, set by create_app
        self.changelog_topic = ""
        self.out: dict[str, Any] = {}
        self.batches = 0
        self.stage = "idle"
        self.tick_next: dict[int, int] = {}  # next tick offset to process, per partition
        self.offsets_seen = OffsetChecker()
        self.stream: Any = None  # the agent's stream (for the watchdog)
        self._suspect: tuple[int, frozenset, float] | None = None
        self.watchdog_state = "not run"
        self.acks_repaired = 0
        self.changelog_records = 0
        self.changelog_bytes = 0
        # the early warning's baseline in the changelog (streams.live.ewstate), and an event of
        # each partition to file its store write under (in_partition)
        self.baseline = ewstate.Keeper(cfg.baseline_interval_ms)
        self.last_event: dict[int, Any] = {}

    # -- metrics --------------------------------------------------------------------------

    def _create_metrics(self) -> None:
        from streams.live.metrics import Metrics
        t = self.topics
        self.metrics = Metrics.create(
            topics={"authorisations": t.authorisations, "settlements": t.settlements},
            reconcilers=lambda: [lp.reconciler for lp in list(self.parts.values())],
            worker=f"{self.cfg.app_id}@{os.uname().nodename}:{os.getpid()}")
        if self.policy.early_warning.enabled:
            self.metrics.enable_early_warning(self.policy)
        self.observer = self.metrics.observer()
        self.metrics.health.readiness = partial(worker_readiness, self)  # /readyz

    def serve_metrics(self) -> None:
        if self.cfg.metrics_port and self._metrics_server is None:
            self._metrics_server = self.metrics.serve(self.cfg.metrics_port,
                                                      self.cfg.metrics_addr)
            log.info("metrics on http://%s:%d/metrics", self.cfg.metrics_addr,
                     self.cfg.metrics_port)

    # -- partitions -----------------------------------------------------------------------

    async def ensure(self, partitions: list[int]) -> None:
        """Build the partitions that have no LivePartition yet (at most one build each)."""
        partitions = sorted(set(partitions))
        todo = [p for p in partitions if p not in self.parts and p not in self._building]
        waits = [self._building[p] for p in partitions if p in self._building]
        if todo:
            fut = asyncio.get_running_loop().create_future()
            for p in todo:
                self._building[p] = fut
            try:
                built = await self._build(todo)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
                raise
            finally:
                for p in todo:
                    self._building.pop(p, None)
            self.parts.update(built)
            fut.set_result(None)
        for w in waits:
            await asyncio.shield(w)

    async def _build(self, partitions: list[int]) -> dict[int, LivePartition]:
        """Rebuild partitions from table `state` (recovered from its changelog by faust)."""
        started = time.monotonic()
        now = _wall_ms()
        entries: dict[int, list] = {p: [] for p in partitions}
        for k, v in self.state.items():
            p = key_partition(k)
            if p in entries and v is not None:
                entries[p].append((k, v))
        await self._seed_offsets(partitions)
        lookback = self.cfg.dedupe_lookback_ms
        horizons = {p: LivePartition.horizon_ms(entries[p], now, lookback) for p in partitions}
        published = await self._read_published(horizons)
        self._restore_baseline(entries)  # before the partitions are seen by the metrics
        built = {}
        for p in partitions:
            lp, resend = LivePartition.restore(
                p, self.policy, entries=entries[p], published=published[p], now_ms=now,
                topics=self.topics, observer=self.observer, metrics=self.metrics,
                dedupe_lookback_ms=lookback)
            for mid, key, record in resend:
                await self._send_finding(lp, mid, key, record)
            built[p] = lp
            log.info("partition %d: %d state keys restored from the changelog, %d findings "
                     "seen on %s since %s, %d re-sent from the outbox", p, len(entries[p]),
                     len(published[p]), self.topics.anomalies, _iso(horizons[p]), len(resend))
        log.info("partitions %s ready in %.2fs", sorted(partitions), time.monotonic() - started)
        return built

    def _restore_baseline(self, entries: dict[int, list]) -> None:
        """Merge the early-warning baseline copies of these partitions' changelog into the
        worker's early warning (streams.live.ewstate); a bad copy is logged and ignored."""
        ew = self.metrics.early_warning
        if ew is None:
            return
        copies = [(p, v) for p, kvs in entries.items() for k, v in kvs
                  if k == ewstate.baseline_key(p)]
        if not copies:
            return
        count = self.metrics.baseline_restores
        with ew.lock:
            results = ewstate.restore(ew.warning, copies, lambda r: count.labels(r).inc())
            revision = ew.warning.revision
        for p, result in results.items():
            if result == ewstate.RESTORED:
                self.baseline.has(p, revision)

    async def save_baseline(self, now: int, final: bool = False) -> list:
        """Write the early-warning baseline to the partitions whose copy is stale, at most once
        per `baseline_interval` (any time when `final`); the send futures. Never per event: a
        copy is written only when the learned history changed."""
        ew = self.metrics.early_warning
        if ew is None or self.state is None:
            return []
        revision = ew.warning.revision
        due = [p for p in self.baseline.due(now, revision, list(self.parts), final)
               if p in self.last_event]
        if not due:
            return []
        with ew.lock:
            warning = ew.warning
            snap = warning.snapshot()
        try:
            value, kept = ewstate.encode(snap, fewer=lambda n: warning.snapshot(max_days=n))
        except ValueError as exc:
            log.warning("early-warning baseline not written: %s", exc)
            return []
        if kept is not None:
            log.warning("early-warning baseline over %d bytes: the newest %d settle days per "
                        "acquirer and channel written", ewstate.MAX_BYTES, kept)
        store, send, topic = self.state.data, self.app.producer.send, self.changelog_topic
        sent = []
        for p in due:
            key = ewstate.baseline_key(p)
            with in_partition(self.last_event[p]):
                store[key] = value
            fut = await send(topic=topic, key=key, value=value, partition=p, timestamp=None,
                             headers=None)
            fut.add_done_callback(partial(self._baseline_acked, p))
            sent.append(fut)
        self.baseline.written(due, revision, now)
        m = self.metrics
        m.baseline_writes.inc(len(due))
        m.baseline_bytes.set(len(value))
        m.baseline_written.set(now / 1000)
        m.changelog_written(len(due), sum(len(ewstate.baseline_key(p)) + len(value)
                                          for p in due))
        return sent

    def _baseline_acked(self, partition: int, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            exc = None if fut.cancelled() else fut.exception()
            log.warning("partition %d: early-warning baseline not on the changelog (%s); "
                        "written again at the next interval", partition,
                        type(exc).__name__ if exc else "cancelled")
            self.metrics.baseline_write_failures.inc()
            self.baseline.failed(partition)

    async def _seed_offsets(self, partitions: list[int]) -> None:
        """Tell the offset checker where each input partition resumes: the group's committed
        offset, read from Kafka (faust learns it only after it may already have delivered,
        and lost, records of the partition), or the log start for a new group reading from
        the earliest offset."""
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        t = self.topics
        tps = [TopicPartition(topic, p) for p in partitions
               for topic in (t.authorisations, t.settlements)]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.cfg.bootstrap,
                                    client_id=f"{self.cfg.app_id}-offsets",
                                    **kafka_security().aiokafka())
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.cfg.app_id, partitions=tps)
        finally:
            await admin.close()
        unknown = []
        for tp in tps:
            om = offsets.get(tp)
            if om is not None and om.offset >= 0:
                self.offsets_seen.seed((tp.topic, tp.partition), om.offset)
            else:
                unknown.append(TP(tp.topic, tp.partition))
        if unknown and self.cfg.offset_reset == "earliest":
            _, starts = await self.offsets(unknown)
            for tp, start in starts.items():
                self.offsets_seen.seed((tp.topic, tp.partition), start)

    async def _aux_consumer(self) -> Any:
        """A group-less aiokafka consumer of our own, for offsets and the output's tail (the
        faust consumer's thread answers such calls only between its fetches)."""
        if self._aux is None:
            from aiokafka import AIOKafkaConsumer
            self._aux = AIOKafkaConsumer(
                bootstrap_servers=self.cfg.bootstrap, group_id=None, enable_auto_commit=False,
                client_id=f"{self.cfg.app_id}-aux", max_partition_fetch_bytes=MAX_VALUE_BYTES,
                **kafka_security().aiokafka())
            await self._aux.start()
        return self._aux

    async def offsets(self, tps: list[TP]) -> tuple[dict[TP, int], dict[TP, int]]:
        """(end offsets, log-start offsets) of `tps`."""
        from aiokafka import TopicPartition
        async with self._aux_lock:
            c = await self._aux_consumer()
            ktps = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            ends = await c.end_offsets(ktps)
            starts = await c.beginning_offsets(ktps)
        return ({TP(k.topic, k.partition): v for k, v in ends.items()},
                {TP(k.topic, k.partition): v for k, v in starts.items()})

    async def _read_published(self, since: dict[int, int]) -> dict[int, list[tuple[str, str, int]]]:
        """Per partition p: (anomaly_id, status, record ms) on output partition p from
        since[p] on."""
        from aiokafka import TopicPartition
        out: dict[int, list[tuple[str, str, int]]] = {p: [] for p in since}
        async with self._aux_lock:
            c = await self._aux_consumer()
            tps = {TopicPartition(self.topics.anomalies, p): p for p in since}
            c.assign(list(tps))
            ends = await c.end_offsets(list(tps))
            found = await c.offsets_for_times({tp: max(since[p], 0) for tp, p in tps.items()})
            todo = {}
            for tp in tps:
                start = found[tp].offset if found.get(tp) is not None else ends[tp]
                if start < ends[tp]:
                    c.seek(tp, start)
                    todo[tp] = ends[tp]
            while todo:
                batch = await c.getmany(*todo, timeout_ms=1000)
                for tp, msgs in batch.items():
                    end = todo.get(tp)
                    if end is None:
                        continue
                    for msg in msgs:
                        if msg.offset >= end:
                            break
                        key = published_key(msg.value)
                        if key is not None:
                            out[tps[tp]].append((key[0], key[1], msg.timestamp))
                for tp in list(todo):
                    if await c.position(tp) >= todo[tp]:
                        del todo[tp]
            c.assign([])
        return out

    def assigned(self) -> list[int]:
        t = self.topics.ticks
        return sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == t)

    def unbuilt(self) -> list[int]:
        return [p for p in self.assigned() if p not in self.parts and p not in self._building]

    def on_assigned(self, assigned: set[TP]) -> None:
        # Silence is judged from now on: a partition this worker has not read yet is not idle
        # merely because the worker took a while to join the group.
        self.progress.started_ms = _wall_ms()
        keep = {tp.partition for tp in assigned if tp.topic == self.topics.ticks}
        gone = [p for p in self.parts if p not in keep]
        for p in gone:
            del self.parts[p]
            if self.metrics is not None:
                for topic in (self.topics.authorisations, self.topics.settlements):
                    self.metrics.remove_consumer_lag(topic, p)
        self.progress.forget(gone)
        self.offsets_seen.forget(gone)
        self.baseline.forget(gone)
        for p in gone:
            self.last_event.pop(p, None)
        if gone:
            log.info("partitions %s moved to another worker", sorted(gone))

    # -- the agent ------------------------------------------------------------------------

    async def handle_batch(self, events: list) -> None:
        """Feed a batch to the partitions' reconcilers, then make it durable before faust acks
        it: every changelog record and dead letter of the batch is acknowledged by the broker
        before this returns. Findings are sent after that, from the outbox already saved."""
        t0 = time.perf_counter()
        now = _wall_ms()
        groups: dict[int, list] = {}
        for ev in events:
            groups.setdefault(ev.message.partition, []).append(ev)
        inputs = 0
        missing = [p for p in groups if p not in self.parts]
        self.stage = "building partitions"
        if missing:
            await self.ensure(missing + self.unbuilt())
        durable: list = []  # futures of records that must be on the broker first
        flushed = []
        deadletter = self.out["deadletter"]
        for p, evs in groups.items():
            lp = self.parts[p]
            self.last_event[p] = evs[-1]
            n, dead = self._feed(lp, p, evs, now)
            inputs += n
            self.stage = "sending dead letters"
            for d in dead:
                durable.append(await deadletter.send(key=d.key, value=d.value, force=True))
            flushed.append((lp, await self._write_state(lp, p, evs[-1], now, durable)))
        self.stage = f"waiting for {len(durable)} changelog/dead-letter acks"
        fault_point("before_state_acked")  # test-only switch (streams.live.faults)
        if durable:
            await asyncio.gather(*durable)
        fault_point("after_state_acked_before_send")
        self.stage = "sending findings"
        for lp, fl in flushed:
            for mid, key, record in fl.publish:
                await self._send_finding(lp, mid, key, record)
            if fl.findings:
                self.metrics.findings_published(fl.findings)
        self.metrics.step_early_warning()
        try:
            await self.save_baseline(now)
        except Exception as exc:  # the batch is durable already; the next interval tries again
            log.warning("early-warning baseline not written: %s: %s", type(exc).__name__, exc)
        self.stage = "idle"
        self.batches += 1
        if inputs:
            self.metrics.observe_processing(time.perf_counter() - t0, inputs)

    def _feed(self, lp: LivePartition, p: int, evs: list, now: int) -> tuple[int, list]:
        kind_of, note, admit = self.kind_of, self.progress.note, self.offsets_seen.admit
        n = 0
        dead_letters = []
        for ev in evs:
            msg = ev.message
            kind = kind_of[msg.topic]
            if kind is TICK:
                self.tick_next[p] = msg.offset + 1
                if not lp.on_tick(msg.value):
                    log.warning("ignored a malformed tick at %s[%d]@%d", msg.topic, p, msg.offset)
                continue
            verdict = admit((msg.topic, p), msg.offset)
            if verdict != "ok":
                if verdict == "seen":
                    continue
                exit_for_restart(
                    f"{msg.topic}[{p}]: record {msg.offset} arrived, but records from "
                    f"{self.offsets_seen.expected.get((msg.topic, p))} on never reached the "
                    f"agent (faust-streaming/faust#596: records dropped after a rebalance)")
            n += 1
            note(msg.topic, p, msg.offset, now)
            ts = msg.timestamp
            record_ms = round(ts * 1000) if ts else now
            dead = lp.on_input(kind, msg.value, record_ms, msg.offset, msg.key)
            if dead is not None:
                ok, dropped = self.reject_log.allow()
                if ok:
                    log.warning("dead letter %s from %s[%d]@%d%s", dead.reason, msg.topic, p,
                                msg.offset, f" ({dropped} more not logged)" if dropped else "")
                dead_letters.append(dead)
        return n, dead_letters

    async def _write_state(self, lp: LivePartition, p: int, last_event: Any, now: int,
                           durable: list) -> Any:
        """Flush the partition's reconciler into table `state`: each write goes to the local
        store and to changelog partition p, whose send futures go into `durable`.

        The changelog records go straight to the producer (`app.producer.send`, faust's
        ProducerT interface) rather than through `Table.send_changelog`: that path queues each
        record in faust's producer buffer and runs the sensors on it, which cost more than the
        reconciliation itself at one or two records per event. What it adds is the RocksDB
        store's note of the last changelog offset it holds, a shortcut for recovery: without
        it a restart reads the partition's changelog from the start, which gives the same state."""
        suppressed = lp.suppressed
        fl = lp.flush(now)
        if lp.suppressed > suppressed:
            log.info("partition %d: %d findings raised again were already on %s (not sent)",
                     p, lp.suppressed - suppressed, self.topics.anomalies)
        if fl.writes:
            store = self.state.data
            send = self.app.producer.send
            topic = self.changelog_topic
            size = 0
            with in_partition(last_event):  # the rocksdb store files a write by its partition
                for key, value in fl.writes:
                    if value is None:
                        try:
                            del store[key]
                        except KeyError:
                            pass
                    else:
                        store[key] = value
                        size += len(value)
                    size += len(key)
            for key, value in fl.writes:
                durable.append(await send(topic=topic, key=key, value=value, partition=p,
                                          timestamp=None, headers=None))
            self.changelog_records += len(fl.writes)
            self.changelog_bytes += size
            self.metrics.changelog_written(len(fl.writes), size)
        return fl

    async def _send_finding(self, lp: LivePartition, mid: str, key: tuple[str, str],
                            record: dict) -> None:
        """Hand a finding to the producer; it leaves the outbox once the broker has it."""
        sent = await self.out["anomalies"].send(key=mid.encode(), value=orjson.dumps(record),
                                                partition=lp.partition, force=True)
        sent.add_done_callback(partial(_on_finding_acked, lp, key))

    # -- the watchdog ---------------------------------------------------------------------

    async def watchdog(self) -> None:
        """Exit for a restart when faust lost the last records of a partition (no later record
        shows the hole to the offset checker): the agent is idle, its queue empty, and an
        assigned input partition has records after the next offset this worker processes, for
        `stall` seconds with no batch in between. Also repairs faust's acked-offset lists
        (streams.live.faust_compat.repair_acks)."""
        repaired = repair_acks(self.app.consumer)
        if repaired:
            self.acks_repaired += 1
            if self.acks_repaired <= 3 or self.acks_repaired % 100 == 0:
                log.warning("repaired faust's acked-offset lists of %s (offsets acked twice "
                            "would stall its commits); %d repairs so far",
                            ", ".join(repaired), self.acks_repaired)
        if not self.ready or self.stage != "idle" or self._building:
            self._suspect = None
            self.watchdog_state = f"skipped: ready {self.ready}, stage {self.stage}"
            return
        queue = getattr(getattr(self.stream, "channel", None), "queue", None)
        if queue is None or queue.qsize():
            self._suspect = None
            self.watchdog_state = f"skipped: queue {None if queue is None else queue.qsize()}"
            return
        t = self.topics
        assigned = self.assigned()
        tps = [TP(topic, p) for p in assigned for topic in (t.authorisations, t.settlements)]
        if not tps:
            return
        ends, _ = await self.offsets(tps)
        lost = []
        for tp in tps:
            nxt = self.offsets_seen.expected.get((tp.topic, tp.partition))
            end = ends.get(tp)
            if nxt is not None and end is not None and nxt < end:
                lost.append((tp, nxt, end))
        key = frozenset(tp for tp, _, _ in lost)
        now = time.monotonic()
        self.watchdog_state = (f"batches {self.batches}, suspect {self._suspect}, "
                               f"unread {[(tp.topic, tp.partition, n, e) for tp, n, e in lost]}")
        if not lost or self._suspect is None or self._suspect[:2] != (self.batches, key):
            self._suspect = (self.batches, key, now) if lost else None
            return
        # Records wait in the agent's batch for up to batch_within: give them ample time.
        if now - self._suspect[2] < max(15.0, 5 * self.cfg.batch_within_ms / 1000):
            return
        waited = now - self._suspect[2]
        self._suspect = None
        tp, nxt, end = lost[0]
        exit_for_restart(f"{tp.topic}[{tp.partition}]: records {nxt}-{end - 1} are on the "
                         f"broker but the agent has received nothing for {waited:.0f}s "
                         f"(faust-streaming/faust#596)")

    # -- the clock ------------------------------------------------------------------------

    async def tick(self) -> None:
        """Send clock ticks to the partitions whose silent inputs hold event time back."""
        if not self.ready:
            return
        t = self.topics
        assigned = self.assigned()
        unbuilt = self.unbuilt()
        if unbuilt:
            await self.ensure(unbuilt)
        if not assigned:
            return
        tps = [TP(topic, p) for p in assigned for topic in (t.authorisations, t.settlements)]
        ends, earliest = await self.offsets(tps)
        expected = self.offsets_seen.expected  # where this worker resumes each partition
        now = _wall_ms()
        ticks = self.out["ticks"]
        for p in assigned:
            lp = self.parts.get(p)
            if lp is None:
                continue
            wms = lp.reconciler.watermarks()
            views = []
            for topic, kind in ((t.authorisations, AUTH), (t.settlements, SETTLEMENT)):
                tp = TP(topic, p)
                start = expected.get((topic, p))
                if start is None:
                    start = earliest.get(tp)
                lag = self.progress.lag(topic, p, ends.get(tp), start)
                if lag is not None and self.metrics is not None:
                    self.metrics.set_consumer_lag(topic, p, lag)
                views.append(InputView(lag == 0, self.progress.idle(topic, p, now,
                                                                    self.cfg.tick_idle_ms),
                                       wms.get(kind)))
            clock = lp.reconciler.clock_ms
            target = tick_target(now, self.allowance_ms, clock, views)
            if target is None and lp.needs_flush:
                target = clock  # a no-op tick, so the agent flushes what a restore left
            if target is not None:
                await ticks.send(key=b"tick", value=encode_tick(target), partition=p,
                                 force=True)


def _iso(ms: int) -> str:
    from streams.wire import format_time_ms
    return format_time_ms(ms)


def _on_finding_acked(lp: LivePartition, key: tuple[str, str], fut: asyncio.Future) -> None:
    if fut.cancelled() or fut.exception() is not None:
        exc = None if fut.cancelled() else fut.exception()
        _die("sending a finding failed (%s)", type(exc).__name__ if exc else "cancelled")
    lp.acked(key)


# ----------------------------------------------------------------------------------- the app
def load_policy_for(cfg: LiveConfig) -> Policy:
    return load_policy(cfg.config) if cfg.config else default_policy()


def create_app(cfg: LiveConfig, policy: Policy | None = None, *,
               count_only: bool = False) -> faust.App:
    """The faust app for `cfg`: topics, table `state`, the agent, the timers and the hooks.

    `count_only` gives the throughput baseline instead: the same topics, settings and
    batching, an agent that only counts records (settlewatch_events_read_total), no table.
    """
    policy = policy if policy is not None else load_policy_for(cfg)
    app = _faust_app(cfg)
    rt = Runtime(app, cfg, policy)
    app.settlewatch = rt  # for tests and the demo
    t = cfg.topics
    src = app.topic(t.authorisations, t.settlements, t.ticks, key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")
    if count_only:
        _add_counting_agent(app, rt, src)
    else:
        _add_state(app, rt)
        _add_reconcile_agent(app, rt, src)
        _add_timers(app, rt)
    _add_hooks(app, rt)
    return app


def data_dir_of(cfg: LiveConfig) -> Path:
    """faust's data directory, its parents created (faust makes only the last level)."""
    path = Path(cfg.data_dir or os.path.join(".settlewatch", cfg.app_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _faust_app(cfg: LiveConfig) -> faust.App:
    """The faust App with the worker's settings; keys and values are raw bytes."""
    session_s = cfg.session_timeout_ms / 1000
    return faust.App(
        cfg.app_id,
        broker=f"kafka://{cfg.bootstrap}",
        broker_credentials=kafka_security().faust_credentials(faust),  # SETTLEWATCH_KAFKA_*
        store=cfg.store,
        datadir=str(data_dir_of(cfg)),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=cfg.partitions,
        web_enabled=False,
        consumer_auto_offset_reset=cfg.offset_reset,
        # A SIGKILLed worker's partitions wait out the session timeout (60 s by default).
        broker_session_timeout=session_s,
        broker_heartbeat_interval=min(3.0, session_s / 3),
        producer_max_request_size=MAX_VALUE_BYTES,
        consumer_max_fetch_size=MAX_VALUE_BYTES,
        table_standby_replicas=0,
    )


def _add_state(app: faust.App, rt: Runtime) -> None:
    """Table `state` (one key per changed piece of state, finding or clock; see
    streams.live.partition) and the topics the worker writes."""
    cfg, t = rt.cfg, rt.topics
    rt.state = app.Table(
        "state", partitions=cfg.partitions, key_type=bytes, value_type=bytes,
        help="<partition>\\x1e<tag>\\x1e<key> -> reconciler state, outbox finding or clock",
        extra_topic_configs={"max.message.bytes": str(MAX_VALUE_BYTES)})
    rt.changelog_topic = rt.state.changelog_topic.get_topic_name()
    for name, topic in (("anomalies", t.anomalies), ("deadletter", t.deadletter),
                        ("ticks", t.ticks)):
        rt.out[name] = app.topic(topic, key_type=bytes, value_type=bytes,
                                 key_serializer="raw", value_serializer="raw")


def _add_counting_agent(app: faust.App, rt: Runtime, src: Any) -> None:
    """The throughput baseline: the same batching, an agent body that only counts."""
    cfg, ticks = rt.cfg, rt.topics.ticks

    @app.agent(src, concurrency=1, name="count")
    async def count(stream):
        event_read = rt.metrics.event_read
        async for events in stream.take_events(cfg.batch_max,
                                               within=cfg.batch_within_ms / 1000):
            for ev in events:
                topic = ev.message.topic
                if topic != ticks:
                    event_read(topic)


def _add_reconcile_agent(app: faust.App, rt: Runtime, src: Any) -> None:
    """The agent: batches through `Runtime.handle_batch`. `take_events` acks a batch when the
    loop body ends, however it ends, so a batch that failed exits the process before that
    (unacked, read again by the next incarnation), and a stop waits for the batch in hand."""
    cfg = rt.cfg

    @app.agent(src, concurrency=1, name="reconcile")
    async def reconcile(stream):
        rt.stream = stream
        async for events in stream.take_events(cfg.batch_max,
                                               within=cfg.batch_within_ms / 1000):
            batch = asyncio.ensure_future(rt.handle_batch(events))
            try:
                await asyncio.shield(batch)
            except asyncio.CancelledError:
                if not batch.done():  # stopping: finish the batch in hand, so its ack is true
                    log.info("stopping: finishing the batch in hand (%d records)", len(events))
                    await _finish(batch, len(events))
                raise
            except Exception as exc:
                log.exception("batch failed")
                _die("a batch failed (%s)", type(exc).__name__)


async def _finish(batch: asyncio.Future, n: int) -> None:
    try:
        await batch
    except BaseException as exc:
        _die("stopped in the middle of a batch of %d records (%s)", n, type(exc).__name__)


def _add_timers(app: faust.App, rt: Runtime) -> None:
    """The watchdog (each second) and the clock tick (`tick_interval`, 0 for none)."""
    @app.timer(1.0, name="watchdog")
    async def watchdog():
        try:
            await rt.watchdog()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watchdog check failed: %s: %s", type(exc).__name__, exc)

    if rt.cfg.tick_interval_ms > 0:
        @app.timer(rt.cfg.tick_interval_ms / 1000, name="clock_tick")
        async def clock_tick():
            try:
                await rt.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next tick tries again
                log.warning("clock tick skipped: %s: %s", type(exc).__name__, exc)


def _add_hooks(app: faust.App, rt: Runtime) -> None:
    """Metrics server at start-up; readiness and partition hand-over on rebalances."""
    @app.task
    async def start_metrics():
        # faust's Monitor sensor keeps per-event statistics nothing reads (web is off): about
        # a fifth of its per-event cost (DESIGN.md section 5); both modes drop it.
        app.sensors.remove(app.monitor)
        rt.metrics.health.start_heartbeat()  # /healthz
        rt.serve_metrics()
        import signal
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, partial(dump_tasks, rt))
        async with rt._aux_lock:  # connect early: the first tick should not wait for it
            await rt._aux_consumer()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs):
        rt.ready = False
        rt.metrics.set_up(False)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs):
        rt.on_assigned(set(assigned))

    @app.on_rebalance_complete.connect
    async def on_rebalance_complete(sender, **kwargs):
        rt.ready = True
        rt.metrics.set_up(True)


# --------------------------------------------------------------------------------- start-up
def check_topics(cfg: LiveConfig, timeout_s: float = 30.0) -> list[str]:
    """Problems with the topics the worker needs (absent, wrong partition count), or []."""
    from kafka.admin import KafkaAdminClient
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap,
                                     client_id=f"{cfg.app_id}-check", request_timeout_ms=5000,
                                     **kafka_security().kafka_python())
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                return [f"no Kafka broker answers at {cfg.bootstrap} ({type(exc).__name__})"]
            time.sleep(0.5)
    try:
        names = cfg.topics.all()
        found = {d["topic"] if "topic" in d else d["name"]: d
                 for d in admin.describe_topics(list(names)) if not d.get("error_code")}
    except Exception as exc:
        found = {}
        log.debug("describe_topics failed: %r", exc)
    finally:
        admin.close()
    problems = []
    for name in names:
        d = found.get(name)
        if d is None:
            problems.append(f"topic {name} does not exist (deploy/local/stack up kafka "
                            f"creates the standard set)")
        elif len(d["partitions"]) != cfg.partitions:
            problems.append(f"topic {name} has {len(d['partitions'])} partitions, the worker "
                            f"expects {cfg.partitions} (--partitions); inputs, ticks and "
                            f"anomalies must be co-partitioned")
    return problems


def use_uvloop() -> str:
    """Run on uvloop when it is installed (faust-streaming[uvloop]): faust's per-event
    machinery is mostly event-loop work. The name of the loop in use."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    import mode.loop
    mode.loop.use("uvloop")
    return "uvloop"


class _Worker(faust.Worker):
    """faust's Worker, with a deadline on stopping: SIGTERM (and Ctrl-C) call `stop`, which
    with the broker gone can wait on it for far longer than a supervisor allows (issue 14:
    more than 13 s). What faust acked is durable already, so a stop cut short loses nothing."""

    async def stop(self) -> None:
        arm_stop_deadline()
        await _save_baseline_at_stop(getattr(self.app, "settlewatch", None))
        await super().stop()


async def _save_baseline_at_stop(rt: Runtime | None, timeout_s: float = 2.0) -> None:
    """A clean stop writes the early-warning baseline once more (when it changed since the
    last write) and waits up to `timeout_s` for the broker: within the stop deadline."""
    if rt is None or not rt.parts:
        return
    try:
        sent = await rt.save_baseline(_wall_ms(), final=True)
        if sent:
            await asyncio.wait_for(asyncio.gather(*sent), timeout_s)
            log.info("stopping: early-warning baseline written to %d partitions", len(sent))
    except Exception as exc:  # the stop goes on: the last periodic copy is on the changelog
        log.warning("stopping: early-warning baseline not written (%s)", type(exc).__name__)


def run_worker(cfg: LiveConfig, *, count_only: bool = False) -> None:
    """Check the topics, then run the faust worker until SIGTERM / Ctrl-C."""
    from streams.runtime import tune_gc
    logging.basicConfig(level=cfg.loglevel.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    ours = logging.getLogger().handlers[-1:]
    problems = check_topics(cfg)
    if problems:
        raise click.ClickException("; ".join(problems))
    loop = use_uvloop()
    policy = load_policy_for(cfg)
    app = create_app(cfg, policy, count_only=count_only)
    lost = refuse_lost_state(cfg.bootstrap, cfg.app_id,  # changelogs deleted or cut short
                             (cfg.topics.authorisations, cfg.topics.settlements),
                             [t.changelog_topic_name for t in app.tables.values()],
                             kafka_security().kafka_python(), ticks=cfg.topics.ticks)
    if lost:
        raise click.ClickException(lost)
    log.info("settlewatch worker %s%s: %s on %s, topics %s, tick every %dms at wall clock - %dms, "
             "store %s, %s event loop", cfg.app_id, " (count only)" if count_only else "",
             cfg.config or "default policy", cfg.bootstrap, ", ".join(cfg.topics.all()),
             cfg.tick_interval_ms, cfg.allowance_ms(policy), cfg.store, loop)
    for handler in ours:  # faust installs its own; two would print every line twice
        logging.getLogger().removeHandler(handler)
    tune_gc()
    worker = _Worker(app, loglevel=cfg.loglevel, quiet=True)
    worker.execute_from_commandline()


# ------------------------------------------------------------------------------- throughput


