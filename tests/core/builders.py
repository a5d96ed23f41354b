"""Small builders for core events, so that scenarios read like the statements ops people see."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

from streams.core.events import AUTHORISATION, REFUND, REVERSAL, Credit, PosEvent
from streams.core.policy import policy_from_dict

_ids = itertools.count(1)

# Local time is Asia/Shanghai (UTC+8, no DST): "2026-10-09 10:00" local is 02:00Z.
TEST_POLICY = {
    "timezone": "Asia/Shanghai",
    "holidays": ["2026-10-01", "2026-10-02", "2026-10-05", "2026-10-06", "2026-10-07"],
    "workdays": ["2026-09-27", "2026-10-10"],
    "tolerance": {"absolute_minor": 1, "relative_bps": 0},
    "fees": {
        "debit": {"bps": 50, "cap_minor": 2000},
        "credit": {"bps": 60},
        "qr": {"bps": 38},
    },
    "cycles": [
        {"acquirer": "acq-batch", "mode": "batch", "due": "T+1 10:00", "cutoff": "23:00",
         "grace": "1h"},
        {"acquirer": "*", "mode": "per_sale", "due": "+30m", "grace": "0m"},
    ],
    "time": {"lateness": "10m", "orphan_after": "1d", "max_future": "15m",
             "keep_settled": "7d"},
}


def policy(**overrides):
    doc = {**TEST_POLICY, **overrides}
    return policy_from_dict(doc)


def ms(text: str) -> int:
    """'2026-10-09 10:00' in Asia/Shanghai local time (or an ISO string with Z) -> epoch ms."""
    if text.endswith("Z"):
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        from zoneinfo import ZoneInfo
        dt = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    return int(dt.astimezone(timezone.utc).timestamp() * 1000)


MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def sale(auth_id: str, at: str | int, amount: int, *, merchant: str = "m1",
         acquirer: str = "acq-fast", channel: str = "credit", status: str = "approved",
         batch_id: str | None = None, currency: str = "CNY", event_id: str | None = None,
         pan_masked: str | None = "622848******1234") -> PosEvent:
    return PosEvent(
        type=AUTHORISATION, event_id=event_id or f"ev-{auth_id}", auth_id=auth_id,
        merchant_id=merchant, terminal_id="t1", acquirer=acquirer, channel=channel,
        amount_minor=amount, currency=currency,
        event_time_ms=at if isinstance(at, int) else ms(at), status=status, batch_id=batch_id,
        pan_masked=pan_masked)


def _adjust(kind: str, auth_id: str, at: str | int, amount: int, *, merchant: str = "m1",
            acquirer: str = "acq-fast", channel: str = "credit", event_id: str | None = None,
            batch_id: str | None = None) -> PosEvent:
    return PosEvent(
        type=kind, event_id=event_id or f"{kind}-{auth_id}-{next(_ids)}", auth_id=auth_id,
        merchant_id=merchant, terminal_id="t1", acquirer=acquirer, channel=channel,
        amount_minor=amount, currency="CNY",
        event_time_ms=at if isinstance(at, int) else ms(at), batch_id=batch_id)


def refund(auth_id: str, at: str | int, amount: int, **kw) -> PosEvent:
    return _adjust(REFUND, auth_id, at, amount, **kw)


def reversal(auth_id: str, at: str | int, amount: int, **kw) -> PosEvent:
    return _adjust(REVERSAL, auth_id, at, amount, **kw)


def credit(credit_id: str, at: str | int, amount: int, *, auth_ids: tuple[str, ...] = (),
           batch_id: str | None = None, merchant: str = "m1", acquirer: str = "acq-fast",
           currency: str = "CNY", fee_minor: int | None = None) -> Credit:
    return Credit(
        credit_id=credit_id, merchant_id=merchant, acquirer=acquirer, amount_minor=amount,
        currency=currency, event_time_ms=at if isinstance(at, int) else ms(at),
        auth_ids=tuple(auth_ids), batch_id=batch_id, fee_minor=fee_minor)


def net(amount: int, bps: int = 60, cap: int | None = None) -> int:
    """What a sale should credit after the fee (round half up, capped)."""
    fee = (amount * bps + 5000) // 10_000
    if cap is not None:
        fee = min(fee, cap)
    return amount - fee
