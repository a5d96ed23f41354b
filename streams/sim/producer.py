"""The simulator's Kafka side: produce core events (and bad records) to the input topics.

`simulate_to_kafka(events, bootstrap, ...)` sends each `PosEvent` to pos.authorisations and
each `Credit` to pos.settlements, keyed by merchant_id, so kafka-python's default partitioner
(murmur2, the same as Java's) co-partitions the two topics as the worker needs. Pacing:

- `speed`: event-time milliseconds per wall-clock millisecond (600 = ten minutes a second),
  anchored at the first event; None sends as fast as the producer goes;
- `rate`: at most this many records per wall-clock second;
- an event is never sent before the wall clock reaches its event time (`hold_future`), so a
  simulation that starts in the past catches up at `speed` and then runs in real time, and the
  worker's future_timestamp rule never sees it.

Record timestamps are the event time by default (`record_time="event"`), as a feed that
produces each record when it happens would give, so audit replay finds simulated history by
time; bad records always carry the wall clock (a far-future event must be judged against it).

It imports kafka-python, the wire layer and the core vocabulary; not faust.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams import wire
from streams.core.events import Credit, FileComplete, PosEvent
from streams.kafka_security import from_environment as kafka_security

log = logging.getLogger("settlewatch.producer")


@dataclass
class ProduceStats:
    authorisations: int = 0
    settlements: int = 0
    bad: int = 0
    failed: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    started: float = field(default_factory=time.monotonic)
    wall_s: float = 0.0
    stopped: bool = False  # stopped early (stop event, duration or Ctrl-C)
    errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.authorisations + self.settlements + self.bad

    @property
    def per_second(self) -> float:
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0


def make_producer(bootstrap: str, **overrides):
    """A kafka-python producer tuned for throughput with acks=all (idempotent by default)."""
    from kafka import KafkaProducer
    opts = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                batch_size=256 * 1024, client_id="settlewatch-simulator",
                **kafka_security().kafka_python())  # SETTLEWATCH_KAFKA_*
    opts.update(overrides)
    return KafkaProducer(**opts)


class _Pacer:
    """When may the next event go out? Not before its event time (`hold_future`), not before
    its place on the accelerated timeline (`speed`), not faster than `rate` per second."""

    def __init__(self, speed: float | None, rate: float | None, hold_future: bool,
                 now: Callable[[], float]) -> None:
        self.speed, self.rate, self.hold_future, self.now = speed, rate, hold_future, now
        self.anchor_wall: float | None = None
        self.anchor_event = 0

    def wait_ms(self, event_ms: int, sent: int) -> tuple[float, float]:
        """(wall clock now, ms to wait before sending the `sent`-th event stamped `event_ms`)."""
        wall_ms = self.now() * 1000
        wait = 0.0
        if self.hold_future and event_ms > wall_ms:
            wait = event_ms - wall_ms
        if (self.speed or self.rate) and self.anchor_wall is None:
            self.anchor_wall, self.anchor_event = wall_ms, event_ms
        if self.speed:
            assert self.anchor_wall is not None
            wait = max(wait, self.anchor_wall + (event_ms - self.anchor_event) / self.speed
                       - wall_ms)
        if self.rate:
            assert self.anchor_wall is not None
            wait = max(wait, self.anchor_wall + sent * 1000.0 / self.rate - wall_ms)
        return wall_ms, wait


class _Sender:
    """Sends events and bad records, counting them and the broker's refusals in `stats`."""

    def __init__(self, producer, stats: ProduceStats, auth_topic: str, settlement_topic: str,
                 bad: Iterable[tuple[str, bytes, str]], use_event_time: bool,
                 now: Callable[[], float]) -> None:
        self.producer, self.stats, self.now = producer, stats, now
        self.auth_topic, self.settlement_topic = auth_topic, settlement_topic
        self.topic_of = {wire.AUTH_TOPIC: auth_topic, wire.SETTLEMENT_TOPIC: settlement_topic}
        self.bad_iter = iter(bad)
        self.use_event_time = use_event_time
        self.lock = threading.Lock()

    def on_error(self, exc: BaseException) -> None:
        with self.lock:
            self.stats.failed += 1
            if len(self.stats.errors) < 5:
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")

    def send_event(self, e: PosEvent | Credit | FileComplete) -> None:
        stats = self.stats
        if type(e) is Credit or type(e) is FileComplete:  # a marker travels with the credits
            topic = self.settlement_topic
            stats.settlements += 1
        else:
            topic = self.auth_topic
            stats.authorisations += 1
        t = e.event_time_ms
        ts = t if self.use_event_time else int(self.now() * 1000)
        self.producer.send(topic, value=wire.event_to_json(e), key=e.merchant_id.encode(),
                           timestamp_ms=ts).add_errback(self.on_error)
        if stats.first_event_ms is None:
            stats.first_event_ms = t
        stats.last_event_ms = t

    def send_bad(self) -> bool:
        item = next(self.bad_iter, None)
        if item is None:
            return False
        topic, raw, _reason = item
        self.producer.send(self.topic_of.get(topic, topic), value=raw, key=b"MBAD",
                           timestamp_ms=int(self.now() * 1000)).add_errback(self.on_error)
        self.stats.bad += 1
        return True


