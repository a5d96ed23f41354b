"""Fuzzing the parser (issue 14, "Tests that stay"): hostile records built from valid events.

For every record: `wire.parse` does not raise; a reject has one of the documented reason codes;
and nothing that leaves the parser holds a card number by the slow definition of
tests/wire/oracle.py (NFKC, Unicode digits as ASCII, separators removed, JSON escapes decoded):
not `Reject.raw`, not its message, not the encoded dead letter (nor its decoded original), not
any field of an accepted event. An accepted event writes back as an equal event.

A few thousand cases per run in `make test` (SETTLEWATCH_FUZZ_EXAMPLES, default 1000 for each
of the first two tests and half that for the third); `make fuzz` runs 50,000 each.
"""
from __future__ import annotations

import base64
import json
import os
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import wire
from streams.core.events import Credit, PosEvent
from streams.wire import AUTH_TOPIC, Reject
from streams.wire import decode as decode_module

from .oracle import card_numbers_in
from .test_wire import RECORD_TIME, credits, pos_events

EXAMPLES = int(os.environ.get("SETTLEWATCH_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
FUZZ_HALF = settings(FUZZ, max_examples=max(1, EXAMPLES // 2))

# How digits and separators may be written (issue 14 item 6).
DIGIT_FORMS = [
    lambda d: str(d),                          # ASCII
    lambda d: chr(0xFF10 + d),                 # full width
    lambda d: chr(0x0660 + d),                 # Arabic-Indic
    lambda d: chr(0x0966 + d),                 # Devanagari
    lambda d: chr(0x1D7CE + d),                # mathematical bold
    lambda d: "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"[d],  # superscript
]
SEPARATORS = [" ", "  ", "-", ".", "/", "\t", "\n", "\u00a0", "\u2013", "\u2014", "\u200b",
              "\u3000", "\x00", ", ", "_", " - ", "\u00ad", "\u0301", "\r\n", "\\", ":"]
PREFIXES = ["", "\u53f7", "x", "#", "*", "\u00e9", "7", "\U0001f4b3", " "]


def _luhn_complete(body: list[int]) -> list[int]:
    total = 0
    for i, d in enumerate(reversed(body)):
        if i % 2 == 0:  # doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + [(10 - total % 10) % 10]


@st.composite
def card_numbers(draw) -> str:
    """A Luhn-valid 13-19 digit number, written in groups with separators and digit forms
    (two draws, the rest from a seeded generator: cheap to generate)."""
    body = [int(c) for c in str(draw(st.integers(10**11, 10**18 - 1)))]
    rnd = random.Random(draw(st.integers(0, 2**32)))
    digits = _luhn_complete(body)
    forms = [rnd.randrange(len(DIGIT_FORMS)) for _ in range(rnd.randint(1, 3))]
    if rnd.random() < 0.4:
        forms = [0]  # plain ASCII digits often, so that separators are tried on their own
    out = rnd.choice(PREFIXES)
    i = 0
    while i < len(digits):
        k = rnd.randint(1, 8)
        out += "".join(DIGIT_FORMS[forms[(i + j) % len(forms)]](d)
                       for j, d in enumerate(digits[i:i + k]))
        i += k
        if i < len(digits) and rnd.random() < 0.6:
            out += rnd.choice(SEPARATORS)
    return out + rnd.choice(PREFIXES)


_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
_values = st.one_of(
    card_numbers(), _texts, st.integers(-10**20, 10**20), st.floats(allow_nan=False),
    st.none(), st.booleans(), st.lists(card_numbers() | _texts, max_size=3),
    st.dictionaries(_texts, card_numbers() | st.integers(), max_size=2),
)
_FIELDS = ["type", "event_id", "auth_id", "merchant_id", "terminal_id", "acquirer", "channel",
           "amount_minor", "currency", "event_time", "status", "batch_id", "stan", "rrn",
           "auth_code", "pan_masked", "credit_id", "auth_ids", "fee_minor", "note", "ts_ms"]


@st.composite
def hostile_records(draw) -> tuple[str, bytes, int]:
    """(topic, bytes, max_record_bytes): a valid event's record, changed."""
    e = draw(pos_events() | credits())
    d = wire.event_to_dict(e)
    for _ in range(draw(st.integers(0, 3))):
        d[draw(st.sampled_from(_FIELDS) | _texts)] = draw(_values)
    if draw(st.booleans()):
        d.pop(draw(st.sampled_from(_FIELDS)), None)
    raw = json.dumps(d, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is", "as is", "duplicate key", "huge number", "control",
                                "truncate", "utf-16", "bytes", "splice a number"]))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    if how == "duplicate key" and len(d) > 1:
        k = rnd.choice(list(d))
        raw = raw[:-1] + b", " + json.dumps(k).encode() + b": " + json.dumps(
            draw(_values)).encode() + b"}"
    elif how == "huge number":
        raw = raw[:-1] + b', "big": ' + rnd.choice([b"1e400", b"-1e999", b"9" * 500]) + b"}"
    elif how == "control":
        at = rnd.randrange(len(raw))
        raw = raw[:at] + bytes(rnd.randrange(32) for _ in range(rnd.randrange(1, 50))) + raw[at:]
    elif how == "truncate":
        raw = raw[:rnd.randrange(len(raw))]
    elif how == "utf-16":
        raw = raw.decode("utf-8", "surrogatepass").encode(
            rnd.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]), "surrogatepass")
    elif how == "bytes":
        at = rnd.randrange(len(raw))
        raw = raw[:at] + draw(st.binary(max_size=40)) + raw[at:]
    elif how == "splice a number":  # anywhere, even inside a key or an escape
        at = rnd.randrange(len(raw))
        raw = raw[:at] + draw(card_numbers()).encode("utf-8") + raw[at:]
    topic = wire.SETTLEMENT_TOPIC if isinstance(e, Credit) else AUTH_TOPIC
    if draw(st.booleans()):
        topic = rnd.choice(wire.INPUT_TOPICS)
    limit = draw(st.sampled_from([wire.MAX_RECORD_BYTES] * 4 + [64, 200, 500]))
    return topic, raw, limit


