"""wire: contract v1 on the wire (DESIGN.md section 2).

Owns the topic names (`topics`), card-number detection and masking (`pan`), RFC 3339 <-> ms
(`times`), decoding and validating input records into core events or a `Reject` with a reason
(`decode`), and encoding events, findings and dead letters (`encode`); the JSON Schemas of the
contract are in `schemas/`. It may import `streams.core` and orjson, never faust, Kafka clients,
metrics or anything above it, and reads no clock: callers pass the record time. This package
re-exports the public names of its modules, so callers write `from streams import wire` and
`wire.parse(...)`.
"""
from __future__ import annotations

from streams.wire.decode import (
    _CURRENCY,
    BAD_AMOUNT,
    BAD_PAN_MASKED,
    BAD_STATUS,
    BAD_TIME,
    BAD_TYPE,
    DUPLICATE_AUTH_ID,
    EMPTY_FIELD,
    FULL_PAN,
    FUTURE_TIMESTAMP,
    MALFORMED_JSON,
    MAX_AMOUNT_MINOR,
    MAX_FUTURE_MS,
    MISSING_FIELD,
    REASONS,
    UNKNOWN_CURRENCY,
    UNKNOWN_TYPE,
    WRONG_TOPIC,
    Reject,
    parse,
)
from streams.wire.encode import (
    deadletter_to_dict,
    deadletter_to_json,
    event_to_dict,
    event_to_json,
    finding_from_dict,
    finding_from_json,
    finding_to_dict,
    finding_to_json,
)
from streams.wire.pan import (
    contains_pan,
    luhn_ok,
    mask_pans,
    mask_pans_text,
    pan_spans,
)
from streams.wire.times import (
    format_time_ms,
    parse_time_ms,
)
from streams.wire.topics import (
    ANOMALY_TOPIC,
    AUTH_TOPIC,
    DEADLETTER_TOPIC,
    INPUT_TOPICS,
    SETTLEMENT_TOPIC,
    TICK_TOPIC,
    Topics,
)

__all__ = [
    "AUTH_TOPIC",
    "SETTLEMENT_TOPIC",
    "ANOMALY_TOPIC",
    "DEADLETTER_TOPIC",
    "INPUT_TOPICS",
    "TICK_TOPIC",
    "Topics",
    "luhn_ok",
    "pan_spans",
    "mask_pans",
    "mask_pans_text",
    "contains_pan",
    "parse_time_ms",
    "format_time_ms",
    "MAX_AMOUNT_MINOR",
    "MAX_FUTURE_MS",
    "FULL_PAN",
    "MALFORMED_JSON",
    "MISSING_FIELD",
    "BAD_TYPE",
    "UNKNOWN_TYPE",
    "EMPTY_FIELD",
    "BAD_AMOUNT",
    "UNKNOWN_CURRENCY",
    "BAD_TIME",
    "BAD_STATUS",
    "BAD_PAN_MASKED",
    "DUPLICATE_AUTH_ID",
    "FUTURE_TIMESTAMP",
    "WRONG_TOPIC",
    "REASONS",
    "Reject",
    "parse",
    "_CURRENCY",
    "event_to_dict",
    "event_to_json",
    "finding_to_dict",
    "finding_to_json",
    "finding_from_dict",
    "finding_from_json",
    "deadletter_to_dict",
    "deadletter_to_json",
]
