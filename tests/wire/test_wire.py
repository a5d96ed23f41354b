"""streams.wire: contract v1 records in and out, one reason code at a time."""
from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import wire
from streams.core.events import (
    APPROVED,
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    Credit,
    Finding,
    FindingKind,
    PosEvent,
    Status,
    anomaly_id,
)
from streams.core.currencies import CURRENCIES
from streams.wire import AUTH_TOPIC, SETTLEMENT_TOPIC, Reject

from .oracle import card_numbers_in

RECORD_TIME = wire.parse_time_ms("2026-11-23T12:00:00Z")
VISA = "4111111111111111"        # test card numbers: each passes Luhn
AMEX = "378282246310005"
MASTERCARD = "5555555555554444"
UNIONPAY_19 = "6212345678901234569"


def sale(**changes) -> dict:
    d = {
        "type": "authorisation", "event_id": "ev-1", "auth_id": "au-1", "merchant_id": "m-1",
        "terminal_id": "t-1", "acquirer": "acq-north", "channel": "debit", "amount_minor": 12345,
        "currency": "CNY", "event_time": "2026-11-23T10:15:30.123Z", "status": "approved",
    }
    return _apply(d, changes)


def credit(**changes) -> dict:
    d = {
        "type": "settlement_credit", "credit_id": "cr-1", "merchant_id": "m-1",
        "acquirer": "acq-north", "amount_minor": 12271, "currency": "CNY",
        "event_time": "2026-11-23T11:00:00Z",
    }
    return _apply(d, changes)


_DROP = object()


def _apply(d: dict, changes: dict) -> dict:
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def parse(topic: str, record: dict | bytes, record_time: int = RECORD_TIME, **kw):
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    return wire.parse(topic, raw, record_time, **kw)


def reject_of(topic: str, record: dict | bytes, **kw) -> Reject:
    r = parse(topic, record, **kw)
    assert isinstance(r, Reject), r
    return r


def luhn_numbers_in(data: bytes | str) -> list[str]:
    """Every card number in `data` by the slow, obvious definition (tests/wire/oracle.py)."""
    return card_numbers_in(data)


# ------------------------------------------------------------------------------ valid records
def test_a_valid_authorisation_becomes_a_pos_event_with_utc_milliseconds():
    e = parse(AUTH_TOPIC, sale(batch_id="b-7", stan="000123", rrn="432112345678",
                               auth_code="A1B2C3", pan_masked="411111******1111"))
    assert e == PosEvent(
        type=AUTHORISATION, event_id="ev-1", auth_id="au-1", merchant_id="m-1",
        terminal_id="t-1", acquirer="acq-north", channel="debit", amount_minor=12345,
        currency="CNY", event_time_ms=wire.parse_time_ms("2026-11-23T10:15:30.123Z"),
        status=APPROVED, batch_id="b-7", pan_masked="411111******1111", stan="000123",
        rrn="432112345678", auth_code="A1B2C3",
    )


def test_a_declined_sale_keeps_its_status():
    assert parse(AUTH_TOPIC, sale(status="declined")).status == DECLINED


@pytest.mark.parametrize("kind", [REVERSAL, REFUND])
def test_a_reversal_or_refund_needs_no_status_and_ignores_one(kind):
    without = parse(AUTH_TOPIC, sale(type=kind, status=_DROP))
    with_junk = parse(AUTH_TOPIC, sale(type=kind, status="whatever"))
    assert without.type == kind and without.status == APPROVED
    assert with_junk == without


def test_a_valid_credit_becomes_a_credit_with_a_tuple_of_auth_ids():
    c = parse(SETTLEMENT_TOPIC, credit(auth_ids=["au-1", "au-2"], fee_minor=74))
    assert c == Credit(credit_id="cr-1", merchant_id="m-1", acquirer="acq-north",
                       amount_minor=12271, currency="CNY",
                       event_time_ms=wire.parse_time_ms("2026-11-23T11:00:00Z"),
                       auth_ids=("au-1", "au-2"), batch_id=None, fee_minor=74)


def test_null_or_absent_optional_fields_are_the_same_thing():
    nulls = parse(SETTLEMENT_TOPIC, credit(auth_ids=None, batch_id=None, fee_minor=None))
    assert nulls == parse(SETTLEMENT_TOPIC, credit())
    assert nulls.auth_ids == () and nulls.batch_id is None and nulls.fee_minor is None
    assert parse(AUTH_TOPIC, sale(batch_id=None, stan=None, rrn=None, auth_code=None,
                                  pan_masked=None)) == parse(AUTH_TOPIC, sale())


def test_a_credit_may_pay_a_batch_with_no_fee_and_an_empty_auth_ids_list():
    c = parse(SETTLEMENT_TOPIC, credit(batch_id="b-7", auth_ids=[], fee_minor=0))
    assert (c.batch_id, c.auth_ids, c.fee_minor) == ("b-7", (), 0)


def test_unknown_extra_fields_are_ignored():
    assert parse(AUTH_TOPIC, sale(note="hello", nested={"a": [1, 2]}, version=2)) == parse(
        AUTH_TOPIC, sale())


def test_reference_fields_other_than_ids_may_be_empty_strings():
    e = parse(AUTH_TOPIC, sale(stan="", rrn="", auth_code=""))
    assert (e.stan, e.rrn, e.auth_code) == ("", "", "")