def assert_no_card_number_leaves(topic: str, raw: bytes, limit: int) -> None:
    r = wire.parse(topic, raw, RECORD_TIME, max_record_bytes=limit)
    if isinstance(r, Reject):
        assert r.reason in wire.REASONS and r.reason in decode_module.__doc__
        assert card_numbers_in(r.raw) == [], (r.reason, r.raw)
        assert card_numbers_in(r.message) == [], r.message
        assert r.reason != wire.TOO_LARGE or len(r.raw) <= wire.TOO_LARGE_PREFIX_BYTES
        dead = wire.deadletter_to_json(r, topic, 0, 1, RECORD_TIME)
        assert card_numbers_in(dead) == []
        d = orjson.loads(dead)
        original = (d["original"].encode() if "original" in d
                    else base64.b64decode(d["original_b64"]))
        assert card_numbers_in(original) == [] and card_numbers_in(d["message"]) == []
        assert len(dead) <= 2 * len(r.raw) + len(d["message"]) * 6 + 300
    else:
        assert isinstance(r, (PosEvent, Credit))
        for name in r.__slots__ if hasattr(r, "__slots__") else vars(r):
            v = getattr(r, name)
            for text in (v if isinstance(v, tuple) else (v,)):
                if isinstance(text, str):
                    assert card_numbers_in(text) == [], (name, text)
        out = wire.event_to_json(r)
        assert card_numbers_in(out) == []
        assert wire.parse(topic, out, RECORD_TIME) == r


@FUZZ
@given(hostile_records())
def test_no_hostile_record_crashes_the_parser_or_leaks_a_card_number(case):
    assert_no_card_number_leaves(*case)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(wire.INPUT_TOPICS),
       st.sampled_from([wire.MAX_RECORD_BYTES, 100]))
def test_no_arbitrary_bytes_crash_the_parser_or_leak_a_card_number(raw, topic, limit):
    assert_no_card_number_leaves(topic, raw, limit)


@FUZZ_HALF
@given(st.lists(card_numbers() | st.text(max_size=10), min_size=1, max_size=8),
       st.booleans())
def test_masking_leaves_no_card_number_in_either_reading_and_is_idempotent(parts, escape):
    text = " ".join(parts)
    data = (json.dumps(text) if escape else text).encode("utf-8", "surrogatepass")
    masked = wire.mask_pans(data)
    assert card_numbers_in(masked) == []
    assert wire.mask_pans(masked) == masked
    assert wire.contains_pan(masked) is False
    assert wire.contains_pan(data) == bool(card_numbers_in(data))
