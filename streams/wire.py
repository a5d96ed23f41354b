"""Contract v1 on the wire: bytes <-> core events, validation, dead-letter records.

Owns: the topic names, decoding and validating the two input topics into `PosEvent` and `Credit`
(or a `Reject` with a reason code), card-number (PAN) detection and masking, RFC 3339 <-> ms
conversion, and encoding of events (for the simulator), findings (settlewatch.anomalies) and
dead letters (settlewatch.deadletter). It imports the core vocabulary and orjson, nothing of
faust, Kafka or metrics, and reads no clock: the caller passes the record time.

The same rules, as far as JSON Schema can say them, are in streams/schemas/*.json.

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
  unknown_currency  currency not an active ISO 4217 code of streams.currencies
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

import base64
import re
from dataclasses import dataclass
from typing import Any

import orjson

from streams.core.events import (
    APPROVED,
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    SETTLEMENT_CREDIT,
    Credit,
    Finding,
    FindingKind,
    PosEvent,
    Status,
)
from streams.currencies import CURRENCY_CODES

AUTH_TOPIC = "pos.authorisations"
SETTLEMENT_TOPIC = "pos.settlements"
ANOMALY_TOPIC = "settlewatch.anomalies"
DEADLETTER_TOPIC = "settlewatch.deadletter"
INPUT_TOPICS = (AUTH_TOPIC, SETTLEMENT_TOPIC)

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


# --------------------------------------------------------------------------- card numbers (PAN)
# A PAN candidate is a run of >= 13 characters of [0-9 -]. `bytes.translate` + `find` spots one
# in well under a microsecond, so events without such a run pay almost nothing; only runs get
# the exact look: digit groups joined by single spaces or dashes, 13-19 digits, Luhn.
_RUN_TABLE = bytes(0x31 if c in b"0123456789 -" else 0x30 for c in range(256))
_RUN_NEEDLE = b"1" * 13
_SEGMENT = re.compile(rb"[0-9]+(?:[ -][0-9]+)*")
_GROUP = re.compile(rb"[0-9]+")
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_SEPARATORS = b" -"


def luhn_ok(digits: bytes | str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    if isinstance(digits, str):
        digits = digits.encode("ascii")
    total = 0
    double = False
    for c in reversed(digits):
        d = c - 48
        total += _LUHN_DOUBLE[d] if double else d
        double = not double
    return total % 10 == 0


def _segment_pans(data: bytes, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    """Every run of whole digit groups of one segment that holds 13-19 digits and passes Luhn
    (overlaps included, so that masking each one masks every card number)."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(data, start, end)]
    n = len(groups)
    for a in range(n):
        count = 0
        for b in range(a, n):
            count += groups[b][1] - groups[b][0]
            if count > 19:
                break
            if count >= 13:
                digits = data[groups[a][0]:groups[b][1]].translate(None, _SEPARATORS)
                if luhn_ok(digits):
                    spans.append((groups[a][0], groups[b][1]))


