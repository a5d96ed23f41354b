"""Contract v1 on the wire: bytes <-> core events, validation, dead-letter records.

Owns: the topic names, decoding and validating the two input topics into `PosEvent` and `Credit`
(or a `Reject` with a reason code), card-number (PAN) detection and masking, RFC 3339 <-> ms
conversion, and encoding of events (for the simulator), findings (settlewatch.anomalies) and
dead letters (settlewatch.deadletter). It imports the core vocabulary and orjson (the standard
json module for what orjson cannot tell: repeated keys, numbers beyond double range), nothing
of faust, Kafka or metrics, and reads no clock: the caller passes the record time.

Knobs for callers (the live worker, file and Kafka replay): `parse(..., max_future_ms=
MAX_FUTURE_MS, max_record_bytes=MAX_RECORD_BYTES)`.

The same rules, as far as JSON Schema can say them, are in streams/wire/schemas/*.json.

Reason codes of a `Reject` (checked in this order; the first failure wins):
  too_large         the record is longer than `max_record_bytes` (default 1,048,576, Kafka's
                    default message size); the dead letter keeps a masked prefix only
  malformed_json    empty record, not UTF-8, not JSON, or JSON but not an object (a number
                    beyond double range is JSON: in an ignored field it is ignored)
  duplicate_key     the top-level object has the same key twice (also spelt differently, as
                    "a\\u005fb" and "a_b"); the parser would keep the last, a reader the first
  missing_field     a required field is absent (the message names it)
  bad_type          a field has the wrong JSON type (null for a required field, bool for an
                    integer, a number for a string, ...)
  unknown_type      `type` is a string but not one of the five event types (a worker of v1, before
                    settlement_file_complete, dead-letters a v1.1 marker with this reason)
  empty_field       an id (event_id, auth_id, merchant_id, terminal_id, acquirer, channel,
                    credit_id, batch_id, an auth_ids item, marker_id) is the empty string
  bad_amount        amount_minor not an integer (1.0 and 1e400 too), <= 0 or > MAX_AMOUNT_MINOR;
                    fee_minor, a marker's credit_count or total_minor not an integer, < 0 or
                    > MAX_AMOUNT_MINOR
  unknown_currency  currency not an active ISO 4217 code of streams.core.currencies
  bad_time          a marker's settle_date not a calendar date YYYY-MM-DD from 2000-01-01 to
                    9998-12-31; event_time not RFC 3339 (date, 'T', time, 'Z' or a +hh:mm/-hh:mm offset), or
                    an impossible time: before 2000-01-01T00:00:00Z, or not before
                    9999-01-01T00:00:00Z (then some time zone has no calendar date for it, or
                    its deadlines would fall outside the calendar)
  bad_status        authorisation status not "approved" or "declined"
  bad_pan_masked    pan_masked not shaped like a masked PAN (up to 6 digits, one or more of
                    '*', 'x', 'X', '#', up to 4 digits; 12-19 characters)
  duplicate_auth_id the same auth_id twice in a credit's auth_ids
  full_pan          a card number in a field that is stored: pan_masked (where a terminal may
                    put one by mistake; checked with pan_masked, so before bad_pan_masked and
                    the checks after it), an id or a reference (stan, rrn, auth_code, batch_id,
                    an auth_ids item; checked once the event is otherwise valid). A card number
                    is what streams.wire.pan reads as one: 13-19 digits passing Luhn, Unicode
                    digits read as ASCII, any run of separators between digit groups
  future_timestamp  event_time > record time + max_future_ms (never reaches the watermark)
  wrong_topic       a valid event of the other input topic
Where a card number may be: only the contract's fields are kept (in state, findings, evidence),
so only they are searched. An unknown field is dropped whatever it holds (an epoch-ms
timestamp, a numeric id, even a card number), so it rejects nothing. Amounts are at most
10**12 and cannot be one. A numeric id of 13-19 digits that passes Luhn cannot be told from a
card number and is full_pan: it could not be stored. Every `Reject.raw` and message has every
candidate masked, wherever it is (streams.wire.pan.mask_pans).
Unknown extra fields are ignored. Optional fields may be absent or null. `status` is read on
authorisations only (on a reversal or refund it is an unknown extra field). stan, rrn and
auth_code may be empty strings; ids may not.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
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
    SETTLEMENT_FILE_COMPLETE,
    Credit,
    FileComplete,
    PosEvent,
)
from streams.wire.pan import (
    _NEEDLE,
    _RUN_TABLE,
    mask_pans,
    mask_pans_text,
    mask_prefix,
    text_has_pan,
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
MAX_RECORD_BYTES = 1_048_576  # contract default max_record_bytes: Kafka's default message size
TOO_LARGE_PREFIX_BYTES = 4096  # what a too_large dead letter keeps of the record
# Event times the core can take: from 2000-01-01 (contract) to a year before the calendar ends,
# so that the local date in any time zone (UTC-12 to UTC+14) and every deadline, horizon
# (missing_horizon: 90 days) and holiday reckoned from it, up to 300 days on, is a date.
MIN_EVENT_TIME_MS = 946_684_800_000      # 2000-01-01T00:00:00Z
MAX_EVENT_TIME_MS = 253_370_764_800_000  # 9999-01-01T00:00:00Z (exclusive)

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
TOO_LARGE = "too_large"
DUPLICATE_KEY = "duplicate_key"
REASONS: tuple[str, ...] = (
    TOO_LARGE, MALFORMED_JSON, DUPLICATE_KEY, MISSING_FIELD, BAD_TYPE, UNKNOWN_TYPE, EMPTY_FIELD,
    BAD_AMOUNT, UNKNOWN_CURRENCY, BAD_TIME, BAD_STATUS, BAD_PAN_MASKED, DUPLICATE_AUTH_ID,
    FULL_PAN, FUTURE_TIMESTAMP, WRONG_TOPIC,
)

_POS_TYPES = {AUTHORISATION: AUTHORISATION, REVERSAL: REVERSAL, REFUND: REFUND}
_STATUSES = {APPROVED: APPROVED, DECLINED: DECLINED}
# Interned codes: every event of a currency shares one string object.
_CURRENCY = {c: c for c in CURRENCY_CODES}


@dataclass(frozen=True, slots=True)
class Reject:
    """An input record that is not a valid event of its topic: a dead letter to be.

    `raw` is the original bytes with every digit run that could be a card number masked
    (first 6 and last 4 digits kept; each masked character or JSON escape becomes one '*'),
    or for too_large a masked prefix. `message` is for people and never holds a card number.
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
    return _Invalid(BAD_AMOUNT,
                    f"{name} must be in [{minimum}, {MAX_AMOUNT_MINOR}], got {_show(v)}")


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
        if t is None:
            raise _Invalid(BAD_TIME, f"event_time {_show(v)} is not RFC 3339 with Z or an offset")
        if t < MIN_EVENT_TIME_MS:
            raise _Invalid(BAD_TIME, f"event_time {_show(v)} is before 2000-01-01T00:00:00Z")
        if t >= MAX_EVENT_TIME_MS:
            raise _Invalid(BAD_TIME, f"event_time {_show(v)} is not before 9999-01-01T00:00:00Z"
                           " (no calendar date in some time zone, or no deadline after it)")
        return t
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
    if text_has_pan(v):
        raise _Invalid(FULL_PAN, "pan_masked holds a full card number (masked here)")
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
    if event_time_ms is None or not MIN_EVENT_TIME_MS <= event_time_ms < MAX_EVENT_TIME_MS:
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
    if event_time_ms is None or not MIN_EVENT_TIME_MS <= event_time_ms < MAX_EVENT_TIME_MS:
        event_time_ms = _event_time(d)  # raises
    auth_ids = _auth_ids(d)
    batch_id = _optional_str(d, "batch_id", True)
    fee = get("fee_minor")
    if fee is not None and (type(fee) is not int or fee < 0 or fee > MAX_AMOUNT_MINOR):
        raise _bad_int(d, "fee_minor", 0)
    return Credit(credit_id, merchant_id, acquirer, amount, currency, event_time_ms, auth_ids,
                  batch_id, fee)


