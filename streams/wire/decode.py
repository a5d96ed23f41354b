"""Contract v1 on the wire: bytes <-> core events, validation, dead-letter records.

Owns: the topic names, decoding and validating the two input topics into `PosEvent` and `Credit`
(or a `Reject` with a reason code), card-number (PAN) detection and masking, RFC 3339 <-> ms
conversion, and encoding of events (for the simulator), findings (settlewatch.anomalies) and
dead letters (settlewatch.deadletter). It imports the core vocabulary and orjson, nothing of
faust, Kafka or metrics, and reads no clock: the caller passes the record time.

The same rules, as far as JSON Schema can say them, are in streams/wire/schemas/*.json.

Reason codes of a `Reject` (checked in this order; the first failure wins):
  full_pan          a 13-19 digit number passing the Luhn check anywhere in the bytes, also with
                    single spaces or dashes between digit groups, also inside malformed bytes and
                    behind \\u escapes; a `pan_masked` that is in fact a full PAN is full_pan too
  malformed_json    empty record, not UTF-8, not JSON, or JSON but not an object
  missing_field     a required field is absent (the message names it)
  bad_type          a field has the wrong JSON type (null for a required field, bool for an
                    integer, a number for a string, ...)
  unknown_type      `type` is a string but not one of the four event types
  empty_field       an id (event_id, auth_id, merchant_id, terminal_id, acquirer, channel,
                    credit_id, batch_id, an auth_ids item) is the empty string
  bad_amount        amount_minor not an integer (1.0 too), <= 0 or > MAX_AMOUNT_MINOR;
                    fee_minor not an integer, < 0 or > MAX_AMOUNT_MINOR
  unknown_currency  currency not an active ISO 4217 code of streams.core.currencies
  bad_time          event_time not RFC 3339 (date, 'T', time, 'Z' or a +hh:mm/-hh:mm offset)
  bad_status        authorisation status not "approved" or "declined"
  bad_pan_masked    pan_masked not shaped like a masked PAN (up to 6 digits, one or more of
                    '*', 'x', 'X', '#', up to 4 digits; 12-19 characters)
  duplicate_auth_id the same auth_id twice in a credit's auth_ids
  future_timestamp  event_time > record time + max_future_ms (never reaches the watermark)
  wrong_topic       a valid event of the other input topic
Unknown extra fields are ignored. Optional fields may be absent or null. `status` is read on
authorisations only (on a reversal or refund it is an unknown extra field). stan, rrn and
auth_code may be empty strings; ids may not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from streams.core.currencies import CURRENCY_CODES
from streams.core.events import (
    APPROVED,
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    SETTLEMENT_CREDIT,
    Credit,
    PosEvent,
)
from streams.wire.pan import (
    _RUN_NEEDLE,
    _RUN_TABLE,
    _mask_spans,
    mask_pans_text,
    pan_spans,
)
from streams.wire.times import (
    _time_ms_or_none,
    format_time_ms,
)
from streams.wire.topics import (
    AUTH_TOPIC,
    SETTLEMENT_TOPIC,
)

MAX_AMOUNT_MINOR = 10**12
MAX_FUTURE_MS = 900_000  # contract default max_future: 15 minutes

FULL_PAN = "full_pan"
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
BAD_TYPE = "bad_type"
UNKNOWN_TYPE = "unknown_type"
EMPTY_FIELD = "empty_field"
BAD_AMOUNT = "bad_amount"
UNKNOWN_CURRENCY = "unknown_currency"
BAD_TIME = "bad_time"
BAD_STATUS = "bad_status"
BAD_PAN_MASKED = "bad_pan_masked"
DUPLICATE_AUTH_ID = "duplicate_auth_id"
FUTURE_TIMESTAMP = "future_timestamp"
WRONG_TOPIC = "wrong_topic"
REASONS: tuple[str, ...] = (
    FULL_PAN, MALFORMED_JSON, MISSING_FIELD, BAD_TYPE, UNKNOWN_TYPE, EMPTY_FIELD, BAD_AMOUNT,
    UNKNOWN_CURRENCY, BAD_TIME, BAD_STATUS, BAD_PAN_MASKED, DUPLICATE_AUTH_ID, FUTURE_TIMESTAMP,
    WRONG_TOPIC,
)

_POS_TYPES = {AUTHORISATION: AUTHORISATION, REVERSAL: REVERSAL, REFUND: REFUND}
_STATUSES = {APPROVED: APPROVED, DECLINED: DECLINED}
# Interned codes: every event of a currency shares one string object.
_CURRENCY = {c: c for c in CURRENCY_CODES}


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that is not a valid event of its topic: a dead letter to be.

    `raw` is the original bytes with every full card number masked (first 6 and last 4 digits
    kept); when a card number was spelt with JSON \\u escapes, those escapes of digits, spaces
    and dashes are expanded in `raw` so that the number can be masked. `message` is for
    people and never holds a full card number.
    """

    reason: str
    message: str
    raw: bytes


