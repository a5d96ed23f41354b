"""Bad records go to the dead-letter topic with their reason and place, never with a full card
number (there or in the worker's log), and raise no false finding."""
from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from kafka import KafkaProducer

from streams import wire
from streams.core.events import Credit, PosEvent
from streams.sim.simulator import bad_records

try:  # tests/integration is not a package: pytest puts it on sys.path
    from test_worker import (assert_same_findings, expected_findings, now_ms, produce,
                             published, read_topic, scenario, send_ticks, wait_for)
    from test_worker import topics, worker  # noqa: F401  (fixtures)
except ModuleNotFoundError:  # it became one
    from tests.integration.test_worker import (assert_same_findings, expected_findings, now_ms,
                                               produce, published, read_topic, scenario,
                                               send_ticks, wait_for)
    from tests.integration.test_worker import topics, worker  # noqa: F401  (fixtures)

PANS = ("4111111111111111", "5500005555555559", "4012888888881881")


def hand_made(now: int) -> list[tuple[str, bytes, str]]:
    """(wire topic, bytes, reason) for each case the contract names."""
    sale = wire.event_to_dict(PosEvent("authorisation", "EX1", "AX1", "M000001", "T1",
                                       "acq-instant", "qr", 12_000, "CNY", now - 60_000))
    credit = wire.event_to_dict(Credit("CX1", "M000001", "acq-instant", 11_954, "CNY",
                                       now - 30_000, auth_ids=("AX1",)))
    a, s = wire.AUTH_TOPIC, wire.SETTLEMENT_TOPIC
    return [
        (a, b'{"type": "authorisation", "event_id": "EX2", "amount_minor": 1', "malformed_json"),
        (s, b"\xff\xfe\x00 not json at all", "malformed_json"),
        (a, orjson.dumps({**sale, "event_id": "EX3", "amount_minor": -500}), "bad_amount"),
        (s, orjson.dumps({**credit, "credit_id": "CX3", "amount_minor": -1}), "bad_amount"),
        (a, orjson.dumps({**sale, "event_id": "EX4", "currency": "XYZ"}), "unknown_currency"),
        (a, orjson.dumps({**sale, "event_id": "EX5", "pan_masked": PANS[0]}), "full_pan"),
        # card numbers in stored fields (an unknown field is dropped unread, issue 14 item 7)
        (a, orjson.dumps({**sale, "event_id": "EX6", "rrn": "card 5500 0055 5555 5559"}),
         "full_pan"),
        (s, orjson.dumps({**credit, "credit_id": "CX6", "batch_id": PANS[2]}), "full_pan"),
        (a, orjson.dumps({**sale, "event_id": "EX7", "event_time": "2099-01-01T00:00:00Z"}),
         "future_timestamp"),
        (s, orjson.dumps({**credit, "credit_id": "CX7",
                          "event_time": wire.format_time_ms(now + 3_600_000)}),
         "future_timestamp"),
        (a, orjson.dumps(credit), "wrong_topic"),
        (a, orjson.dumps({k: v for k, v in sale.items() if k != "merchant_id"}),
         "missing_field"),
    ]


def test_bad_records_are_dead_lettered_with_reasons_and_no_card_number_and_no_false_finding(
        kafka_bootstrap, topics, worker):
    events = scenario(6, merchants=30, sales_per_second=0.5, seed=31,
                      faults="late=3%,missing=3%,underpaid=3%,duplicate=2%")
    now = now_ms()
    bad = hand_made(now) + bad_records(random.Random(4), 30, now)
    real = {wire.AUTH_TOPIC: topics.authorisations, wire.SETTLEMENT_TOPIC: topics.settlements}

    stats = produce(kafka_bootstrap, topics, events)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    sent = [(producer.send(real[topic], key=b"M000001", value=raw), reason)
            for topic, raw, reason in bad]
    producer.flush()
    want_dead = {}
    for fut, reason in sent:
        md = fut.get(10)
        want_dead[(md.topic, md.partition, md.offset)] = reason
    producer.close()

    w = worker("--tick-interval", "0")
    w.wait_ready()
    w.wait_read(stats.sent + len(bad))
    # The last valid event's time closes what is due by then; a far-future event that had
    # moved the watermark would have closed everything and shown up as missing findings.
    end = max(e.event_time_ms for e in events)
    send_ticks(kafka_bootstrap, topics, end)
    want = expected_findings(kafka_bootstrap, topics, end)
    assert len(want) > 20
    wait_for(f"{len(want)} findings",
             lambda: len(published(kafka_bootstrap, topics)) >= len(want), timeout=30)
    wait_for(f"{len(bad)} dead letters",
             lambda: len(read_topic(kafka_bootstrap, topics.deadletter)) >= len(bad), timeout=30)
    time.sleep(1)
    assert_same_findings(published(kafka_bootstrap, topics), want)

    dead = read_topic(kafka_bootstrap, topics.deadletter)
    got_dead = {}
    for m in dead:
        assert not wire.contains_pan(m.value), m.value
        d = orjson.loads(m.value)
        got_dead[(d["topic"], d["partition"], d["offset"])] = d["reason"]
        assert d["message"]
    assert got_dead == want_dead

    everything = b"".join(m.value for m in dead) + w.log_path.read_bytes()
    for pan in PANS + ("5500 0055 5555 5559",):
        assert pan.encode() not in everything

    rejected = Counter()
    for (name, labels), v in w.metrics().items():
        if name == "settlewatch_events_rejected_total":
            rejected[dict(labels)["reason"]] += int(v)
    assert +rejected == Counter(want_dead.values())