_SETTLE_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _an_id(d: dict, name: str) -> str:
    """A required, non-empty id (the hot paths above inline this)."""
    v = d.get(name)
    if type(v) is not str or not v:
        raise _bad_id(d, name)
    return v


def _marker(d: dict) -> FileComplete:
    """A settlement_file_complete record (contract v1.1): one merchant's settlement file from
    one acquirer for one settle date is complete, with its control totals."""
    get = d.get
    marker_id, merchant_id, acquirer = (_an_id(d, name)
                                        for name in ("marker_id", "merchant_id", "acquirer"))
    v = get("settle_date")
    if type(v) is not str:
        if "settle_date" not in d:
            raise _Invalid(MISSING_FIELD, "missing field settle_date")
        raise _Invalid(BAD_TYPE, f"settle_date must be a string, got {_jtype(v)}")
    day = None
    if _SETTLE_DATE.fullmatch(v):
        try:
            day = date.fromisoformat(v)
        except ValueError:
            day = None
    if day is None or not date(2000, 1, 1) <= day <= date(9998, 12, 31):
        raise _Invalid(BAD_TIME, f"settle_date {_show(v)} is not a calendar date YYYY-MM-DD"
                       " from 2000-01-01 to 9998-12-31")
    count = get("credit_count")
    if type(count) is not int or count < 0 or count > MAX_AMOUNT_MINOR:
        raise _bad_int(d, "credit_count", 0)
    total = get("total_minor")
    if type(total) is not int or total < 0 or total > MAX_AMOUNT_MINOR:
        raise _bad_int(d, "total_minor", 0)
    currency = _currency(d)
    event_time_ms = _event_time(d)
    return FileComplete(marker_id, merchant_id, acquirer, day.toordinal(), count, total,
                        currency, event_time_ms)


