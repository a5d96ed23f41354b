"""Contract v1.1: settlement_file_complete markers on pos.settlements, and file_incomplete out.

Each marker record is judged by wire.parse and by the JSON Schema (settlement_file_complete.json),
and the two verdicts must agree, as for the v1 records (test_schemas.py).
"""
from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import wire
from streams.core.events import FileComplete, FindingKind, Status
from streams.wire import AUTH_TOPIC, SETTLEMENT_TOPIC, Reject

from .test_schemas import SCHEMAS, schema_says_valid, validator
from .test_wire import _DROP, RECORD_TIME, VISA, _apply, finding


def marker(**changes) -> dict:
    d = {
        "type": "settlement_file_complete", "marker_id": "fc-1", "merchant_id": "m-1",
        "acquirer": "acq-north", "settle_date": "2026-11-23", "credit_count": 3,
        "total_minor": 36_813, "currency": "CNY", "event_time": "2026-11-23T11:30:00Z",
    }
    return _apply(d, changes)


def parse(record, topic=SETTLEMENT_TOPIC):
    return wire.parse(topic, json.dumps(record).encode(), RECORD_TIME)


def test_a_valid_marker_becomes_a_file_complete_with_its_settle_date_as_an_ordinal():
    e = parse(marker())
    assert e == FileComplete("fc-1", "m-1", "acq-north", date(2026, 11, 23).toordinal(), 3,
                             36_813, "CNY", wire.parse_time_ms("2026-11-23T11:30:00Z"))


def test_a_marker_of_an_empty_file_counts_zero_credits_and_zero_minor_units():
    e = parse(marker(credit_count=0, total_minor=0))
    assert (e.credit_count, e.total_minor) == (0, 0)


def test_wire_writes_a_marker_back_as_the_record_it_read():
    record = marker()
    assert json.loads(wire.event_to_json(parse(record))) == record


def test_a_marker_on_the_authorisations_topic_is_wrong_topic():
    r = parse(marker(), AUTH_TOPIC)
    assert isinstance(r, Reject) and r.reason == wire.WRONG_TOPIC
    assert "pos.settlements" in r.message or "settlement" in r.message


BAD = {
    "no marker_id": (marker(marker_id=_DROP), wire.MISSING_FIELD, "marker_id"),
    "an empty marker_id": (marker(marker_id=""), wire.EMPTY_FIELD, "marker_id"),
    "a numeric marker_id": (marker(marker_id=7), wire.BAD_TYPE, "marker_id"),
    "no merchant_id": (marker(merchant_id=_DROP), wire.MISSING_FIELD, "merchant_id"),
    "no settle_date": (marker(settle_date=_DROP), wire.MISSING_FIELD, "settle_date"),
    "a settle_date as a number": (marker(settle_date=20261123), wire.BAD_TYPE, "settle_date"),
    "a settle_date with a time": (marker(settle_date="2026-11-23T00:00:00Z"), wire.BAD_TIME,
                                  "settle_date"),
    "a settle_date that does not exist": (marker(settle_date="2026-02-30"), wire.BAD_TIME,
                                          "settle_date"),
    "a settle_date before 2000": (marker(settle_date="1999-12-31"), wire.BAD_TIME,
                                  "settle_date"),
    "a negative credit_count": (marker(credit_count=-1), wire.BAD_AMOUNT, "credit_count"),
    "a fractional credit_count": (marker(credit_count=1.5), wire.BAD_AMOUNT, "credit_count"),
    "a credit_count as text": (marker(credit_count="3"), wire.BAD_TYPE, "credit_count"),
    "no total_minor": (marker(total_minor=_DROP), wire.MISSING_FIELD, "total_minor"),
    "a negative total_minor": (marker(total_minor=-5), wire.BAD_AMOUNT, "total_minor"),
    "a total over the amount limit": (marker(total_minor=wire.MAX_AMOUNT_MINOR + 1),
                                      wire.BAD_AMOUNT, "total_minor"),
    "an unknown currency": (marker(currency="XXX"), wire.UNKNOWN_CURRENCY, "currency"),
    "a bad event_time": (marker(event_time="yesterday"), wire.BAD_TIME, "event_time"),
    "a card number as the marker_id": (marker(marker_id=VISA), wire.FULL_PAN, "marker_id"),
    "a marker a day ahead of its record": (marker(event_time="2026-11-24T12:00:00Z"),
                                           wire.FUTURE_TIMESTAMP, "after the record time"),
}
# Rejects JSON Schema cannot see (it says valid, wire rejects), and why.
GAPS = {
    "a settle_date that does not exist": "the pattern cannot know month lengths",
    "a settle_date before 2000": "the date range is wire's rule",
    "a card number as the marker_id": "a card number in a stored field (full_pan)",
    "a marker a day ahead of its record": "future_timestamp is relative to the Kafka record time",
}