def simulate_to_kafka(
    events: Iterable[PosEvent | Credit],
    bootstrap: str,
    *,
    auth_topic: str = wire.AUTH_TOPIC,
    settlement_topic: str = wire.SETTLEMENT_TOPIC,
    speed: float | None = None,
    rate: float | None = None,
    hold_future: bool = True,
    record_time: str = "event",
    bad: Iterable[tuple[str, bytes, str]] = (),
    bad_every: int = 1000,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[ProduceStats], None] | None = None,
    progress_every_s: float = 1.0,
    producer=None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceStats:
    """Send `events` (in their order) to Kafka; see the module docstring for pacing.

    `bad` are (wire topic, raw bytes, expected reason) as from simulator.bad_records(): one is
    sent after every `bad_every` events and the rest at the end. Returns counts; stops early on
    `stop`, after `duration_s` or on Ctrl-C (then flushes what was sent and sets `stopped`).
    Raises RuntimeError if the broker refused records.
    """
    if record_time not in ("event", "wall"):
        raise ValueError("record_time must be 'event' or 'wall'")
    own = producer is None
    if own:
        producer = make_producer(bootstrap)
    stats = ProduceStats()
    sender = _Sender(producer, stats, auth_topic, settlement_topic, bad,
                     record_time == "event", now)
    pacer = _Pacer(speed, rate, hold_future, now)
    deadline = None if duration_s is None else time.monotonic() + duration_s

    def stopping() -> bool:
        return (stop is not None and stop.is_set()) or (
            deadline is not None and time.monotonic() >= deadline)

    next_progress = time.monotonic() + progress_every_s
    n = 0
    try:
        for e in events:
            if stopping():
                stats.stopped = True
                break
            wall_ms, wait_ms = pacer.wait_ms(e.event_time_ms, n)
            if wait_ms > 1:
                _sleep_until(wall_ms + wait_ms, now, sleep, stop, deadline)
                if stopping():
                    stats.stopped = True
                    break
            sender.send_event(e)
            n += 1
            if bad_every and n % bad_every == 0:
                sender.send_bad()
            if progress is not None and time.monotonic() >= next_progress:
                stats.wall_s = time.monotonic() - stats.started
                progress(stats)
                next_progress = time.monotonic() + progress_every_s
        if not stats.stopped:
            while sender.send_bad():
                pass
    except KeyboardInterrupt:
        stats.stopped = True
    finally:
        producer.flush()
        if own:
            producer.close()
        stats.wall_s = time.monotonic() - stats.started
    if progress is not None:
        progress(stats)
    if stats.failed:
        raise RuntimeError(f"{stats.failed} records were not accepted by Kafka: "
                           + "; ".join(stats.errors))
    return stats


def _sleep_until(wall_ms: float, now: Callable[[], float], sleep: Callable[[float], None],
                 stop: threading.Event | None, deadline: float | None) -> None:
    """Sleep until the wall clock reads `wall_ms`, in slices so that stop and duration work."""
    while True:
        left = wall_ms / 1000 - now()
        if left <= 0:
            return
        if stop is not None and stop.is_set():
            return
        if deadline is not None:
            to_deadline = deadline - time.monotonic()
            if to_deadline <= 0:
                return
            left = min(left, to_deadline)
        sleep(min(left, 0.2))