def test_an_event_exactly_max_future_ahead_of_its_record_is_accepted():
    at_limit = wire.format_time_ms(RECORD_TIME + wire.MAX_FUTURE_MS)
    assert isinstance(parse(AUTH_TOPIC, sale(event_time=at_limit)), PosEvent)


def test_every_active_currency_is_accepted_and_interned():
    for code in CURRENCIES:
        e = parse(AUTH_TOPIC, sale(currency=code))
        assert e.currency is wire._CURRENCY[code]


def test_parse_accepts_bytearray_and_memoryview():
    raw = json.dumps(sale()).encode()
    expected = wire.parse(AUTH_TOPIC, raw, RECORD_TIME)
    assert wire.parse(AUTH_TOPIC, bytearray(raw), RECORD_TIME) == expected
    assert wire.parse(AUTH_TOPIC, memoryview(raw), RECORD_TIME) == expected


def test_an_unknown_topic_is_a_programming_error():
    with pytest.raises(ValueError):
        wire.parse("pos.other", b"{}", RECORD_TIME)


# --------------------------------------------------------------------------------- reason codes
# (topic, record, reason, words the message must hold); one row per way a record is bad.
REJECTS = {
    "not json": (AUTH_TOPIC, b"{not json", wire.MALFORMED_JSON, "JSON"),
    "truncated json": (AUTH_TOPIC, json.dumps(sale()).encode()[:-1], wire.MALFORMED_JSON, ""),
    "not utf-8": (AUTH_TOPIC, b'{"type": "\xff"}', wire.MALFORMED_JSON, "UTF-8"),
    "a json array": (AUTH_TOPIC, b"[1, 2]", wire.MALFORMED_JSON, "object"),
    "a json string": (AUTH_TOPIC, b'"sale"', wire.MALFORMED_JSON, "object"),
    "an empty record": (AUTH_TOPIC, b"", wire.MALFORMED_JSON, "empty"),
    "NaN": (SETTLEMENT_TOPIC, b'{"amount_minor": NaN}', wire.MALFORMED_JSON, ""),
    "no type": (AUTH_TOPIC, sale(type=_DROP), wire.MISSING_FIELD, "type"),
    "no event_id": (AUTH_TOPIC, sale(event_id=_DROP), wire.MISSING_FIELD, "event_id"),
    "no terminal_id": (AUTH_TOPIC, sale(terminal_id=_DROP), wire.MISSING_FIELD, "terminal_id"),
    "no channel": (AUTH_TOPIC, sale(channel=_DROP), wire.MISSING_FIELD, "channel"),
    "no amount": (AUTH_TOPIC, sale(amount_minor=_DROP), wire.MISSING_FIELD, "amount_minor"),
    "no currency": (AUTH_TOPIC, sale(currency=_DROP), wire.MISSING_FIELD, "currency"),
    "no event_time": (AUTH_TOPIC, sale(event_time=_DROP), wire.MISSING_FIELD, "event_time"),
    "no status": (AUTH_TOPIC, sale(status=_DROP), wire.MISSING_FIELD, "status"),
    "no credit_id": (SETTLEMENT_TOPIC, credit(credit_id=_DROP), wire.MISSING_FIELD, "credit_id"),
    "credit without merchant": (SETTLEMENT_TOPIC, credit(merchant_id=_DROP), wire.MISSING_FIELD,
                                "merchant_id"),
    "type is a number": (AUTH_TOPIC, sale(type=1), wire.BAD_TYPE, "type"),
    "id is a number": (AUTH_TOPIC, sale(auth_id=123), wire.BAD_TYPE, "auth_id"),
    "required id is null": (AUTH_TOPIC, sale(merchant_id=None), wire.BAD_TYPE, "merchant_id"),
    "amount is a string": (AUTH_TOPIC, sale(amount_minor="100"), wire.BAD_TYPE, "amount_minor"),
    "amount is a bool": (AUTH_TOPIC, sale(amount_minor=True), wire.BAD_TYPE, "amount_minor"),
    "currency is a list": (AUTH_TOPIC, sale(currency=["CNY"]), wire.BAD_TYPE, "currency"),
    "event_time is epoch ms": (AUTH_TOPIC, sale(event_time=1795428000000), wire.BAD_TYPE,
                               "event_time"),
    "status is a bool": (AUTH_TOPIC, sale(status=True), wire.BAD_TYPE, "status"),
    "batch_id is a number": (AUTH_TOPIC, sale(batch_id=7), wire.BAD_TYPE, "batch_id"),
    "stan is a number": (AUTH_TOPIC, sale(stan=123), wire.BAD_TYPE, "stan"),
    "pan_masked is a list": (AUTH_TOPIC, sale(pan_masked=["x"]), wire.BAD_TYPE, "pan_masked"),
    "auth_ids is a string": (SETTLEMENT_TOPIC, credit(auth_ids="au-1"), wire.BAD_TYPE,
                             "auth_ids"),
    "auth_ids item is a number": (SETTLEMENT_TOPIC, credit(auth_ids=["au-1", 2]), wire.BAD_TYPE,
                                  "auth_ids[1]"),
    "fee is a string": (SETTLEMENT_TOPIC, credit(fee_minor="74"), wire.BAD_TYPE, "fee_minor"),
    "fee is a bool": (SETTLEMENT_TOPIC, credit(fee_minor=False), wire.BAD_TYPE, "fee_minor"),
    "unknown type": (AUTH_TOPIC, sale(type="chargeback"), wire.UNKNOWN_TYPE, "chargeback"),
    "type in capitals": (AUTH_TOPIC, sale(type="AUTHORISATION"), wire.UNKNOWN_TYPE, ""),
    "empty event_id": (AUTH_TOPIC, sale(event_id=""), wire.EMPTY_FIELD, "event_id"),
    "empty acquirer": (SETTLEMENT_TOPIC, credit(acquirer=""), wire.EMPTY_FIELD, "acquirer"),
    "empty batch_id": (AUTH_TOPIC, sale(batch_id=""), wire.EMPTY_FIELD, "batch_id"),
    "empty auth_ids item": (SETTLEMENT_TOPIC, credit(auth_ids=["au-1", ""]), wire.EMPTY_FIELD,
                            "auth_ids[1]"),
    "zero amount": (AUTH_TOPIC, sale(amount_minor=0), wire.BAD_AMOUNT, "amount_minor"),
    "negative amount": (SETTLEMENT_TOPIC, credit(amount_minor=-5), wire.BAD_AMOUNT, ""),
    "fractional amount": (AUTH_TOPIC, sale(amount_minor=123.45), wire.BAD_AMOUNT, "integer"),
    "integral float amount": (AUTH_TOPIC, sale(amount_minor=100.0), wire.BAD_AMOUNT, "integer"),
    "absurd amount": (AUTH_TOPIC, sale(amount_minor=wire.MAX_AMOUNT_MINOR + 1), wire.BAD_AMOUNT,
                      ""),
    "amount beyond 64 bits": (AUTH_TOPIC, b'{"type":"refund","event_id":"e","auth_id":"a",'
                              b'"merchant_id":"m","terminal_id":"t","acquirer":"q","channel":'
                              b'"qr","amount_minor":123456789012345678901234567890}',
                              wire.BAD_AMOUNT, ""),
    "negative fee": (SETTLEMENT_TOPIC, credit(fee_minor=-1), wire.BAD_AMOUNT, "fee_minor"),
    "unknown currency": (AUTH_TOPIC, sale(currency="ABC"), wire.UNKNOWN_CURRENCY, "ABC"),
    "lower-case currency": (AUTH_TOPIC, sale(currency="cny"), wire.UNKNOWN_CURRENCY, ""),
    "withdrawn currency": (AUTH_TOPIC, sale(currency="HRK"), wire.UNKNOWN_CURRENCY, ""),
    "testing currency": (SETTLEMENT_TOPIC, credit(currency="XTS"), wire.UNKNOWN_CURRENCY, ""),
    "no offset": (AUTH_TOPIC, sale(event_time="2026-11-23T10:15:30"), wire.BAD_TIME,
                  "event_time"),
    "space for T": (AUTH_TOPIC, sale(event_time="2026-11-23 10:15:30Z"), wire.BAD_TIME, ""),
    "a date only": (AUTH_TOPIC, sale(event_time="2026-11-23"), wire.BAD_TIME, ""),
    "no such day": (AUTH_TOPIC, sale(event_time="2026-02-29T10:00:00Z"), wire.BAD_TIME, ""),
    "hour 24": (SETTLEMENT_TOPIC, credit(event_time="2026-11-23T24:00:00Z"), wire.BAD_TIME, ""),
    "unicode digits": (AUTH_TOPIC, sale(event_time="2026-11-23T1٠:15:30Z"), wire.BAD_TIME, ""),
    "status approve": (AUTH_TOPIC, sale(status="approve"), wire.BAD_STATUS, "approve"),
    "status in capitals": (AUTH_TOPIC, sale(status="APPROVED"), wire.BAD_STATUS, ""),
    "pan_masked shows too much": (AUTH_TOPIC, sale(pan_masked="4111111*****11111"),
                                  wire.BAD_PAN_MASKED, ""),
    "pan_masked not masked": (AUTH_TOPIC, sale(pan_masked="4111111111111112"),
                              wire.BAD_PAN_MASKED, ""),
    "pan_masked too short": (AUTH_TOPIC, sale(pan_masked="41****11"), wire.BAD_PAN_MASKED, ""),
    "pan_masked too long": (AUTH_TOPIC, sale(pan_masked="411111**********1111"),
                            wire.BAD_PAN_MASKED, ""),
    "pan_masked empty": (AUTH_TOPIC, sale(pan_masked=""), wire.BAD_PAN_MASKED, ""),
    "auth_ids twice the same": (SETTLEMENT_TOPIC, credit(auth_ids=["au-1", "au-2", "au-1"]),
                                wire.DUPLICATE_AUTH_ID, "au-1"),
    "event a second too far ahead": (AUTH_TOPIC, sale(event_time="2026-11-23T12:15:01Z"),
                                     wire.FUTURE_TIMESTAMP, "2026-11-23T12:15:01Z"),
    "credit a day ahead": (SETTLEMENT_TOPIC, credit(event_time="2026-11-24T12:00:00Z"),
                           wire.FUTURE_TIMESTAMP, ""),
    "credit on the sales topic": (AUTH_TOPIC, credit(), wire.WRONG_TOPIC, SETTLEMENT_TOPIC),
    "sale on the settlements topic": (SETTLEMENT_TOPIC, sale(), wire.WRONG_TOPIC, AUTH_TOPIC),
    "refund on the settlements topic": (SETTLEMENT_TOPIC, sale(type="refund"), wire.WRONG_TOPIC,
                                        ""),
    "visa number as the auth_id": (AUTH_TOPIC, sale(auth_id=VISA), wire.FULL_PAN, "auth_id"),
    "visa number in a credit's auth_ids": (SETTLEMENT_TOPIC, credit(auth_ids=["au-1", VISA]),
                                           wire.FULL_PAN, "auth_ids[1]"),
    "full pan as pan_masked": (AUTH_TOPIC, sale(pan_masked=VISA), wire.FULL_PAN, "pan_masked"),
    "year 0000": (AUTH_TOPIC, sale(event_time="0000-06-01T00:00:00Z"), wire.BAD_TIME, "2000"),
    "year 1 east of UTC": (AUTH_TOPIC, sale(event_time="0001-01-01T00:00:00+01:00"),
                           wire.BAD_TIME, "2000"),
    "last second of 1999": (SETTLEMENT_TOPIC, credit(event_time="1999-12-31T23:59:59.999Z"),
                            wire.BAD_TIME, "before 2000"),
    "year 9999 west of UTC": (AUTH_TOPIC, sale(event_time="9999-12-31T23:00:00-05:00"),
                              wire.BAD_TIME, "9999"),
    "year 9999 east of UTC": (SETTLEMENT_TOPIC, credit(event_time="9999-12-31T23:00:00+01:00"),
                              wire.BAD_TIME, "9999"),
    "a key twice": (AUTH_TOPIC, json.dumps(sale(amount_minor=-1)).encode()[:-1]
                    + b', "amount_minor": 100}', wire.DUPLICATE_KEY, "amount_minor"),
    "a key twice, compact": (SETTLEMENT_TOPIC, b'{"type":"settlement_credit","credit_id":"c",'
                             b'"credit_id":"d","merchant_id":"m","acquirer":"q",'
                             b'"amount_minor":1,"currency":"CNY",'
                             b'"event_time":"2026-11-23T11:00:00Z"}', wire.DUPLICATE_KEY,
                             "credit_id"),
    "a record over max_record_bytes": (AUTH_TOPIC, sale(note="x" * wire.MAX_RECORD_BYTES),
                                       wire.TOO_LARGE, "max_record_bytes"),
}