# ----------------------------------------------------------------------------------- decoding
_PAN_MASKED = re.compile(r"[0-9]{0,6}[*xX#]+[0-9]{0,4}")
_JSON_TYPE = {type(None): "null", bool: "boolean", int: "integer", float: "number",
              str: "string", list: "array", dict: "object"}


class _Invalid(Exception):
    """Internal: a field check failed (raised only on the slow, invalid path)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message


def _jtype(v: Any) -> str:
    return _JSON_TYPE.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _bad_id(d: dict, name: str) -> _Invalid:
    if name not in d:
        return _Invalid(MISSING_FIELD, f"missing field {name}")
    v = d[name]
    if type(v) is not str:
        return _Invalid(BAD_TYPE, f"{name} must be a string, got {_jtype(v)}")
    return _Invalid(EMPTY_FIELD, f"{name} must not be empty")


def _bad_int(d: dict, name: str, minimum: int) -> _Invalid:
    if name not in d:
        return _Invalid(MISSING_FIELD, f"missing field {name}")
    v = d[name]
    if type(v) is float:
        return _Invalid(BAD_AMOUNT, f"{name} must be an integer of minor units, got {_show(v)}")
    if type(v) is not int:
        return _Invalid(BAD_TYPE, f"{name} must be an integer, got {_jtype(v)}")
    return _Invalid(BAD_AMOUNT, f"{name} must be in [{minimum}, {MAX_AMOUNT_MINOR}], got {v}")


def _currency(d: dict) -> str:
    v = d.get("currency")
    c = _CURRENCY.get(v) if type(v) is str else None
    if c is not None:
        return c
    if "currency" not in d:
        raise _Invalid(MISSING_FIELD, "missing field currency")
    if type(v) is not str:
        raise _Invalid(BAD_TYPE, f"currency must be a string, got {_jtype(v)}")
    raise _Invalid(UNKNOWN_CURRENCY, f"currency {_show(v)} is not an active ISO 4217 code")


def _event_time(d: dict) -> int:
    v = d.get("event_time")
    if type(v) is str:
        t = _time_ms_or_none(v)
        if t is not None:
            return t
        raise _Invalid(BAD_TIME, f"event_time {_show(v)} is not RFC 3339 with Z or an offset")
    if "event_time" not in d:
        raise _Invalid(MISSING_FIELD, "missing field event_time")
    raise _Invalid(BAD_TYPE, f"event_time must be a string, got {_jtype(v)}")


def _optional_str(d: dict, name: str, non_empty: bool) -> str | None:
    v = d.get(name)
    if v is None:
        return None
    if type(v) is not str:
        raise _Invalid(BAD_TYPE, f"{name} must be a string or null, got {_jtype(v)}")
    if non_empty and not v:
        raise _Invalid(EMPTY_FIELD, f"{name} must not be empty")
    return v


_PAN_MASKED_OK: set[str] = set()  # pan_masked values seen valid (cards recur)


def _check_pan_masked(d: dict) -> None:
    """Raises unless d["pan_masked"] (not null) looks masked; remembers good values."""
    v = _optional_str(d, "pan_masked", False)
    if v is None or type(v) is not str:  # unhashable values were caught above as bad_type
        return
    if not 12 <= len(v) <= 19 or _PAN_MASKED.fullmatch(v) is None:
        raise _Invalid(BAD_PAN_MASKED, "pan_masked must be a masked PAN like 411111******1111")
    if len(_PAN_MASKED_OK) >= 100_000:
        _PAN_MASKED_OK.clear()
    _PAN_MASKED_OK.add(v)


def _pos_event(d: dict, t: str) -> PosEvent:
    get = d.get
    event_id = get("event_id")
    if type(event_id) is not str or not event_id:
        raise _bad_id(d, "event_id")
    auth_id = get("auth_id")
    if type(auth_id) is not str or not auth_id:
        raise _bad_id(d, "auth_id")
    merchant_id = get("merchant_id")
    if type(merchant_id) is not str or not merchant_id:
        raise _bad_id(d, "merchant_id")
    terminal_id = get("terminal_id")
    if type(terminal_id) is not str or not terminal_id:
        raise _bad_id(d, "terminal_id")
    acquirer = get("acquirer")
    if type(acquirer) is not str or not acquirer:
        raise _bad_id(d, "acquirer")
    channel = get("channel")
    if type(channel) is not str or not channel:
        raise _bad_id(d, "channel")
    amount = get("amount_minor")
    if type(amount) is not int or amount <= 0 or amount > MAX_AMOUNT_MINOR:
        raise _bad_int(d, "amount_minor", 1)
    currency = get("currency")
    currency = _CURRENCY.get(currency) if type(currency) is str else None
    if currency is None:
        currency = _currency(d)  # raises
    event_time = get("event_time")
    event_time_ms = _time_ms_or_none(event_time) if type(event_time) is str else None
    if event_time_ms is None:
        event_time_ms = _event_time(d)  # raises
    if t is AUTHORISATION:
        v = get("status")
        status = _STATUSES.get(v) if type(v) is str else None
        if status is None:
            if "status" not in d:
                raise _Invalid(MISSING_FIELD, "missing field status")
            if type(v) is not str:
                raise _Invalid(BAD_TYPE, f"status must be a string, got {_jtype(v)}")
            raise _Invalid(BAD_STATUS, f"status {_show(v)} is not approved or declined")
    else:
        status = APPROVED  # reversal and refund carry no status (contract v1)
    batch_id = get("batch_id")
    if batch_id is not None and (type(batch_id) is not str or not batch_id):
        _optional_str(d, "batch_id", True)  # raises
    pan_masked = get("pan_masked")
    if pan_masked is not None and (
        type(pan_masked) is not str or pan_masked not in _PAN_MASKED_OK
    ):
        _check_pan_masked(d)  # raises unless it looks masked
    stan = get("stan")
    if stan is not None and type(stan) is not str:
        _optional_str(d, "stan", False)  # raises
    rrn = get("rrn")
    if rrn is not None and type(rrn) is not str:
        _optional_str(d, "rrn", False)  # raises
    auth_code = get("auth_code")
    if auth_code is not None and type(auth_code) is not str:
        _optional_str(d, "auth_code", False)  # raises
    return PosEvent(t, event_id, auth_id, merchant_id, terminal_id, acquirer, channel, amount,
                    currency, event_time_ms, status, batch_id, pan_masked, stan, rrn, auth_code)


def _auth_ids(d: dict) -> tuple[str, ...]:
    v = d.get("auth_ids")
    if v is None:
        return ()
    if type(v) is not list:
        raise _Invalid(BAD_TYPE, f"auth_ids must be an array of strings, got {_jtype(v)}")
    for i, a in enumerate(v):
        if type(a) is not str:
            raise _Invalid(BAD_TYPE, f"auth_ids[{i}] must be a string, got {_jtype(a)}")
        if not a:
            raise _Invalid(EMPTY_FIELD, f"auth_ids[{i}] must not be empty")
    ids = tuple(v)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i, a in enumerate(ids):
            if a in seen:
                raise _Invalid(DUPLICATE_AUTH_ID, f"auth_ids[{i}] {_show(a)} appears twice")
            seen.add(a)
    return ids


def _credit(d: dict) -> Credit:
    get = d.get
    credit_id = get("credit_id")
    if type(credit_id) is not str or not credit_id:
        raise _bad_id(d, "credit_id")
    merchant_id = get("merchant_id")
    if type(merchant_id) is not str or not merchant_id:
        raise _bad_id(d, "merchant_id")
    acquirer = get("acquirer")
    if type(acquirer) is not str or not acquirer:
        raise _bad_id(d, "acquirer")
    amount = get("amount_minor")
    if type(amount) is not int or amount <= 0 or amount > MAX_AMOUNT_MINOR:
        raise _bad_int(d, "amount_minor", 1)
    currency = get("currency")
    currency = _CURRENCY.get(currency) if type(currency) is str else None
    if currency is None:
        currency = _currency(d)  # raises
    event_time = get("event_time")
    event_time_ms = _time_ms_or_none(event_time) if type(event_time) is str else None
    if event_time_ms is None:
        event_time_ms = _event_time(d)  # raises
    auth_ids = _auth_ids(d)
    batch_id = _optional_str(d, "batch_id", True)
    fee = get("fee_minor")
    if fee is not None and (type(fee) is not int or fee < 0 or fee > MAX_AMOUNT_MINOR):
        raise _bad_int(d, "fee_minor", 0)
    return Credit(credit_id, merchant_id, acquirer, amount, currency, event_time_ms, auth_ids,
                  batch_id, fee)


_ESCAPED_DIGIT = re.compile(rb"\\u00(3[0-9]|2[0dD])")


def _unescape_digit(m: re.Match[bytes]) -> bytes:
    return bytes((int(m.group(1), 16),))


def _reject(reason: str, message: str, raw: bytes) -> Reject:
    return Reject(reason, mask_pans_text(message), raw)


def parse(
    topic: str, raw: bytes, record_time_ms: int, max_future_ms: int = MAX_FUTURE_MS
) -> PosEvent | Credit | Reject:
    """Decode and validate one record of `topic` (AUTH_TOPIC or SETTLEMENT_TOPIC).

    `raw` is bytes (bytearray and memoryview are copied; None is an empty record).
    `record_time_ms` is the Kafka record timestamp (for files, or a record without a timestamp:
    the time of reading); an event stamped more than `max_future_ms` after it is rejected as
    future_timestamp. Never raises on bad input; raises ValueError for an unknown topic.
    """
    if topic == AUTH_TOPIC:
        want_credit = False
    elif topic == SETTLEMENT_TOPIC:
        want_credit = True
    else:
        raise ValueError(f"not an input topic: {topic!r}")
    if not raw:
        return Reject(MALFORMED_JSON, "empty record", b"")
    if type(raw) is not bytes:
        raw = bytes(raw)
    # Inline of pan_spans' quick test: no run of 13 [0-9 -] characters, no card number.
    spans = pan_spans(raw) if raw.translate(_RUN_TABLE).find(_RUN_NEEDLE) >= 0 else None
    if spans:
        return Reject(FULL_PAN, f"full card number in the record ({len(spans)} found, masked)",
                      _mask_spans(raw, spans))
    if raw.find(b"\\") >= 0:
        # JSON \u escapes can spell digits, spaces and dashes that the byte scan cannot see.
        plain = _ESCAPED_DIGIT.sub(_unescape_digit, raw)
        spans = pan_spans(plain) if plain != raw else None
        if spans:
            return Reject(FULL_PAN, f"full card number behind \\u escapes ({len(spans)} found;"
                          " escapes expanded, number masked)", _mask_spans(plain, spans))
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _reject(MALFORMED_JSON, f"not UTF-8 JSON: {exc}", raw)
    if type(d) is not dict:
        return Reject(MALFORMED_JSON, f"a record must be a JSON object, got {_jtype(d)}", raw)
    t = d.get("type")
    try:
        if t == SETTLEMENT_CREDIT:
            e: PosEvent | Credit = _credit(d)
            wrong = not want_credit
        else:
            pt = _POS_TYPES.get(t) if type(t) is str else None
            if pt is None:
                if "type" not in d:
                    return Reject(MISSING_FIELD, "missing field type", raw)
                if type(t) is not str:
                    return Reject(BAD_TYPE, f"type must be a string, got {_jtype(t)}", raw)
                return _reject(UNKNOWN_TYPE, f"unknown event type {_show(t)}", raw)
            e = _pos_event(d, pt)
            wrong = want_credit
    except _Invalid as exc:
        return _reject(exc.reason, exc.message, raw)
    if e.event_time_ms > record_time_ms + max_future_ms:
        return Reject(
            FUTURE_TIMESTAMP,
            f"event_time {format_time_ms(e.event_time_ms)} is"
            f" {(e.event_time_ms - record_time_ms) / 1000:.3f}s after the record time"
            f" {format_time_ms(int(record_time_ms))} (allowed {max_future_ms / 1000:g}s)",
            raw,
        )
    if wrong:
        other = AUTH_TOPIC if want_credit else SETTLEMENT_TOPIC
        return Reject(WRONG_TOPIC, f"a valid {t} event belongs on {other}, not on {topic}", raw)
    return e


