"""`python -m streams.bench.wire`: wire.parse on realistic valid records (one JSON line)."""
from __future__ import annotations

from streams.core.events import (
    APPROVED,
    AUTHORISATION,
    DECLINED,
    REFUND,
    REVERSAL,
    Credit,
    PosEvent,
)
from streams.wire import AUTH_TOPIC, SETTLEMENT_TOPIC, Reject, event_to_json, parse, parse_time_ms


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