@pytest.mark.parametrize("case", list(REJECTS), ids=lambda c: c.replace(" ", "_"))
def test_a_bad_record_is_rejected_with_its_reason_code(case):
    topic, record, reason, words = REJECTS[case]
    r = reject_of(topic, record)
    assert r.reason == reason, r.message
    assert words in r.message
    assert r.reason in wire.REASONS


def test_every_reason_code_has_a_rejected_example():
    assert {row[2] for row in REJECTS.values()} == set(wire.REASONS)


def test_an_invalid_event_on_the_wrong_topic_reports_its_own_defect():
    assert reject_of(AUTH_TOPIC, credit(amount_minor=0)).reason == wire.BAD_AMOUNT


def test_the_first_defect_in_contract_order_wins():
    r = reject_of(AUTH_TOPIC, sale(event_id="", currency="ABC", event_time="x"))
    assert r.reason == wire.EMPTY_FIELD
    r = reject_of(AUTH_TOPIC, sale(currency="ABC", event_time="2030-01-01T00:00:00Z"))
    assert r.reason == wire.UNKNOWN_CURRENCY  # defects first, then the future check


def test_a_card_number_in_a_rejected_record_is_masked_whatever_the_reason():
    for record, reason in [(sale(note=VISA, amount_minor=0), wire.BAD_AMOUNT),
                           (sale(note=VISA), wire.WRONG_TOPIC),
                           (f'{{"pan": {VISA}, oops'.encode(), wire.MALFORMED_JSON)]:
        r = reject_of(SETTLEMENT_TOPIC, record)
        assert r.reason == reason
        assert luhn_numbers_in(r.raw) == [] and b"411111******1111" in r.raw