@pytest.mark.parametrize("case", list(BAD), ids=lambda c: c.replace(" ", "_"))
def test_a_bad_marker_is_dead_lettered_with_a_reason_that_names_the_field(case):
    record, reason, named = BAD[case]
    r = parse(record)
    assert isinstance(r, Reject), r
    assert (r.reason, named in r.message) == (reason, True), r.message
    assert VISA not in r.message and VISA.encode() not in r.raw


@pytest.mark.parametrize("case", list(BAD), ids=lambda c: c.replace(" ", "_"))
def test_schema_and_wire_agree_on_a_bad_marker_or_the_gap_is_known(case):
    record, _, _ = BAD[case]
    assert schema_says_valid(SETTLEMENT_TOPIC, record) == (case in GAPS), GAPS.get(case)


def test_a_valid_marker_is_valid_under_the_settlements_schema():
    assert schema_says_valid(SETTLEMENT_TOPIC, marker())
    assert schema_says_valid(SETTLEMENT_TOPIC, marker(note="unknown fields are ignored"))


def test_required_fields_are_the_same_in_the_marker_schema_and_wire():
    required = set(SCHEMAS["settlement_file_complete"]["required"])
    assert required == set(marker())
    for field in required:
        without = marker(**{field: _DROP})
        assert not schema_says_valid(SETTLEMENT_TOPIC, without), field
        r = parse(without)
        assert isinstance(r, Reject) and r.reason == wire.MISSING_FIELD, field


@st.composite
def markers(draw):
    return FileComplete(
        draw(st.text("abcXYZ-_0123", min_size=1, max_size=12)),
        draw(st.text("abcm-0123", min_size=1, max_size=8)), "acq-north",
        draw(st.integers(date(2000, 1, 1).toordinal(), date(2100, 1, 1).toordinal())),
        draw(st.integers(0, wire.MAX_AMOUNT_MINOR)), draw(st.integers(0, wire.MAX_AMOUNT_MINOR)),
        draw(st.sampled_from(["CNY", "USD", "JPY"])),
        draw(st.integers(wire.MIN_EVENT_TIME_MS, RECORD_TIME)))


@settings(max_examples=200)
@given(markers())
def test_every_marker_wire_writes_is_valid_and_reads_back_the_same(e):
    record = json.loads(wire.event_to_json(e))
    assert schema_says_valid(SETTLEMENT_TOPIC, record)
    assert wire.parse(SETTLEMENT_TOPIC, wire.event_to_json(e), RECORD_TIME) == e


def test_a_file_incomplete_finding_is_written_with_both_counts_last_and_reads_back():
    f = finding(kind=FindingKind.FILE_INCOMPLETE, status=Status.OPEN, subject="fc-1",
                auth_ids=(), credit_ids=(), expected_minor=36_813, received_minor=24_542,
                difference_minor=-12_271, probable_cause="file_short", expected_count=3,
                received_count=2)
    d = json.loads(wire.finding_to_json(f))
    assert list(d)[-2:] == ["expected_count", "received_count"]
    assert validator(SCHEMAS["anomaly"]).is_valid(d)
    back = wire.finding_from_json(wire.finding_to_json(f))
    assert (back.kind, back.expected_count, back.received_count) == (
        FindingKind.FILE_INCOMPLETE, 3, 2)


def test_a_v1_finding_is_written_without_the_v1_1_counts():
    assert "expected_count" not in wire.finding_to_dict(finding())
    d = wire.finding_to_dict(finding())
    assert not validator(SCHEMAS["anomaly"]).is_valid({**d, "expected_count": 3})
