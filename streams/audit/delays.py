"""Settlement delays observed in a replay: log-spaced buckets, a core observer that fills them,
and the merge of the per-worker parts."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any


# Histogram buckets: 0 holds delays under a second; bucket b >= 1 holds [2^((b-1)/4), 2^(b/4))
# seconds, i.e. four buckets per doubling (at most 19% wide), enough for percentiles on a plot.
_STEPS_PER_DOUBLING = 4


def delay_bucket(delay_ms: int) -> int:
    if delay_ms < 1000:
        return 0
    return 1 + int(math.log2(delay_ms / 1000) * _STEPS_PER_DOUBLING)


def bucket_bounds_s(b: int) -> tuple[float, float]:
    if b == 0:
        return 0.0, 1.0
    return 2 ** ((b - 1) / _STEPS_PER_DOUBLING), 2 ** (b / _STEPS_PER_DOUBLING)


def _ignore(*args: Any, **kwargs: Any) -> None:
    pass


class DelayObserver:
    """Reconciler observer: settlement delays (latest sale to credit) per acquirer, counted when
    the partition's clock is in the range (settlements judged during the lead-in are left out)."""

    def __init__(self, from_ms: int, to_ms: int) -> None:
        self.from_ms, self.to_ms = from_ms, to_ms
        self.reconciler = None
        self.histograms: dict[str, Counter] = {}
        self.amounts: Counter = Counter()  # (acquirer, currency) -> settled minor units

    def on_settled(self, acquirer: str, currency: str, delay_ms: int, amount_minor: int,
                   *args: Any, **kwargs: Any) -> None:
        clock = self.reconciler.clock_ms if self.reconciler is not None else self.from_ms
        if clock < self.from_ms:
            return
        h = self.histograms.get(acquirer)
        if h is None:
            h = self.histograms[acquirer] = Counter()
        h[delay_bucket(delay_ms)] += 1
        self.amounts[(acquirer, currency)] += amount_minor

    def on_item_opened(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_item_closed(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_late_data(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_redelivery(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        # An observer hook added to the core later is not this observer's business.
        if name.startswith("on_"):
            return _ignore
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"histograms": {a: {str(b): n for b, n in sorted(h.items())}
                               for a, h in sorted(self.histograms.items())},
                "amounts": [[a, c, n] for (a, c), n in sorted(self.amounts.items())]}


def merge_delays(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up part histograms; per acquirer: count and percentiles (bucket upper bounds)."""
    hist: dict[str, Counter] = {}
    amounts: Counter = Counter()
    for part in parts:
        for a, h in part["histograms"].items():
            c = hist.setdefault(a, Counter())
            for b, n in h.items():
                c[int(b)] += n
        for a, cur, n in part["amounts"]:
            amounts[(a, cur)] += n
    acquirers = {}
    for a in sorted(hist):
        h = hist[a]
        total = sum(h.values())
        pct = {}
        for q in (50, 90, 99):
            need, seen = math.ceil(total * q / 100), 0
            for b in sorted(h):
                seen += h[b]
                if seen >= need:
                    pct[f"p{q}_s"] = round(bucket_bounds_s(b)[1], 1)
                    break
        acquirers[a] = {"settled": total, **pct,
                        "max_bucket_s": round(bucket_bounds_s(max(h))[1], 1),
                        "buckets": {str(b): h[b] for b in sorted(h)}}
    return {"bucket_rule": "bucket 0: under 1 s; bucket b: [2^((b-1)/4), 2^(b/4)) seconds",
            "acquirers": acquirers,
            "settled_amounts": [{"acquirer": a, "currency": c, "amount_minor": n}
                                for (a, c), n in sorted(amounts.items())]}