def test_max_future_is_the_callers_to_choose():
    ahead = sale(event_time="2026-11-23T12:01:00Z")
    assert isinstance(parse(AUTH_TOPIC, ahead), PosEvent)
    assert reject_of(AUTH_TOPIC, ahead, max_future_ms=59_999).reason == wire.FUTURE_TIMESTAMP


def test_a_reject_keeps_the_original_bytes_when_they_hold_no_card_number():
    raw = json.dumps(sale(currency="ABC", rrn="432112345678")).encode()
    assert wire.parse(AUTH_TOPIC, raw, RECORD_TIME).raw == raw


# -------------------------------------------------------------------------------- card numbers
# A card number as a person reads it, in ways a byte scan for [0-9 -] does not see (issue 14
# item 6): each is found in a stored field (full_pan) and masked in the dead letter.
WRITTEN_FORMS = [
    VISA, AMEX, MASTERCARD, UNIONPAY_19, "4111 1111 1111 1111", "4111-1111-1111-1111",
    "3782 822463 10005", "5555-5555 5555-4444", "card:4111111111111111;", "x4111111111111111y",
    "4111.1111.1111.1111", "4111/1111/1111/1111", "4111  1111  1111  1111",
    "4111\t1111\t1111\t1111", "4111\u00a01111\u00a01111\u00a01111",
    "4111\u20131111\u20131111\u20131111",
    "4111 - 1111 - 1111 - 1111", "4111\u200b111111111111", "\uff14\uff11\uff11\uff11" + "1" * 12,
    "\u0664" + "\u0661" * 15,  # Arabic-Indic
    "".join(chr(0x1D7CE + int(c)) for c in VISA), "\u53f7" + VISA,
]