def _stored_pan(e: PosEvent | Credit | FileComplete) -> str | None:
    """The name of the first stored text field of `e` that holds a card number, or None.
    (pan_masked was checked by its own rule; amounts are at most 13 digits and not Luhn-valid
    at 10**12; the enumerations and event_time cannot hold one.)"""
    if type(e) is FileComplete:
        fields: tuple[tuple[str, str | None], ...] = (
            ("marker_id", e.marker_id), ("merchant_id", e.merchant_id), ("acquirer", e.acquirer))
    elif type(e) is Credit:
        fields = (
            ("credit_id", e.credit_id), ("merchant_id", e.merchant_id),
            ("acquirer", e.acquirer), ("batch_id", e.batch_id),
            *((f"auth_ids[{i}]", a) for i, a in enumerate(e.auth_ids)))
    else:
        fields = (("event_id", e.event_id), ("auth_id", e.auth_id),
                  ("merchant_id", e.merchant_id), ("terminal_id", e.terminal_id),
                  ("acquirer", e.acquirer), ("channel", e.channel), ("batch_id", e.batch_id),
                  ("stan", e.stan), ("rrn", e.rrn), ("auth_code", e.auth_code))
    for name, v in fields:
        if v is not None and text_has_pan(v):
            return name
    return None


def _reject(reason: str, message: str, raw: bytes) -> Reject:
    return Reject(reason, mask_pans_text(message), mask_pans(raw))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _top_level_duplicate(text: str) -> tuple[Any, str | None]:
    """(the JSON value, the first key repeated in its top-level object or None), by the
    standard library (slow, exact). Raises ValueError or RecursionError on bad JSON."""
    dup: list[str | None] = [None]

    def pairs(items: list[tuple[str, Any]]) -> dict:
        d = dict(items)
        dup[0] = None
        if len(d) != len(items):  # the last object closed is the top-level one
            seen: set[str] = set()
            for k, _ in items:
                if k in seen:
                    dup[0] = k
                    break
                seen.add(k)
        return d

    value = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    return value, (dup[0] if type(value) is dict else None)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v)
            stack.extend(v.values())
    return False


def _loads_slow(raw: bytes) -> tuple[Any, str | None]:
    """What orjson refused or cannot tell: numbers beyond double range (they become inf, as
    orjson makes 1e300 a float; an ignored field may hold one), and repeated keys. Raises
    ValueError on anything that is not UTF-8 JSON."""
    try:
        text = raw.decode("utf-8")
        value, dup = _top_level_duplicate(text)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if _has_lone_surrogate(value):
        raise ValueError("a \\u escape of a lone surrogate")
    return value, dup