def pan_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every full card number in `data`, in order."""
    mapped = data.translate(_RUN_TABLE)
    i = mapped.find(_RUN_NEEDLE)
    if i < 0:
        return []
    spans: list[tuple[int, int]] = []
    while i >= 0:
        j = mapped.find(b"0", i)
        if j < 0:
            j = len(data)
        run = data[i:j]
        if len(run) - run.count(b" ") - run.count(b"-") >= 13:
            for seg in _SEGMENT.finditer(data, i, j):
                s, e = seg.span()
                if e - s >= 13:
                    _segment_pans(data, s, e, spans)
        i = mapped.find(_RUN_NEEDLE, j)
    return spans


def _mask_spans(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """Mask the middle digits of each span, then again until no card number is left: masking
    can join the visible tail of one number to the next group and make a new Luhn match."""
    while spans:
        out = bytearray(data)
        for s, e in spans:
            positions = [k for k in range(s, e) if 48 <= data[k] <= 57]
            for k in positions[6:-4]:
                out[k] = 0x2A  # '*'
        data = bytes(out)
        spans = pan_spans(data)
    return data


def mask_pans(data: bytes) -> bytes:
    """`data` with the middle digits of every full card number replaced by '*' (first 6 and
    last 4 kept, separators kept): b'4111 1111 1111 1111' -> b'4111 11** **** 1111'.
    Idempotent: the result holds no card number."""
    spans = pan_spans(data)
    return _mask_spans(data, spans) if spans else data


def mask_pans_text(s: str) -> str:
    """`mask_pans` for text."""
    b = s.encode("utf-8", "surrogatepass")
    spans = pan_spans(b)
    return _mask_spans(b, spans).decode("utf-8", "surrogatepass") if spans else s


def contains_pan(data: bytes) -> bool:
    return bool(pan_spans(data))


# ---------------------------------------------------------------------------------------- time
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_MINUTE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")
_MINUTE_MS: dict[str, int | None] = {}  # "YYYY-MM-DDTHH:MM" -> ms (None: not a minute)
_DAY_MS: dict[str, int | None] = {}  # "YYYY-MM-DD" -> ms of its midnight UTC (None: no date)
_DATE_OF_DAY: dict[int, str] = {}    # days since epoch -> "YYYY-MM-DD"
_CACHE_MAX = 20_000
_SEC_MS = {f"{i:02d}": i * 1000 for i in range(61)}  # second 60: a leap second
_FRAC_MS = {f"{i:03d}": i for i in range(1000)}


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _day_ms(date: str) -> int | None:
    """ms of midnight UTC of 'YYYY-MM-DD' (digits already checked), None if no such date."""
    ms = _DAY_MS.get(date, -1)
    if ms != -1:
        return ms
    y, m, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
    if 1 <= m <= 12 and 1 <= d <= _days_in_month(y, m):
        ms = _days_from_civil(y, m, d) * 86_400_000
    else:
        ms = None
    if len(_DAY_MS) >= _CACHE_MAX:
        _DAY_MS.clear()
    _DAY_MS[date] = ms
    return ms


def parse_time_ms(s: str) -> int:
    """RFC 3339 date-time with 'Z' or an offset -> ms since the epoch, UTC.

    Fractions finer than a millisecond are truncated; second 60 (a leap second) counts as the
    next second. Raises ValueError for anything else (no offset, a space for 'T', no such date).
    """
    t = _time_ms_or_none(s) if type(s) is str else None
    if t is None:
        raise ValueError(f"not an RFC 3339 date-time: {s[:40]!r}")
    return t


def _minute_ms(prefix: str) -> int | None:
    """ms of 'YYYY-MM-DDTHH:MM' (UTC), None if it is not one; cached, streams share minutes."""
    ms = _MINUTE_MS.get(prefix, -1)
    if ms != -1:
        return ms
    ms = None
    if _MINUTE.fullmatch(prefix) is not None:
        day = _day_ms(prefix[0:10])
        h, mi = int(prefix[11:13]), int(prefix[14:16])
        if day is not None and h <= 23 and mi <= 59:
            ms = day + h * 3_600_000 + mi * 60_000
    if len(_MINUTE_MS) >= _CACHE_MAX:
        _MINUTE_MS.clear()
    _MINUTE_MS[prefix] = ms
    return ms


def _time_ms_or_none(s: str) -> int | None:
    # Fast path: 'YYYY-MM-DDTHH:MM:SS.fffZ' and 'YYYY-MM-DDTHH:MM:SSZ', the forms we write:
    # a cached minute plus table look-ups of the seconds and milliseconds (only ASCII digit
    # strings are in the tables). Anything else takes the regex below.
    n = len(s)
    if (n == 24 or n == 20) and s[n - 1] == "Z" and s[16] == ":":
        base = _MINUTE_MS.get(s[0:16], -1)  # -1 is never a minute's ms
        if base == -1:
            base = _minute_ms(s[0:16])
        sec = _SEC_MS.get(s[17:19])
        if base is not None and sec is not None:
            if n == 20:
                return base + sec
            frac = _FRAC_MS.get(s[20:23])
            if frac is not None and s[19] == ".":
                return base + sec + frac
    m = _RFC3339.fullmatch(s)
    if m is None:
        return None
    ys, mos, ds, hs, mis, ss, frac, z, sign, oh, om = m.groups()
    day = _day_ms(f"{ys}-{mos}-{ds}")
    h, mi, sec = int(hs), int(mis), int(ss)
    if day is None or h > 23 or mi > 59 or sec > 60:
        return None
    t = day + h * 3_600_000 + mi * 60_000 + sec * 1000
    if frac:
        t += int((frac + "00")[:3])
    if z is None:
        oh_i, om_i = int(oh), int(om)
        if oh_i > 23 or om_i > 59:
            return None
        off = oh_i * 3_600_000 + om_i * 60_000
        t = t - off if sign == "+" else t + off
    return t


def format_time_ms(ms: int) -> str:
    """'YYYY-MM-DDTHH:MM:SSZ', or 'YYYY-MM-DDTHH:MM:SS.fffZ' when ms is not whole seconds."""
    days, rem = divmod(ms, 86_400_000)
    date = _DATE_OF_DAY.get(days)
    if date is None:
        y, m, d = _civil_from_days(days)
        date = f"{y:04d}-{m:02d}-{d:02d}"
        if len(_DATE_OF_DAY) >= _CACHE_MAX:
            _DATE_OF_DAY.clear()
        _DATE_OF_DAY[days] = date
    secs, frac = divmod(rem, 1000)
    h, secs = divmod(secs, 3600)
    mi, secs = divmod(secs, 60)
    if frac:
        return f"{date}T{h:02d}:{mi:02d}:{secs:02d}.{frac:03d}Z"
    return f"{date}T{h:02d}:{mi:02d}:{secs:02d}Z"


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


# ----------------------------------------------------------------------------------- encoding
def event_to_dict(e: PosEvent | Credit) -> dict[str, Any]:
    """The contract record of an event (the inverse of `parse`); None optionals are left out."""
    if isinstance(e, Credit):
        d: dict[str, Any] = {
            "type": SETTLEMENT_CREDIT,
            "credit_id": e.credit_id,
            "merchant_id": e.merchant_id,
            "acquirer": e.acquirer,
            "amount_minor": e.amount_minor,
            "currency": e.currency,
            "event_time": format_time_ms(e.event_time_ms),
        }
        if e.auth_ids:
            d["auth_ids"] = list(e.auth_ids)
        if e.batch_id is not None:
            d["batch_id"] = e.batch_id
        if e.fee_minor is not None:
            d["fee_minor"] = e.fee_minor
        return d
    d = {
        "type": e.type,
        "event_id": e.event_id,
        "auth_id": e.auth_id,
        "merchant_id": e.merchant_id,
        "terminal_id": e.terminal_id,
        "acquirer": e.acquirer,
        "channel": e.channel,
        "amount_minor": e.amount_minor,
        "currency": e.currency,
        "event_time": format_time_ms(e.event_time_ms),
    }
    if e.type == AUTHORISATION:
        d["status"] = e.status
    for name in ("batch_id", "stan", "rrn", "auth_code", "pan_masked"):
        v = getattr(e, name)
        if v is not None:
            d[name] = v
    return d


def event_to_json(e: PosEvent | Credit) -> bytes:
    return orjson.dumps(event_to_dict(e))


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """The settlewatch.anomalies record of a finding: contract fields only, fixed order."""
    return {
        "anomaly_id": f.anomaly_id,
        "kind": str(f.kind),
        "status": str(f.status),
        "merchant_id": f.merchant_id,
        "acquirer": f.acquirer,
        "subject": f.subject,
        "auth_ids": list(f.auth_ids),
        "credit_ids": list(f.credit_ids),
        "expected_minor": f.expected_minor,
        "received_minor": f.received_minor,
        "difference_minor": f.difference_minor,
        "currency": f.currency,
        "deadline": None if f.deadline_ms is None else format_time_ms(f.deadline_ms),
        "event_time": format_time_ms(f.event_time_ms),
        "detected_at": format_time_ms(f.detected_at_ms),
        "probable_cause": f.probable_cause,
    }


def finding_to_json(f: Finding) -> bytes:
    return orjson.dumps(finding_to_dict(f))


def finding_from_dict(d: dict[str, Any]) -> Finding:
    """A finding read back from settlewatch.anomalies (no evidence). Raises ValueError,
    KeyError or TypeError on a record that is not one."""
    deadline = d["deadline"]
    return Finding(
        anomaly_id=_str(d, "anomaly_id"),
        kind=FindingKind(d["kind"]),
        status=Status(d["status"]),
        merchant_id=_str(d, "merchant_id"),
        acquirer=_str(d, "acquirer"),
        subject=_str(d, "subject"),
        auth_ids=tuple(_str_list(d, "auth_ids")),
        credit_ids=tuple(_str_list(d, "credit_ids")),
        expected_minor=_int(d, "expected_minor"),
        received_minor=_int(d, "received_minor"),
        difference_minor=_int(d, "difference_minor"),
        currency=_str(d, "currency"),
        deadline_ms=None if deadline is None else parse_time_ms(deadline),
        event_time_ms=parse_time_ms(d["event_time"]),
        detected_at_ms=parse_time_ms(d["detected_at"]),
        probable_cause=d.get("probable_cause"),
    )


def finding_from_json(data: bytes) -> Finding:
    d = orjson.loads(data)
    if type(d) is not dict:
        raise ValueError("an anomaly record must be a JSON object")
    return finding_from_dict(d)


def _str(d: dict, name: str) -> str:
    v = d[name]
    if type(v) is not str:
        raise TypeError(f"{name} must be a string")
    return v


def _int(d: dict, name: str) -> int:
    v = d[name]
    if type(v) is not int:
        raise TypeError(f"{name} must be an integer")
    return v


def _str_list(d: dict, name: str) -> list[str]:
    v = d[name]
    if type(v) is not list or any(type(x) is not str for x in v):
        raise TypeError(f"{name} must be an array of strings")
    return v


def deadletter_to_dict(
    reject: Reject, topic: str, partition: int | None, offset: int | None,
    record_time_ms: int | None = None,
) -> dict[str, Any]:
    """The settlewatch.deadletter record of a reject. The original bytes go in `original` as
    text, or base64 in `original_b64` when they are not UTF-8; card numbers are masked again
    here, so a hand-made Reject cannot leak one either."""
    raw = mask_pans(reject.raw)
    d: dict[str, Any] = {
        "reason": reject.reason,
        "message": mask_pans_text(reject.message),
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    try:
        d["original"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        d["original_b64"] = base64.b64encode(raw).decode("ascii")
    if record_time_ms is not None:
        d["record_time"] = format_time_ms(record_time_ms)
    return d


def deadletter_to_json(
    reject: Reject, topic: str, partition: int | None, offset: int | None,
    record_time_ms: int | None = None,
) -> bytes:
    return orjson.dumps(deadletter_to_dict(reject, topic, partition, offset, record_time_ms))


# ------------------------------------------------------------------------------- measurement
def sample_events(n: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """`n` realistic valid records as (topic, bytes): 70% sales, 10% reversals and refunds,
    20% credits (per-sale with auth_ids, or batch). For `bench_parse`."""
    import random

    rnd = random.Random(seed)
    t0 = parse_time_ms("2026-11-23T08:00:00Z")
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        m = rnd.randrange(500)
        t = t0 + i * 37 + rnd.randrange(1000)
        r = rnd.random()
        if r < 0.8:
            kind = AUTHORISATION if r < 0.7 else (REVERSAL if r < 0.75 else REFUND)
            e: PosEvent | Credit = PosEvent(
                type=kind, event_id=f"ev-{i:09d}", auth_id=f"au-{(i - (r >= 0.7) * 50) % n:09d}",
                merchant_id=f"m-{m:05d}", terminal_id=f"t-{m:05d}-{rnd.randrange(8)}",
                acquirer=rnd.choice(("acq-north", "acq-south")),
                channel=rnd.choice(("debit", "credit", "qr")),
                amount_minor=rnd.randrange(100, 500_000), currency="CNY", event_time_ms=t,
                status=APPROVED if rnd.random() < 0.97 else DECLINED,
                batch_id=f"b{m:05d}.{t // 86_400_000}", pan_masked="622848******1234",
                stan=f"{rnd.randrange(10**6):06d}", rrn=f"{rnd.randrange(10**12):012d}",
                auth_code=f"{rnd.randrange(10**6):06d}",
            )
            out.append((AUTH_TOPIC, event_to_json(e)))
        else:
            per_sale = r < 0.9
            e = Credit(
                credit_id=f"cr-{i:09d}", merchant_id=f"m-{m:05d}",
                acquirer=rnd.choice(("acq-north", "acq-south")),
                amount_minor=rnd.randrange(100, 5_000_000), currency="CNY", event_time_ms=t,
                auth_ids=tuple(f"au-{(i - k) % n:09d}" for k in (1, 2, 3)) if per_sale else (),
                batch_id=None if per_sale else f"b{m:05d}.{t // 86_400_000}",
                fee_minor=rnd.randrange(0, 3000),
            )
            out.append((SETTLEMENT_TOPIC, event_to_json(e)))
    return out


def bench_parse(n: int = 200_000, repeat: int = 3) -> dict[str, float]:
    """Parse `n` realistic valid records; best of `repeat` runs. Returns events/s, us/event."""
    import time

    records = sample_events(n)
    record_time = parse_time_ms("2026-12-31T00:00:00Z")
    for topic, raw in records:
        r = parse(topic, raw, record_time)
        if isinstance(r, Reject):
            raise AssertionError(f"sample record rejected: {r.reason} {r.message}")
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for topic, raw in records:
            parse(topic, raw, record_time)
        best = min(best, time.perf_counter() - start)
    avg = sum(len(raw) for _, raw in records) / n
    return {"events": n, "seconds": best, "events_per_s": n / best, "us_per_event": best / n * 1e6,
            "avg_bytes": avg}


if __name__ == "__main__":
    print(bench_parse())