@pytest.mark.parametrize("written", WRITTEN_FORMS, ids=repr)
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf8"])
def test_a_card_number_in_a_stored_field_is_found_in_any_written_form(written, ascii_only):
    raw = json.dumps(sale(auth_id=written), ensure_ascii=ascii_only).encode()
    r = wire.parse(AUTH_TOPIC, raw, RECORD_TIME)
    assert isinstance(r, Reject) and r.reason == wire.FULL_PAN, r
    assert luhn_numbers_in(r.raw) == [] and luhn_numbers_in(r.message) == []


@pytest.mark.parametrize("written", WRITTEN_FORMS, ids=repr)
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "utf8"])
def test_a_card_number_in_any_written_form_is_masked_in_the_dead_letter(written, ascii_only):
    raw = json.dumps(sale(note=written, amount_minor=0), ensure_ascii=ascii_only).encode()
    r = reject_of(AUTH_TOPIC, raw)
    assert r.reason == wire.BAD_AMOUNT
    assert luhn_numbers_in(raw) != [] and luhn_numbers_in(r.raw) == []
    out = wire.deadletter_to_json(r, AUTH_TOPIC, 0, 1)
    assert luhn_numbers_in(out) == [] and luhn_numbers_in(orjson.loads(out)["original"]) == []


def test_the_escape_before_a_number_does_not_hide_it():
    # json.dumps writes '号' as \u53f7: its last hex digit 7 runs into the number that follows
    raw = b'{"type": "authorisation", "note": "\\u53f74111111111111111", "amount_minor": 0}'
    r = reject_of(AUTH_TOPIC, raw)
    assert r.raw == raw.replace(b"4111111111111111", b"411111******1111")


def test_a_utf16_record_is_dead_lettered_with_its_number_masked():
    raw = json.dumps(sale(note=VISA)).encode("utf-16")
    for topic in wire.INPUT_TOPICS:
        r = reject_of(topic, raw)
        assert r.reason == wire.MALFORMED_JSON
        assert luhn_numbers_in(r.raw) == [] and luhn_numbers_in(raw) != []
        assert "411111******1111".encode("utf-16-le") in r.raw


@pytest.mark.parametrize("where", ["key", "number value", "nested list", "string value"])
def test_a_card_number_in_an_unknown_field_goes_with_the_field(where):
    # Unknown fields are not stored anywhere, so what they hold cannot leak: the event is valid
    record = {
        "key": sale(**{VISA: "x"}),
        "number value": sale(extra=int(VISA)),
        "nested list": sale(extra={"a": [1, {"b": f"{VISA}"}]}),
        "string value": sale(note=f"card {VISA}"),
    }[where]
    e = parse(AUTH_TOPIC, record)
    assert e == parse(AUTH_TOPIC, sale())
    assert luhn_numbers_in(wire.event_to_json(e)) == []


@pytest.mark.parametrize("extra, number", [
    ({"ts_ms": 1795428930121}, 1795428930121),          # epoch milliseconds that pass Luhn
    ({"host_auth_id": 4000056655665556}, 4000056655665556),  # a numeric id that passes Luhn
    ({"trace": "4111111111111111"}, 4111111111111111),
    ({"seq": [1795428930139, 1795428930121]}, 1795428930139),
])
def test_a_luhn_valid_number_in_an_ignored_field_does_not_reject_a_valid_event(extra, number):
    assert wire.luhn_ok(str(number))
    assert parse(AUTH_TOPIC, sale(**extra)) == parse(AUTH_TOPIC, sale())
    assert parse(SETTLEMENT_TOPIC, credit(**extra)) == parse(SETTLEMENT_TOPIC, credit())


def test_a_card_number_spelt_with_json_escapes_is_found_and_masked():
    escaped = "".join(f"\\u{ord(c):04x}" for c in "4111 1111") + " 1111 1111"
    raw = ('{"type": "authorisation", "auth_id": "' + escaped + '", "name": "caf\\u00e9"}'
           ).encode()
    r = wire.parse(AUTH_TOPIC, raw, RECORD_TIME)
    assert r.reason == wire.MISSING_FIELD
    assert b"\\u0034\\u0031\\u0031\\u0031\\u0020\\u0031\\u0031** **** 1111" in r.raw
    assert b"caf\\u00e9" in r.raw
    assert luhn_numbers_in(r.raw) == []


@pytest.mark.parametrize("text", [
    "4111111111111112",           # fails Luhn
    "411111111111",               # 12 digits
    "41111111111111111111",       # 20 digits in one run: not a card number
    "4111111111111111x1",         # 16 digits then a letter: a breaker, but 4111... is left
    "2026-11-23T10:15:30.123Z",
    "rrn 432112345678 stan 123456",
    "au-000000123-20261123",
    "550e8400-e29b-41d4-a716-446655440000",
])
def test_ids_that_are_not_card_numbers_pass(text):
    if text == "4111111111111111x1":
        assert reject_of(AUTH_TOPIC, sale(auth_id=text)).reason == wire.FULL_PAN
        return
    assert parse(AUTH_TOPIC, sale(auth_id=text)).auth_id == text
    assert parse(SETTLEMENT_TOPIC, credit(auth_ids=[text])).auth_ids == (text,)


def test_the_luhn_check_passes_known_card_numbers_and_fails_their_neighbours():
    for good in (VISA, AMEX, MASTERCARD, UNIONPAY_19, "79927398713", "0" * 13):
        assert wire.luhn_ok(good) and wire.luhn_ok(good.encode())
        bad = good[:-1] + str((int(good[-1]) + 1) % 10)
        assert not wire.luhn_ok(bad)


