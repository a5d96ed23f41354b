"""Benchmarks that print their figures (one JSON line each); numbers go in README.md.

    settlewatch bench core [--events 5000000] [--open-sales 1000000]

`core` generates a multi-day stream with the simulator (not timed), runs the reconciler alone
over it and reports events/s and peak RSS; then, in a fresh process so that the first phase's
memory does not count, it opens `--open-sales` sales (released by the clock, none paid yet)
and reports the resident memory they take, in bytes per open sale.
"""
from __future__ import annotations

import gc
import os
import resource
import time

from streams.core.policy import Policy
from streams.core.reconcile import Reconciler
from streams.runtime import tune_gc
from streams.sim.simulator import SimConfig, Simulation, parse_faults

DAY_MS = 86_400_000
START_MS = 1_791_244_800_000  # 2026-10-06T00:00:00Z


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def core_stream(policy: Policy, events: int, days: int = 5, merchants: int = 20_000,
                seed: int = 1) -> list:
    """About `events` events over `days` days of event time, all modes, faults at ~1%."""
    # a sale brings about 1.5 events (its credit, voids, refunds, faults); sales/s to match
    sales_per_second = events / 1.5 / (days * 86_400)
    cfg = SimConfig(start_ms=START_MS, end_ms=START_MS + days * DAY_MS, merchants=merchants,
                    sales_per_second=sales_per_second, seed=seed, jitter_ms=120_000,
                    faults=parse_faults("late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                                        "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%,"
                                        "redelivery=0.5%"))
    return list(Simulation(cfg, policy).events())


def bench_core_throughput(policy: Policy, events: int) -> dict:
    t0 = time.perf_counter()
    stream = core_stream(policy, events)
    generated_s = time.perf_counter() - t0
    tune_gc()
    r = Reconciler(policy)
    on_event = r.on_event
    findings = 0
    t0 = time.perf_counter()
    for e in stream:
        findings += len(on_event(e))
    findings += len(r.advance_to(stream[-1].event_time_ms + 10 * DAY_MS))
    seconds = time.perf_counter() - t0
    return {"events": len(stream), "seconds": round(seconds, 2),
            "events_per_s": round(len(stream) / seconds), "findings": findings,
            "late_data": r.stats.late_data, "redeliveries": r.stats.redeliveries,
            "generate_seconds": round(generated_s, 1),
            "peak_rss_mb": round(_peak_rss_bytes() / 2**20)}


def bench_open_sales(policy: Policy, sales: int) -> dict:
    """Resident bytes per open sale: `sales` sales in one hour over 50k merchants, released."""
    import random

    from streams.core.events import AUTHORISATION, PosEvent
    rng = random.Random(1)
    acquirers = ("acq-t1", "acq-d0", "acq-instant", "acq-std")
    channels = ("debit", "credit", "qr", "qr_large")
    merchants = [f"M{n:06d}" for n in range(50_000)]
    tune_gc()
    r = Reconciler(policy)
    # sales span one hour: T+1 and batch items stay open; "+30m" ones would close, so the
    # instant acquirer's sales get a late enough credits watermark only at the end (below).
    start = START_MS + 2 * 3_600_000  # 10:00 local
    gc.collect()
    before = _rss_bytes()
    step = 3_600_000 / sales
    for n in range(sales):
        mid = merchants[n % len(merchants)]
        acq = acquirers[n % 3 if acquirers[n % 4] == "acq-instant" else n % 4]
        r.on_event(PosEvent(AUTHORISATION, f"EA{n:010d}", f"A{n:010d}", mid, f"T{n % 7}", acq,
                            channels[n % 4], 1_000 + rng.randrange(100_000), "CNY",
                            start + int(n * step), "approved",
                            None, f"622848******{n % 10_000:04d}", None, None, None))
    r.advance_to(start + 3_600_000)  # release every sale; no deadline has passed yet
    gc.collect()
    after = _rss_bytes()
    open_items = r.open_item_count()
    return {"open_sales": sales, "open_items": open_items,
            "bytes_per_open_sale": round((after - before) / sales),
            "rss_mb": round(after / 2**20)}
