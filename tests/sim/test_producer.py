"""simulate_to_kafka's pacing and accounting, on an injected clock (the Kafka path itself is
covered by the integration tests, which produce to the real broker)."""
from __future__ import annotations

from streams.core.events import AUTHORISATION, Credit, PosEvent
from streams.sim.producer import _Pacer, simulate_to_kafka

T0 = 1_791_244_800_000


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class _Future:
    def add_errback(self, fn):
        return self


class _RecordingProducer:
    """Stands in for kafka-python's KafkaProducer: keeps what was sent, and when."""

    def __init__(self, clock: _Clock) -> None:
        self.clock, self.sent = clock, []

    def send(self, topic, value, key, timestamp_ms):
        self.sent.append((self.clock.t, topic, key, timestamp_ms))
        return _Future()

    def flush(self):
        pass


def _sale(i: int, t: int) -> PosEvent:
    return PosEvent(AUTHORISATION, f"e{i}", f"a{i}", "M1", "T1", "acq", "credit", 100, "CNY", t)


def test_a_rate_spaces_the_events_evenly_on_the_wall_clock():
    clock = _Clock(T0 / 1000)
    producer = _RecordingProducer(clock)
    events = [_sale(i, T0 - 60_000) for i in range(5)]
    stats = simulate_to_kafka(events, "unused", rate=10, producer=producer, now=clock.now,
                              sleep=clock.sleep)
    times = [s[0] for s in producer.sent]
    assert stats.authorisations == 5 and len(times) == 5
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert all(abs(g - 0.1) < 0.002 for g in gaps), gaps


def test_future_events_are_held_until_their_event_time_and_bad_records_follow():
    clock = _Clock(T0 / 1000)
    producer = _RecordingProducer(clock)
    credit = Credit("C1", "M1", "acq", 90, "CNY", T0 + 5_000, auth_ids=("a0",))
    stats = simulate_to_kafka([_sale(0, T0), credit], "unused", producer=producer,
                              now=clock.now, sleep=clock.sleep,
                              bad=[("pos.settlements", b"{", "malformed_json")], bad_every=0)
    assert [s[1] for s in producer.sent] == ["pos.authorisations", "pos.settlements",
                                             "pos.settlements"]
    assert producer.sent[1][0] >= (T0 + 5_000) / 1000  # held until its event time
    assert (stats.authorisations, stats.settlements, stats.bad) == (1, 1, 1)


def test_speed_replays_event_time_faster_than_the_wall_clock():
    pacer = _Pacer(speed=60, rate=None, hold_future=False, now=lambda: T0 / 1000)
    assert pacer.wait_ms(T0, 0) == (T0, 0.0)
    _, wait = pacer.wait_ms(T0 + 60_000, 1)  # a minute of event time: a second of wall time
    assert round(wait) == 1000