def test_masking_keeps_the_first_six_and_last_four_digits_and_the_separators():
    assert wire.mask_pans(b"pay 4111111111111111 now") == b"pay 411111******1111 now"
    assert wire.mask_pans(b"4111 1111 1111 1111") == b"4111 11** **** 1111"
    assert wire.mask_pans(b"3782-822463-10005") == b"3782-82****-*0005"
    assert wire.mask_pans_text(f"{UNIONPAY_19} and {MASTERCARD}") == (
        "621234*********4569 and 555555******4444")


def test_masking_finds_a_card_number_next_to_other_digit_groups():
    assert wire.mask_pans(b"12 4111111111111111 99") == b"12 411111******1111 99"
    assert luhn_numbers_in(wire.mask_pans(f"{VISA} 1234567890123 {AMEX}".encode())) == []


def test_masking_text_without_card_numbers_returns_it_unchanged():
    s = "nothing to see: 2026-11-23, rrn=432112345678, café"
    assert wire.mask_pans_text(s) is s
    b = s.encode()
    assert wire.mask_pans(b) is b


@settings(max_examples=300, deadline=None)
@given(prefix=st.binary(max_size=40), suffix=st.binary(max_size=40),
       pan=st.sampled_from([VISA, AMEX, MASTERCARD, UNIONPAY_19, "4111 1111 1111 1111",
                            "3782-822463-10005"]))
def test_no_reject_ever_shows_a_full_card_number(prefix, suffix, pan):
    raw = prefix + b" " + pan.encode() + b" " + suffix
    for topic in wire.INPUT_TOPICS:
        r = wire.parse(topic, raw, RECORD_TIME)
        assert r.reason in wire.REASONS
        assert luhn_numbers_in(r.raw) == [] and luhn_numbers_in(r.message) == []
        assert wire.mask_pans(r.raw) == r.raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_masking_is_idempotent_and_leaves_no_card_number(data):
    masked = wire.mask_pans(data)
    assert luhn_numbers_in(masked) == []
    assert wire.mask_pans(masked) == masked
    assert len(masked) == len(data)


def test_the_finder_agrees_with_the_slow_definition_on_a_crowded_example():
    data = f"{VISA}-{AMEX} 1 {MASTERCARD}x{UNIONPAY_19}".encode()
    assert {data[s:e].translate(None, b" -").decode() for s, e in wire.pan_spans(data)} == set(
        luhn_numbers_in(data))


# ------------------------------------------------------------------------------------- times
@pytest.mark.parametrize("text, iso_utc", [
    ("2026-11-23T10:15:30Z", "2026-11-23T10:15:30Z"),
    ("2026-11-23T10:15:30.123Z", "2026-11-23T10:15:30.123Z"),
    ("2026-11-23T10:15:30.1Z", "2026-11-23T10:15:30.100Z"),
    ("2026-11-23T10:15:30.123999Z", "2026-11-23T10:15:30.123Z"),   # truncated, not rounded
    ("2026-11-23t10:15:30z", "2026-11-23T10:15:30Z"),
    ("2026-11-23T18:15:30+08:00", "2026-11-23T10:15:30Z"),
    ("2026-11-23T04:45:30.5-05:30", "2026-11-23T10:15:30.500Z"),
    ("2026-11-23T10:15:30-00:00", "2026-11-23T10:15:30Z"),
    ("2026-01-01T07:00:00+08:00", "2025-12-31T23:00:00Z"),
    ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"),
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),             # leap second: the next one
    ("1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"),
])
def test_rfc3339_times_become_utc_milliseconds(text, iso_utc):
    assert wire.format_time_ms(wire.parse_time_ms(text)) == iso_utc


def test_times_are_epoch_milliseconds():
    assert wire.parse_time_ms("1970-01-01T00:00:00Z") == 0
    assert wire.parse_time_ms("2026-11-23T10:15:30.123Z") == 1795428930123
    assert wire.format_time_ms(-1) == "1969-12-31T23:59:59.999Z"


@pytest.mark.parametrize("text", [
    "", "2026-11-23", "2026-11-23T10:15:30", "2026-11-23 10:15:30Z", "2026-11-23T10:15Z",
    "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z", "2023-02-29T00:00:00Z",
    "2026-11-23T10:60:00Z", "2026-11-23T10:15:61Z", "2026-11-23T10:15:30.Z",
    "2026-11-23T10:15:30+24:00", "2026-11-23T10:15:30+0800", "2026-11-23T10:15:30.12a4Z",
    "+2026-11-23T10:15:30Z", "2026-11-23T10:15:30Z ", " 2026-11-23T10:15:30Z",
    "2026-11-23T10:15:+1.000Z", "２０２６-11-23T10:15:30Z", "2026-11-23T10:15:30.123Z\n",
])
def test_anything_else_is_not_a_time(text):
    with pytest.raises(ValueError):
        wire.parse_time_ms(text)


@given(st.integers(min_value=wire.parse_time_ms("0001-01-01T00:00:00Z"),
                   max_value=wire.parse_time_ms("9999-12-31T23:59:59.999Z")))
def test_format_and_parse_are_inverse_for_every_millisecond(ms):
    text = wire.format_time_ms(ms)
    assert wire.parse_time_ms(text) == ms
    assert len(text) == (20 if ms % 1000 == 0 else 24)