def parse(
    topic: str, raw: bytes, record_time_ms: int, max_future_ms: int = MAX_FUTURE_MS,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> PosEvent | Credit | FileComplete | Reject:
    """Decode and validate one record of `topic` (AUTH_TOPIC or SETTLEMENT_TOPIC).

    `raw` is bytes (bytearray and memoryview are copied; None is an empty record).
    `record_time_ms` is the Kafka record timestamp (for files: the caller's record time); an
    event stamped more than `max_future_ms` after it is rejected as future_timestamp. A record
    longer than `max_record_bytes` is too_large. Never raises on bad input; raises ValueError
    for an unknown topic.
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
    if len(raw) > max_record_bytes:
        return Reject(TOO_LARGE, f"record of {len(raw)} bytes is over max_record_bytes"
                      f" {max_record_bytes}; kept: its first"
                      f" {min(len(raw), TOO_LARGE_PREFIX_BYTES)} bytes, masked",
                      mask_prefix(raw, TOO_LARGE_PREFIX_BYTES))
    try:
        d = orjson.loads(raw)
        dup = None
        if type(d) is dict:
            # A repeated top-level key adds a top-level comma: with fewer commas than keys (plus
            # the separators of auth_ids) there is none. Otherwise ask the slow, exact parser.
            commas = raw.count(b",")
            if commas >= len(d):
                a = d.get("auth_ids")
                if type(a) is not list or commas >= len(d) + len(a) - 1:
                    d, dup = _loads_slow(raw)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):  # only numbers beyond double range get a second look
            return _reject(MALFORMED_JSON, f"not UTF-8 JSON: {exc}", raw)
        try:
            d, dup = _loads_slow(raw)
        except ValueError as exc2:
            return _reject(MALFORMED_JSON, f"not UTF-8 JSON: {exc2}", raw)
    except ValueError as exc:
        return _reject(MALFORMED_JSON, f"not UTF-8 JSON: {exc}", raw)
    if type(d) is not dict:
        return _reject(MALFORMED_JSON, f"a record must be a JSON object, got {_jtype(d)}", raw)
    if dup is not None:
        return _reject(DUPLICATE_KEY, f"key {_show(dup)} appears twice", raw)
    t = d.get("type")
    try:
        if t == SETTLEMENT_CREDIT:
            e: PosEvent | Credit | FileComplete = _credit(d)
            wrong = not want_credit
        elif t == SETTLEMENT_FILE_COMPLETE:
            e = _marker(d)  # contract v1.1, on pos.settlements
            wrong = not want_credit
        else:
            pt = _POS_TYPES.get(t) if type(t) is str else None
            if pt is None:
                if "type" not in d:
                    return _reject(MISSING_FIELD, "missing field type", raw)
                if type(t) is not str:
                    return _reject(BAD_TYPE, f"type must be a string, got {_jtype(t)}", raw)
                return _reject(UNKNOWN_TYPE, f"unknown event type {_show(t)}", raw)
            e = _pos_event(d, pt)
            wrong = want_credit
    except _Invalid as exc:
        return _reject(exc.reason, exc.message, raw)
    # Only the contract's fields are kept, so only they are searched for a card number (an
    # unknown field is dropped, whatever it holds). Quick test first: plain ASCII without a
    # run of 13 digits and separators holds none (pan._RUN_TABLE says why).
    if not raw.isascii() or raw.find(b"\\") >= 0 or raw.translate(_RUN_TABLE).find(_NEEDLE) >= 0:
        name = _stored_pan(e)
        if name is not None:
            return _reject(FULL_PAN, f"a full card number in {name} (masked)", raw)
    if e.event_time_ms > record_time_ms + max_future_ms:
        return _reject(
            FUTURE_TIMESTAMP,
            f"event_time {format_time_ms(e.event_time_ms)} is"
            f" {(e.event_time_ms - record_time_ms) / 1000:.3f}s after the record time"
            f" {format_time_ms(int(record_time_ms))} (allowed {max_future_ms / 1000:g}s)",
            raw,
        )
    if wrong:
        other = AUTH_TOPIC if want_credit else SETTLEMENT_TOPIC
        return _reject(WRONG_TOPIC, f"a valid {t} event belongs on {other}, not on {topic}", raw)
    return e
