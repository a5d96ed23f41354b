"""The early warning as the worker exports it: scrape-time gauges from the live reconcilers."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.core.reconcile import Reconciler
from streams.live.metrics import Metrics
from tests.core.builders import HOUR, ms
from tests.core.test_earlywarning import ACQ, _policy, feed_hourly, traffic


class Scraped:
    def __init__(self, registry):
        self.r = registry

    def __call__(self, name, **labels):
        return self.r.get_sample_value(name, labels)


def worker(p, events, until_ms):
    """A metrics edge watching one real reconciler fed like the worker: batches, then the
    early-warning step after each."""
    registry = CollectorRegistry()
    m = Metrics.create(registry, version="test", worker="test")
    m.enable_early_warning(p)
    rec = Reconciler(p, m.observer())
    m.watch(lambda: [rec])
    feed_hourly(p, events, rec, until_ms, m.step_early_warning)
    return m, Scraped(registry)


def test_a_slowed_acquirer_is_exported_as_an_early_warning_with_its_sentence_and_due_figures():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    m, scraped = worker(p, events, ms("2026-11-30 08:00"))
    labels = {"acquirer": ACQ, "channel": "credit"}
    assert scraped("settlewatch_early_warning", **labels) == 1
    assert scraped("settlewatch_early_warning_due_sales", **labels) > 0
    assert scraped("settlewatch_early_warning_due_amount_minor", currency="CNY", **labels) > 0
    assert scraped("settlewatch_early_warning_deadline_timestamp_seconds", **labels) == \
        ms("2026-11-30 10:00") / 1000
    assert scraped("settlewatch_early_warning_later_seconds", **labels) >= HOUR / 1000
    today = scraped("settlewatch_early_warning_paid_ratio", band="today", **labels)
    usual = scraped("settlewatch_early_warning_paid_ratio", band="usual", **labels)
    slow = scraped("settlewatch_early_warning_paid_ratio", band="slow", **labels)
    assert today < slow <= usual
    (text,) = [s.labels["text"] for f in m.registry.collect() for s in f.samples
               if s.name == "settlewatch_early_warning_info"]
    assert text.startswith(f"{ACQ} (credit) is paying ") and text.endswith(" due by 10:00")


def test_a_steady_acquirer_exports_its_band_and_no_warning():
    p = _policy()
    events = traffic(p, "2026-11-02", 30)
    _, scraped = worker(p, events, ms("2026-11-30 06:30"))
    labels = {"acquirer": ACQ, "channel": "credit"}
    assert scraped("settlewatch_early_warning", **labels) == 0
    assert scraped("settlewatch_early_warning_info", text="x", **labels) is None
    assert scraped("settlewatch_early_warning_learned_deadlines", **labels) >= 5
    assert scraped("settlewatch_early_warning_paid_ratio", band="usual", **labels) > 0.5


def test_a_new_set_of_reconcilers_disrupts_the_open_deadlines():
    p = _policy()
    events = traffic(p, "2026-11-02", 30, slow_from="2026-11-30", slow_by_ms=5 * HOUR)
    m, scraped = worker(p, events, ms("2026-11-30 08:00"))
    other = Reconciler(p, m.observer())
    m.watch(lambda: [other])  # a rebalance: a partition came, another went
    labels = {"acquirer": ACQ, "channel": "credit"}
    assert scraped("settlewatch_early_warning", **labels) == 0


def test_without_early_warning_no_series_are_exported():
    registry = CollectorRegistry()
    Metrics.create(registry, version="test", worker="test")
    assert not [f for f in registry.collect() if f.name.startswith("settlewatch_early_warning")]


def test_an_acquirer_with_no_band_yet_is_exported_with_gaps_and_nothing_due():
    p = _policy()
    events = traffic(p, "2026-11-02", 2)  # two days: nothing learned yet
    _, scraped = worker(p, events, ms("2026-11-03 12:00"))
    labels = {"acquirer": ACQ, "channel": "credit"}
    assert scraped("settlewatch_early_warning", **labels) == 0
    assert scraped("settlewatch_early_warning_learned_deadlines", **labels) == 0
    assert scraped("settlewatch_early_warning_due_sales", **labels) == 0
    assert scraped("settlewatch_early_warning_due_amount_minor", currency="CNY", **labels) == 0
    usual = scraped("settlewatch_early_warning_paid_ratio", band="usual", **labels)
    assert usual != usual  # NaN: no band to draw
