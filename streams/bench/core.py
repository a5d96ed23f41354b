"""The core benchmark; numbers go in README.md.

    settlewatch bench core [--events 5000000] [--small 500000] [--open-sales 1000000]

Each phase runs in a fresh process, so that one's memory does not weigh on the next: the
reconciler alone over a multi-day simulated stream (generated first, not timed) of `--small`
and of `--events` events from the same generator, reporting events/s, GC's share and peak RSS
of each; then `--open-sales` sales opened (released by the clock, none paid yet), reporting
the resident memory they take, in bytes per open sale.
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


class GcTimer:
    """Time spent in the cyclic garbage collector, from gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def bench_core_throughput(policy: Policy, events: int, batch: int = 1_000,
                          live: bool = False) -> dict:
    """The reconciler alone over `events` simulated events, fed `batch` at a time through
    `on_events` (the shells' entry point; `batch=1` feeds `on_event`). Reports events/s by
    the wall clock and by this process's CPU time (the machine may be shared), GC's share of
    the wall time, and the peak RSS (the stream itself included).

    `live` builds the live worker's reconciler (no evidence, aging on) instead of the
    replay's, and also reports what the state it holds costs once every event is in (before
    the last clock move): the resident growth over the run per sale held, open or settled,
    with the credits, deductions and redelivery ids that go with them (deploy/k8s/sizing.py's
    bytes_per_sale)."""
    t0 = time.perf_counter()
    stream = core_stream(policy, events)
    generated_s = time.perf_counter() - t0
    tune_gc()
    r = Reconciler(policy, evidence=False, aging=True) if live else Reconciler(policy)
    findings = 0
    held: dict = {}
    gc.collect()
    rss_before = _rss_bytes()
    with GcTimer() as gc_time:
        t0, c0 = time.perf_counter(), time.process_time()
        if batch <= 1:
            on_event = r.on_event
            for e in stream:
                findings += len(on_event(e))
        else:
            on_events = r.on_events
            for i in range(0, len(stream), batch):
                findings += len(on_events(stream[i:i + batch]))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        gc_seconds, collections = gc_time.seconds, gc_time.collections
    if live:  # not timed
        gc.collect()
        sales = sum(len(i.sales) for m in r.merchants.values() for i in m.items.values())
        held = {"held_sales": sales,
                "held_credits": sum(len(m.credits) for m in r.merchants.values()),
                "bytes_per_held_sale": round((_rss_bytes() - rss_before) / max(sales, 1))}
    with GcTimer() as gc_time:
        t0, c0 = time.perf_counter(), time.process_time()
        findings += len(r.advance_to(stream[-1].event_time_ms + 10 * DAY_MS))
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        gc_seconds += gc_time.seconds
        collections += gc_time.collections
    return {"events": len(stream), "live": live, "seconds": round(seconds, 2),
            "events_per_s": round(len(stream) / seconds),
            "events_per_cpu_s": round(len(stream) / cpu), "findings": findings,
            "gc_share": round(gc_seconds / seconds, 4), "gc_collections": collections,
            "late_data": r.stats.late_data, "redeliveries": r.stats.redeliveries,
            "generate_seconds": round(generated_s, 1),
            "peak_rss_mb": round(_peak_rss_bytes() / 2**20), **held}


def bench_open_sales(policy: Policy, sales: int, evidence: bool = False,
                     at_end: bool = False) -> dict:
    """Resident bytes per open sale: `sales` sales in one hour over 50k merchants, released.

    `evidence=False` is the live worker's state (its records carry no evidence), True the
    replay's. The clock follows the sales (every 1,000, the time of the last less the
    lateness), as a live stream's watermark does, so that what is measured is the state and
    not the input waiting in the event-time buffer; `at_end` releases them all at the end
    instead (the measure before issue 13's compact state: the buffer's peak then sets it)."""
    import random

    from streams.core.events import AUTHORISATION, PosEvent
    rng = random.Random(1)
    acquirers = ("acq-t1", "acq-d0", "acq-instant", "acq-std")
    channels = ("debit", "credit", "qr", "qr_large")
    merchants = [f"M{n:06d}" for n in range(50_000)]
    tune_gc()
    r = Reconciler(policy, evidence=evidence)
    lateness = policy.lateness_ms
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
        if not at_end and n % 1_000 == 999:
            r.advance_to(start + int(n * step) - lateness)
    r.advance_to(start + 3_600_000)  # release every sale; no deadline has passed yet
    gc.collect()
    after = _rss_bytes()
    open_items = r.open_item_count()
    return {"open_sales": sales, "open_items": open_items, "evidence": evidence,
            "released": "at_end" if at_end else "as_they_come",
            "bytes_per_open_sale": round((after - before) / sales),
            "rss_mb": round(after / 2**20)}


class _FloorRecord:
    __slots__ = ("key", "amount_minor", "event_time_ms", "acquirer", "currency", "state",
                 "net_minor", "spare")

    def __init__(self, key: str, e) -> None:
        self.key = key
        self.amount_minor = e.amount_minor
        self.event_time_ms = e.event_time_ms
        self.acquirer = e.acquirer
        self.currency = e.currency
        self.state = "open"
        self.net_minor = 0
        self.spare = None


def bench_floor(policy: Policy, events: int) -> dict:
    """The least per-event work a pure-Python reconciler of this design does, over the same
    stream: buffer each event (heap push and pop), one slotted record per event in a dict, one
    timer in a per-minute set, and a close that computes a net; no matching, judging, fees,
    redelivery or change tracking. Its rate bounds what the real core can reach here."""
    import heapq
    stream = core_stream(policy, events)
    tune_gc()
    buffer: list = []
    records: dict = {}
    timers: dict = {}
    seq = 0
    c0 = time.process_time()
    for e in stream:
        seq += 1
        heapq.heappush(buffer, (e.event_time_ms, seq, e))
        clock = e.event_time_ms - 720_000
        while buffer and buffer[0][0] <= clock:
            ev = heapq.heappop(buffer)[2]
            r = _FloorRecord(getattr(ev, "auth_id", None) or ev.credit_id, ev)
            records[(ev.merchant_id, r.key)] = r
            minute = (r.event_time_ms + 3_600_000) // 60_000
            due = timers.get(minute)
            if due is None:
                due = timers[minute] = set()
            due.add(r)
        for r in timers.pop(clock // 60_000 - 60, ()):
            r.state = "closed"
            r.net_minor = r.amount_minor - (r.amount_minor * 60 + 5_000) // 10_000
    cpu = time.process_time() - c0
    return {"events": len(stream), "floor_events_per_cpu_s": round(len(stream) / cpu)}