# --------------------------------------------------------------------------------- round trip
_id_text = st.text(alphabet="abcXYZ0123456789-_.:商é", min_size=1, max_size=12)
_time = st.integers(min_value=wire.parse_time_ms("2000-01-01T00:00:00Z"), max_value=RECORD_TIME)
_pan_masked = st.builds(lambda a, k, b: a + "*" * k + b, st.text("0123456789", min_size=6,
                        max_size=6), st.integers(3, 9), st.text("0123456789", min_size=4,
                                                                max_size=4))


@st.composite
def pos_events(draw):
    kind = draw(st.sampled_from([AUTHORISATION, REVERSAL, REFUND]))
    return PosEvent(
        type=kind, event_id=draw(_id_text), auth_id=draw(_id_text), merchant_id=draw(_id_text),
        terminal_id=draw(_id_text), acquirer=draw(_id_text), channel=draw(_id_text),
        amount_minor=draw(st.integers(1, wire.MAX_AMOUNT_MINOR)),
        currency=draw(st.sampled_from(sorted(CURRENCIES))), event_time_ms=draw(_time),
        status=draw(st.sampled_from([APPROVED, DECLINED])) if kind == AUTHORISATION else APPROVED,
        batch_id=draw(st.none() | _id_text), pan_masked=draw(st.none() | _pan_masked),
        stan=draw(st.none() | st.text("0123456789", max_size=6)),
        rrn=draw(st.none() | st.text("0123456789", max_size=12)),
        auth_code=draw(st.none() | st.text("ABC123", max_size=6)),
    )


@st.composite
def credits(draw):
    return Credit(
        credit_id=draw(_id_text), merchant_id=draw(_id_text), acquirer=draw(_id_text),
        amount_minor=draw(st.integers(1, wire.MAX_AMOUNT_MINOR)),
        currency=draw(st.sampled_from(sorted(CURRENCIES))), event_time_ms=draw(_time),
        auth_ids=tuple(draw(st.lists(_id_text, max_size=4, unique=True))),
        batch_id=draw(st.none() | _id_text),
        fee_minor=draw(st.none() | st.integers(0, wire.MAX_AMOUNT_MINOR)),
    )


@settings(max_examples=300)
@given(pos_events() | credits())
def test_event_to_json_and_parse_are_inverse(e):
    topic = SETTLEMENT_TOPIC if isinstance(e, Credit) else AUTH_TOPIC
    raw = wire.event_to_json(e)
    assert wire.parse(topic, raw, RECORD_TIME) == e
    assert wire.event_to_json(wire.parse(topic, raw, RECORD_TIME)) == raw


def test_event_to_dict_writes_contract_names_and_leaves_out_nones():
    e = parse(AUTH_TOPIC, sale(type="refund", status=_DROP))
    d = wire.event_to_dict(e)
    assert list(d) == ["type", "event_id", "auth_id", "merchant_id", "terminal_id", "acquirer",
                       "channel", "amount_minor", "currency", "event_time"]
    assert d["event_time"] == "2026-11-23T10:15:30.123Z"
    c = wire.event_to_dict(parse(SETTLEMENT_TOPIC, credit()))
    assert "auth_ids" not in c and "fee_minor" not in c and c["type"] == "settlement_credit"


def test_the_sample_records_of_the_benchmark_are_all_valid():
    from streams.bench.wire import sample_events
    for topic, raw in sample_events(2000):
        assert not isinstance(wire.parse(topic, raw, RECORD_TIME + 10**11), Reject)


# ------------------------------------------------------------------------- findings and DLQ
def finding(**changes) -> Finding:
    base = dict(
        anomaly_id=anomaly_id("underpaid", "m-1", "au-1", "cr-1"), kind=FindingKind.UNDERPAID,
        status=Status.OPEN, merchant_id="m-1", acquirer="acq-north", subject="au-1",
        auth_ids=("au-1",), credit_ids=("cr-1",), expected_minor=12271, received_minor=12245,
        difference_minor=-26, currency="CNY",
        deadline_ms=wire.parse_time_ms("2026-11-24T02:00:00Z"),
        event_time_ms=wire.parse_time_ms("2026-11-24T01:00:00.250Z"),
        detected_at_ms=wire.parse_time_ms("2026-11-24T01:00:00.250Z"),
        probable_cause="fee_rate_mismatch", evidence={"fee_bps": 60},
    )
    base.update(changes)
    return Finding(**base)


FINDING_FIELDS = [
    "anomaly_id", "kind", "status", "merchant_id", "acquirer", "subject", "auth_ids",
    "credit_ids", "expected_minor", "received_minor", "difference_minor", "currency", "deadline",
    "event_time", "detected_at", "probable_cause",
]


def test_a_finding_is_written_with_exactly_the_contract_fields_in_order():
    d = orjson.loads(wire.finding_to_json(finding()))
    assert list(d) == FINDING_FIELDS
    assert d["kind"] == "underpaid" and d["status"] == "open"
    assert d["deadline"] == "2026-11-24T02:00:00Z"
    assert d["event_time"] == d["detected_at"] == "2026-11-24T01:00:00.250Z"
    assert d["auth_ids"] == ["au-1"] and "evidence" not in d


