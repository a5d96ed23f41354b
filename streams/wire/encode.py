"""Encoding of events (for the simulator), findings (settlewatch.anomalies) and dead letters
(settlewatch.deadletter) as contract v1 JSON."""
from __future__ import annotations

import base64
from typing import Any

import orjson

from streams.core.events import (
    AUTHORISATION,
    SETTLEMENT_CREDIT,
    SETTLEMENT_FILE_COMPLETE,
    Credit,
    FileComplete,
    Finding,
    FindingKind,
    PosEvent,
    Status,
)
from streams.wire.decode import (
    Reject,
)
from streams.wire.pan import (
    mask_pans,
    mask_pans_text,
    text_has_pan,
)
from streams.wire.times import (
    format_time_ms,
    parse_time_ms,
)


# ----------------------------------------------------------------------------------- encoding
def event_to_dict(e: PosEvent | Credit | FileComplete) -> dict[str, Any]:
    """The contract record of an event (the inverse of `parse`); None optionals are left out."""
    if type(e) is FileComplete:
        from datetime import date
        return {
            "type": SETTLEMENT_FILE_COMPLETE,
            "marker_id": e.marker_id,
            "merchant_id": e.merchant_id,
            "acquirer": e.acquirer,
            "settle_date": date.fromordinal(e.settle_day).isoformat(),
            "credit_count": e.credit_count,
            "total_minor": e.total_minor,
            "currency": e.currency,
            "event_time": format_time_ms(e.event_time_ms),
        }
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


def event_to_json(e: PosEvent | Credit | FileComplete) -> bytes:
    return orjson.dumps(event_to_dict(e))


def finding_to_dict(f: Finding) -> dict[str, Any]:
    """The settlewatch.anomalies record of a finding: contract fields only, fixed order (the
    v1.1 counts of a file_incomplete last, and only on it)."""
    d = {
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
    if f.expected_count is not None:
        d["expected_count"] = f.expected_count
        d["received_count"] = f.received_count
    return d


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
        expected_count=None if d.get("expected_count") is None else _int(d, "expected_count"),
        received_count=None if d.get("received_count") is None else _int(d, "received_count"),
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
    text, or base64 in `original_b64` when they are not UTF-8 or when JSON escaping would make
    them more than twice as long (control bytes become 6-byte escapes): a dead letter is never
    much larger than its record. Card numbers are masked again here, so a hand-made Reject
    cannot leak one either."""
    raw = mask_pans(reject.raw)
    d: dict[str, Any] = {
        "reason": reject.reason,
        "message": mask_pans_text(reject.message),
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    escaped = orjson.dumps(text) if text is not None else b""
    # JSON escaping can spell digits: a NUL byte before "5960325701" is written "\u0000"
    # "5960325701", a Luhn-valid 14-digit run in the dead letter. Then the bytes go as base64.
    if (text is not None and len(escaped) - 2 <= 2 * len(raw)
            and not (b"\\u" in escaped and text_has_pan(escaped.decode("utf-8")))):
        d["original"] = text
    else:
        d["original_b64"] = base64.b64encode(raw).decode("ascii")
    if record_time_ms is not None:
        d["record_time"] = format_time_ms(record_time_ms)
    return d


def deadletter_to_json(
    reject: Reject, topic: str, partition: int | None, offset: int | None,
    record_time_ms: int | None = None,
) -> bytes:
    return orjson.dumps(deadletter_to_dict(reject, topic, partition, offset, record_time_ms))


