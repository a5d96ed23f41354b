"""streams/wire/schemas/*.json and streams.wire tell the same story about contract v1.

Every sample record is judged twice, by jsonschema (draft 2020-12) and by wire.parse, and the
two verdicts must agree. Where a rule is beyond JSON Schema, the sample sits in GAPS with the
reason, and the test asserts the gap exactly (schema says valid, wire rejects), so that a gap
that closes or widens is noticed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from streams import wire
from streams.core.events import Finding, FindingKind, Status
from streams.core.currencies import CURRENCIES
from streams.wire import AUTH_TOPIC, SETTLEMENT_TOPIC, Reject

from .test_wire import (
    _DROP,
    REJECTS,
    RECORD_TIME,
    VISA,
    credit,
    credits,
    finding,
    pos_events,
    sale,
)

SCHEMA_DIR = Path(wire.__file__).parent / "schemas"
SCHEMAS = {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}
REGISTRY = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
URN = "urn:settlewatch:contract:v1:"
# A topic's schema: pos.authorisations carries sales (authorisation.json) and reversals and
# refunds (pos_event.json); pos.settlements carries credits and, since v1.1, completeness
# markers (settlement_file_complete.json).
TOPIC_SCHEMAS = {
    AUTH_TOPIC: {"oneOf": [{"$ref": URN + "authorisation"}, {"$ref": URN + "pos_event"}]},
    SETTLEMENT_TOPIC: {"oneOf": [{"$ref": URN + "settlement_credit"},
                                 {"$ref": URN + "settlement_file_complete"}]},
}
FORMATS = Draft202012Validator.FORMAT_CHECKER
# jsonschema checks format "date-time" only when rfc3339-validator is installed (it is not a
# dependency); the schemas' own pattern carries the shape either way.
DATE_TIME_FORMAT_CHECKED = "date-time" in FORMATS.checkers


def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS)


def schema_says_valid(topic: str, record) -> bool:
    return validator(TOPIC_SCHEMAS[topic]).is_valid(record)


def wire_says_valid(topic: str, record) -> bool:
    raw = json.dumps(record).encode()
    # Far-future record time: the future_timestamp rule is relative to Kafka's record time,
    # which a schema cannot see; it has its own cases in GAPS.
    return not isinstance(wire.parse(topic, raw, RECORD_TIME + 10**12), Reject)


def strict_json(raw: bytes):
    """The JSON document in `raw`, or None when it is not one (NaN is not JSON)."""
    def no_constants(name):
        raise ValueError(name)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except ValueError:
        return None


# ------------------------------------------------------------------------------- the schemas
def test_every_schema_is_a_valid_draft_2020_12_schema():
    assert set(SCHEMAS) == {"authorisation", "pos_event", "settlement_credit", "anomaly",
                            "deadletter", "settlement_file_complete"}
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_schemas_list_exactly_the_currencies_of_streams_currencies():
    for name in ("authorisation", "pos_event", "settlement_credit", "anomaly"):
        assert SCHEMAS[name]["properties"]["currency"]["enum"] == sorted(CURRENCIES), name


def test_the_dead_letter_schema_lists_exactly_the_reason_codes_of_wire():
    assert SCHEMAS["deadletter"]["properties"]["reason"]["enum"] == list(wire.REASONS)


def test_the_amount_limits_are_the_same_in_schema_and_wire():
    for name in ("authorisation", "pos_event", "settlement_credit"):
        amount = SCHEMAS[name]["properties"]["amount_minor"]
        assert (amount["minimum"], amount["maximum"]) == (1, wire.MAX_AMOUNT_MINOR)
    fee = SCHEMAS["settlement_credit"]["properties"]["fee_minor"]
    assert (fee["minimum"], fee["maximum"]) == (0, wire.MAX_AMOUNT_MINOR)


@pytest.mark.parametrize("name, topic, record", [
    ("authorisation", AUTH_TOPIC, sale(batch_id="b", stan="1", rrn="2", auth_code="3",
                                       pan_masked="411111******1111")),
    ("pos_event", AUTH_TOPIC, sale(type="refund", status=_DROP, batch_id="b", stan="1",
                                   rrn="2", auth_code="3", pan_masked="411111******1111")),
    ("settlement_credit", SETTLEMENT_TOPIC, credit(auth_ids=["a"], batch_id="b", fee_minor=1)),
])
def test_required_fields_are_the_same_in_schema_and_wire(name, topic, record):
    required = set(SCHEMAS[name]["required"])
    for field in SCHEMAS[name]["properties"]:
        without = {k: v for k, v in record.items() if k != field}
        assert not schema_says_valid(topic, without) == (field in required), field
        r = wire.parse(topic, json.dumps(without).encode(), RECORD_TIME)
        if field in required:
            assert isinstance(r, Reject) and r.reason == wire.MISSING_FIELD, field
        else:
            assert not isinstance(r, Reject), (field, r)


# ---------------------------------------------------------------------- input: agreeing cases
VALID = {
    "a sale": (AUTH_TOPIC, sale()),
    "a declined sale with every optional field": (AUTH_TOPIC, sale(
        status="declined", batch_id="b-1", stan="000123", rrn="432112345678", auth_code="",
        pan_masked="411111******1111")),
    "a sale with null optionals": (AUTH_TOPIC, sale(batch_id=None, pan_masked=None, stan=None)),
    "a sale with unknown extra fields": (AUTH_TOPIC, sale(note="x", v=2, nested={"a": [1]})),
    "a sale with an offset time": (AUTH_TOPIC, sale(event_time="2026-11-23T18:15:30+08:00")),
    "a sale with lower-case t and z": (AUTH_TOPIC, sale(event_time="2026-11-23t10:15:30.5z")),
    "a sale in a leap second": (AUTH_TOPIC, sale(event_time="2016-12-31T23:59:60Z")),
    "a sale in yen": (AUTH_TOPIC, sale(currency="JPY", amount_minor=wire.MAX_AMOUNT_MINOR)),
    "a sale with only the last 4 digits shown": (AUTH_TOPIC, sale(pan_masked="XXXXXXXXXXXX1234")),
    "a reversal without status": (AUTH_TOPIC, sale(type="reversal", status=_DROP)),
    "a refund with a junk status": (AUTH_TOPIC, sale(type="refund", status=7)),
    "a per-sale credit": (SETTLEMENT_TOPIC, credit(auth_ids=["au-1", "au-2"], fee_minor=0)),
    "a batch credit": (SETTLEMENT_TOPIC, credit(batch_id="b-1", fee_minor=74)),
    "a credit with nulls": (SETTLEMENT_TOPIC, credit(auth_ids=None, batch_id=None,
                                                     fee_minor=None)),
    "a credit with an empty auth_ids list": (SETTLEMENT_TOPIC, credit(auth_ids=[])),
}


@pytest.mark.parametrize("case", list(VALID), ids=lambda c: c.replace(" ", "_"))
def test_schema_and_wire_both_accept_a_valid_record(case):
    topic, record = VALID[case]
    assert schema_says_valid(topic, record)
    assert wire_says_valid(topic, record)


# Rejects of test_wire that JSON Schema cannot see, and why. For these the schema says valid.
GAPS = {
    "visa number as the auth_id": "a card number is a Luhn-valid run of 13-19 digits read "
                                  "through Unicode digits and separators (full_pan)",
    "visa number in a credit's auth_ids": "a card number in a stored field (full_pan)",
    "year 0000": "the time range (2000-01-01 to 9999-01-01, UTC) depends on the offset",
    "year 1 east of UTC": "the time range depends on the offset",
    "last second of 1999": "the time range depends on the offset",
    "year 9999 west of UTC": "the time range depends on the offset",
    "year 9999 east of UTC": "the time range depends on the offset",
    "a key twice": "JSON Schema sees one value per key (the parser keeps the last)",
    "a key twice, compact": "JSON Schema sees one value per key (the parser keeps the last)",
    "a record over max_record_bytes": "the record size is beyond JSON Schema",
    "event a second too far ahead": "future_timestamp is relative to the Kafka record time",
    "credit a day ahead": "future_timestamp is relative to the Kafka record time",
    "integral float amount": "JSON Schema's integer admits 100.0; wire wants integer literals",
    "no such day": "the pattern cannot know month lengths (format date-time could, with "
                   "rfc3339-validator installed)",
}
if DATE_TIME_FORMAT_CHECKED:
    del GAPS["no such day"]

# Further records the schema accepts and wire rejects, beyond the table of test_wire.
MORE_GAPS = {
    "pan_masked with a final newline": (
        AUTH_TOPIC, sale(pan_masked="411111******1111\n"), wire.BAD_PAN_MASKED,
        "Python's re lets $ match before a final newline (ECMA-262's $ does not)"),
    "event_time with a final newline": (
        AUTH_TOPIC, sale(event_time="2026-11-23T10:15:30Z\n"), wire.BAD_TIME,
        "Python's re lets $ match before a final newline (ECMA-262's $ does not)"),
    "a card number with dots in a credit's batch_id": (
        SETTLEMENT_TOPIC, credit(batch_id="4111.1111.1111.1111"), wire.FULL_PAN,
        "a card number read through separators"),
}


def test_the_gaps_name_rows_that_exist():
    assert set(GAPS) <= set(REJECTS)


@pytest.mark.parametrize("case", list(REJECTS), ids=lambda c: c.replace(" ", "_"))
def test_schema_and_wire_agree_on_every_rejected_record_or_the_gap_is_known(case):
    topic, raw, reason, _ = REJECTS[case]
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    record = strict_json(raw)
    r = wire.parse(topic, raw, RECORD_TIME)
    assert isinstance(r, Reject) and r.reason == reason
    if record is None:
        assert reason in (wire.MALFORMED_JSON, wire.FULL_PAN)  # not JSON: no schema applies
        return
    assert schema_says_valid(topic, record) == (case in GAPS), GAPS.get(case, "should agree")


@pytest.mark.parametrize("case", list(MORE_GAPS), ids=lambda c: c.replace(" ", "_"))
def test_records_beyond_json_schema_are_valid_there_and_rejected_by_wire(case):
    topic, record, reason, why = MORE_GAPS[case]
    assert schema_says_valid(topic, record), why
    r = wire.parse(topic, json.dumps(record).encode(), RECORD_TIME)
    assert isinstance(r, Reject) and r.reason == reason


@settings(max_examples=200)
@given(pos_events() | credits())
def test_every_event_wire_writes_is_valid_under_its_topic_schema(e):
    topic = SETTLEMENT_TOPIC if e.__class__.__name__ == "Credit" else AUTH_TOPIC
    assert schema_says_valid(topic, json.loads(wire.event_to_json(e)))


# ---------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("f", [
    finding(),
    finding(kind=FindingKind.MISSING, status=Status.RESOLVED, credit_ids=(), received_minor=0,
            probable_cause=None),
    finding(kind=FindingKind.ORPHAN, deadline_ms=None, auth_ids=(), probable_cause=None),
])
def test_every_finding_wire_writes_is_valid_under_the_anomaly_schema(f: Finding):
    v = validator(SCHEMAS["anomaly"])
    assert v.is_valid(json.loads(wire.finding_to_json(f)))


@pytest.mark.parametrize("change", [
    {"kind": "weird"}, {"status": "closed"}, {"deadline": "tomorrow"}, {"expected_minor": 1.5},
    {"evidence": {}}, {"currency": "XXX"},
])
def test_the_anomaly_schema_refuses_what_finding_to_json_never_writes(change):
    d = wire.finding_to_dict(finding())
    assert not validator(SCHEMAS["anomaly"]).is_valid({**d, **change})
    del d["subject"]
    assert not validator(SCHEMAS["anomaly"]).is_valid(d)


@pytest.mark.parametrize("case", list(REJECTS), ids=lambda c: c.replace(" ", "_"))
def test_every_dead_letter_wire_writes_is_valid_under_the_deadletter_schema(case):
    topic, raw, _, _ = REJECTS[case]
    if isinstance(raw, dict):
        raw = json.dumps(raw).encode()
    r = wire.parse(topic, raw, RECORD_TIME)
    v = validator(SCHEMAS["deadletter"])
    assert v.is_valid(json.loads(wire.deadletter_to_json(r, topic, 0, 17, RECORD_TIME)))
    assert v.is_valid(json.loads(wire.deadletter_to_json(r, topic, None, None)))


def test_a_dead_letter_holds_the_original_as_text_or_as_base64_never_both():
    d = wire.deadletter_to_dict(Reject("malformed_json", "m", b"\xff"), AUTH_TOPIC, 0, 0)
    v = validator(SCHEMAS["deadletter"])
    assert v.is_valid(d) and "original_b64" in d
    assert not v.is_valid({**d, "original": "x"})
    assert not v.is_valid({k: x for k, x in d.items() if k != "original_b64"})