def test_a_finding_is_byte_identical_every_time_and_whatever_its_evidence():
    one = wire.finding_to_json(finding())
    assert one == wire.finding_to_json(finding(evidence={"other": [1, 2, 3]}))
    assert one == wire.finding_to_json(finding(kind="underpaid", status="open"))
    assert one == (
        b'{"anomaly_id":"' + finding().anomaly_id.encode() + b'","kind":"underpaid",'
        b'"status":"open","merchant_id":"m-1","acquirer":"acq-north","subject":"au-1",'
        b'"auth_ids":["au-1"],"credit_ids":["cr-1"],"expected_minor":12271,'
        b'"received_minor":12245,"difference_minor":-26,"currency":"CNY",'
        b'"deadline":"2026-11-24T02:00:00Z","event_time":"2026-11-24T01:00:00.250Z",'
        b'"detected_at":"2026-11-24T01:00:00.250Z","probable_cause":"fee_rate_mismatch"}')


def test_a_finding_without_deadline_or_cause_writes_nulls():
    d = wire.finding_to_dict(finding(kind=FindingKind.ORPHAN, deadline_ms=None,
                                     probable_cause=None, auth_ids=()))
    assert d["deadline"] is None and d["probable_cause"] is None and d["auth_ids"] == []


@pytest.mark.parametrize("f", [finding(), finding(deadline_ms=None, probable_cause=None,
                                                  kind=FindingKind.MISSING,
                                                  status=Status.RESOLVED)])
def test_a_finding_read_back_equals_the_one_written(f):
    back = wire.finding_from_json(wire.finding_to_json(f))
    assert back == f and back.evidence is None
    assert isinstance(back.kind, FindingKind) and isinstance(back.status, Status)


def test_reading_back_something_that_is_not_a_finding_raises():
    d = wire.finding_to_dict(finding())
    for broken in ({**d, "kind": "weird"}, {**d, "expected_minor": "1"},
                   {k: v for k, v in d.items() if k != "subject"}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            wire.finding_from_dict(broken)


def test_a_dead_letter_carries_reason_source_and_the_masked_original():
    r = reject_of(AUTH_TOPIC, sale(auth_id=VISA))
    d = orjson.loads(wire.deadletter_to_json(r, AUTH_TOPIC, 3, 1042, RECORD_TIME))
    assert list(d) == ["reason", "message", "topic", "partition", "offset", "original",
                       "record_time"]
    assert (d["reason"], d["topic"], d["partition"], d["offset"]) == (
        "full_pan", AUTH_TOPIC, 3, 1042)
    assert "411111******1111" in d["original"] and VISA not in d["original"]
    assert d["record_time"] == "2026-11-23T12:00:00Z"


def test_a_dead_letter_of_bytes_that_are_not_utf8_keeps_them_in_base64():
    r = reject_of(SETTLEMENT_TOPIC, b"\xff\xfe" + VISA.encode())
    d = wire.deadletter_to_dict(r, SETTLEMENT_TOPIC, None, None)
    assert "original" not in d and "record_time" not in d
    assert base64.b64decode(d["original_b64"]) == b"\xff\xfe411111******1111"


def test_a_hand_made_reject_cannot_leak_a_card_number_into_the_dead_letters():
    r = Reject("malformed_json", f"saw {VISA}", f"junk {VISA}".encode())
    out = wire.deadletter_to_json(r, AUTH_TOPIC, 0, 0)
    assert VISA.encode() not in out and luhn_numbers_in(out) == []
    assert luhn_numbers_in(orjson.loads(out)["message"]) == []


# -------------------------------------------------------------------------- never raises
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parse_never_raises_on_arbitrary_bytes(raw):
    for topic in wire.INPUT_TOPICS:
        r = wire.parse(topic, raw, RECORD_TIME)
        assert isinstance(r, (PosEvent, Credit, Reject))
        if isinstance(r, Reject):
            assert r.reason in wire.REASONS and luhn_numbers_in(r.raw) == []


_json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                 | st.text(max_size=30))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                            max_leaves=8)
_CONTRACT_KEYS = ["type", "event_id", "auth_id", "merchant_id", "terminal_id", "acquirer",
                  "channel", "amount_minor", "currency", "event_time", "status", "batch_id",
                  "stan", "rrn", "auth_code", "pan_masked", "credit_id", "auth_ids", "fee_minor"]
_field_values = (_json_values | st.sampled_from(["authorisation", "reversal", "refund",
                                                 "settlement_credit", "approved", "CNY", "",
                                                 "2026-11-23T10:00:00Z", "411111******1111"])
                 | st.integers(-2, 2) | st.lists(st.text(max_size=3), max_size=3))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["sale", "refund", "credit", "empty"]),
       changes=st.dictionaries(st.sampled_from(_CONTRACT_KEYS) | st.text(max_size=6),
                               _field_values, max_size=6),
       drops=st.sets(st.sampled_from(_CONTRACT_KEYS), max_size=3), ascii_only=st.booleans())
def test_parse_never_raises_on_arbitrary_json_objects(base, changes, drops, ascii_only):
    d = {"sale": sale(), "refund": sale(type="refund"), "credit": credit(), "empty": {}}[base]
    d.update(changes)
    for k in drops:
        d.pop(k, None)
    raw = json.dumps(d, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for topic in wire.INPUT_TOPICS:
        r = wire.parse(topic, raw, RECORD_TIME)
        assert isinstance(r, (PosEvent, Credit, Reject))
        if isinstance(r, Reject):
            assert r.reason in wire.REASONS and luhn_numbers_in(r.message) == []
        else:
            # whatever parse accepts, it writes back as an equal event
            assert wire.parse(topic, wire.event_to_json(r), RECORD_TIME) == r
