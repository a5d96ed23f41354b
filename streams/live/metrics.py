"""Prometheus metrics of the settlewatch worker: the one place where metric names are defined.

Owns every `settlewatch_*` series. alerts/ and grafana/ may only select names this module
exports (tests/test_monitoring.py checks that against a real exposition). It imports
prometheus_client and the core's vocabulary, never faust: the worker calls the methods below,
the reconciler calls a `ReconcilerObserver`, and a scrape-time collector reads open items from
the live reconcilers.

Units and naming: `settlewatch_` prefix, counters end in `_total`, time in seconds. Money has no
base unit, so amounts are integers of the currency's minor unit (fen, cents; yen have none) and
their names say so: `..._amount_minor` / `..._amount_minor_total`, always with a `currency`
label. `settlewatch_currency_minor_unit_digits{currency}` (ISO 4217 exponent) lets a dashboard
or an alert show major units: `amount / on(currency) (10 ^ max by (currency) (digits))`.
Labels stay low-cardinality: kind, status, acquirer, channel, currency, topic, partition, reason,
age. Never merchant, sale, credit or card ids.

The series (type, labels):
  settlewatch_events_read_total                 counter  topic        every record read, valid or not
  settlewatch_events_rejected_total             counter  topic,reason records sent to the dead-letter topic
  settlewatch_late_data_total                   counter  topic        events older than their watermark (still applied)
  settlewatch_redeliveries_total                counter  topic        same event_id / credit_id again (ignored)
  settlewatch_findings_total                    counter  kind,acquirer,status   findings published
  settlewatch_findings_amount_minor_total       counter  kind,acquirer,currency,status  amount at stake:
        missing -> expected, underpaid/overpaid -> |difference|, duplicate/orphan/late -> received
  settlewatch_items_closed_total                counter  acquirer,channel,outcome   matched | unmatched at deadline+grace
  settlewatch_settled_amount_minor_total        counter  acquirer,currency   credited amount matched to items
  settlewatch_settlement_delay_seconds          histogram acquirer,channel  latest sale -> credit, event time
  settlewatch_event_processing_seconds          histogram -                 per event (a batch is spread evenly)
  settlewatch_consumer_lag_messages             gauge    topic,partition    set by the worker
  settlewatch_last_event_timestamp_seconds      gauge    topic        event time of the newest event read
  settlewatch_last_read_timestamp_seconds       gauge    topic        wall clock of the last record read
  settlewatch_worker_up                         gauge    -            1 while the worker consumes
  settlewatch_worker_info                       gauge    version,worker   always 1
  -- read from the reconcilers at scrape time (OpenItemsCollector):
  settlewatch_open_unsettled_amount_minor       gauge    acquirer,currency,age   every open item (missing included)
  settlewatch_open_unsettled_items              gauge    acquirer,currency,age
  settlewatch_open_missing_amount_minor         gauge    acquirer,currency   open items already reported missing
  settlewatch_open_missing_items                gauge    acquirer,currency
  settlewatch_watermark_lag_seconds             gauge    topic        wall clock - watermark (worst partition)
  settlewatch_event_clock_lag_seconds           gauge    -            wall clock - reconciler clock (worst partition)
  settlewatch_reconcilers                       gauge    -            live reconcilers (assigned partitions)
  settlewatch_currency_minor_unit_digits        gauge    currency     ISO 4217 exponent of each currency seen
  -- open findings aged by SLA tier, from the core's counters at scrape time (AgingCollector):
  settlewatch_open_findings                     gauge    acquirer,tier            open findings (streams.core.aging)
  settlewatch_open_findings_amount_minor        gauge    acquirer,currency,tier   their amount at stake
  settlewatch_aging_tier_info                   gauge    tier,rank,due            1 per configured tier (rank 0 most severe)

  -- the early warning, read at scrape time (EarlyWarningCollector, streams/core/earlywarning.py),
  for the next deadline of each acquirer and channel still ahead:
  settlewatch_early_warning                     gauge    acquirer,channel   1 while it runs behind its baseline
  settlewatch_early_warning_info                gauge    acquirer,channel,text  1 while warning; text: the sentence
  settlewatch_early_warning_paid_ratio          gauge    acquirer,channel,band  band: today | usual | slow (lower band)
  settlewatch_early_warning_later_seconds       gauge    acquirer,channel   today's lag behind the usual day
  settlewatch_early_warning_due_sales           gauge    acquirer,channel   sales due by that deadline, not paid
  settlewatch_early_warning_due_amount_minor    gauge    acquirer,channel,currency  their amount
  settlewatch_early_warning_deadline_timestamp_seconds  gauge  acquirer,channel   that deadline
  settlewatch_early_warning_learned_deadlines        gauge    acquirer,channel   settle days the baseline has learned
  -- the baseline kept in the changelog across restarts (streams/live/ewstate.py; these too only
  with the early warning enabled):
  settlewatch_early_warning_baseline_restores_total  counter  result   copies read at a partition build:
        restored | corrupt | incompatible (the last two ignored: relearned)
  settlewatch_early_warning_baseline_writes_total    counter  -        copies written (one per owned partition)
  settlewatch_early_warning_baseline_write_failures_total  counter  -  copies the broker did not take
  settlewatch_early_warning_baseline_bytes           gauge    -        size of the latest copy written
  settlewatch_early_warning_baseline_written_timestamp_seconds  gauge  -  wall clock of the latest write
  -- read from the reconcilers' marker counters at scrape time (SettlementFilesCollector):
  settlewatch_settlement_files_overdue          gauge    acquirer,settle_date   merchants whose settlement
        file (contract v1.1 marker) was expected by now and has not come; only acquirers with a
        [[settlement_files]] entry, only dates within redelivery_window, only values above 0

Match rate is `items_closed_total{outcome="matched"} / items_closed_total`; the late-credit ratio
is `findings_total{kind="late"} / settlement_delay_seconds_count`.
"""
from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from streams.core import aging
from streams.core.currencies import minor_digits
from streams.core.earlywarning import EarlyWarning
from streams.core.policy import Policy
from streams.core.events import Finding, FindingKind, Status
from streams.live.health import Health
from streams.live.health import serve as serve_health

log = logging.getLogger(__name__)

# The reconciler names its inputs by source; metrics label them by the Kafka topic they come from.
DEFAULT_TOPICS: Mapping[str, str] = {
    "authorisations": "pos.authorisations",
    "settlements": "pos.settlements",
}

# Age of an open item (wall clock - its first sale): upper bounds in seconds and label values.
AGE_BUCKETS: tuple[tuple[float, str], ...] = (
    (3600, "0-1h"),
    (6 * 3600, "1-6h"),
    (24 * 3600, "6-24h"),
    (3 * 86400, "1-3d"),
    (float("inf"), "3d+"),
)

_H, _D = 3600, 86400
# Settlement delay runs from minutes (instant, D+0) to days (T+N over a weekend or a holiday).
DELAY_BUCKETS = (60, 300, 900, 1800, _H, 2 * _H, 4 * _H, 8 * _H, 12 * _H, 18 * _H, _D,
                 1.5 * _D, 2 * _D, 3 * _D, 4 * _D, 5 * _D, 7 * _D, 10 * _D, 14 * _D)
# Per-event processing: tens of microseconds (the agent body) to a slow changelog flush.
PROCESSING_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
                      0.05, 0.1, 0.25, 0.5, 1.0)


def currency_minor_unit_digits(currency: str) -> int:
    """ISO 4217 exponent: CNY 2, JPY 0, KWD 3 (2 for a code streams.core.currencies does not know)."""
    try:
        return minor_digits(currency)
    except KeyError:
        return 2


def amount_at_stake(finding: Finding) -> int:
    """The money a finding puts at stake, in minor units (never negative): the core's rule
    (streams.core.aging), which the aging tiers use too."""
    return aging.amount_at_stake(finding.kind, finding.expected_minor, finding.received_minor)


class ReconcilerView(Protocol):
    """What the scrape-time collector reads from a live reconciler (streams.core.reconcile)."""

    clock_ms: int | None

    def watermarks(self) -> Mapping[str, int | None]: ...

    def open_items(self) -> Iterable[tuple[str, str, int, int, bool]]: ...


class Metrics:
    """The worker's metrics, registered in one (injected) registry.

    `Metrics.create()` registers into a fresh registry with process metrics; tests pass their
    own `CollectorRegistry()`. The worker serves `registry` (see `serve` and `exposition`).
    """

    def __init__(self, registry: CollectorRegistry, topics: Mapping[str, str],
                 now: Callable[[], float]) -> None:
        self.registry = registry
        self.topics = dict(topics)
        self._now = now
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str | None]] = set()  # (acquirer, currency) pre-created
        self._currencies: set[str] = set()
        self._newest_event_ms: dict[str, int] = {}
        self._read_children: dict[str, tuple[Any, Any]] = {}
        r = registry
        self.events_read = Counter(
            "settlewatch_events_read_total",
            "Records read from an input topic, valid or not.", ["topic"], registry=r)
        self.events_rejected = Counter(
            "settlewatch_events_rejected_total",
            "Records sent to the dead-letter topic, by reason code.", ["topic", "reason"],
            registry=r)
        self.late_data = Counter(
            "settlewatch_late_data_total",
            "Events older than their input's watermark (still applied while their item is open).",
            ["topic"], registry=r)
        self.redeliveries = Counter(
            "settlewatch_redeliveries_total",
            "Events or credits seen again (same event_id or credit_id); ignored.", ["topic"],
            registry=r)
        self.missing_expired = Counter(
            "settlewatch_missing_expired_total",
            "Items dropped with their missing finding still open, once missing_horizon passed "
            "(a credit for one later is an orphan).", ["acquirer", "currency"], registry=r)
        self.missing_expired_amount = Counter(
            "settlewatch_missing_expired_amount_minor_total",
            "Expected amount of those items, in minor units.", ["acquirer", "currency"],
            registry=r)
        self.findings = Counter(
            "settlewatch_findings_total",
            "Findings published to settlewatch.anomalies, by kind and status.",
            ["kind", "acquirer", "status"], registry=r)
        self.findings_amount = Counter(
            "settlewatch_findings_amount_minor_total",
            "Money at stake in published findings, in minor units of the currency "
            "(missing: expected; underpaid, overpaid: |difference|; duplicate, orphan, late: "
            "received).", ["kind", "acquirer", "currency", "status"], registry=r)
        self.items_closed = Counter(
            "settlewatch_items_closed_total",
            "Items (sales or batches) whose deadline plus grace passed: matched by a credit "
            "in time or not.", ["acquirer", "channel", "outcome"], registry=r)
        self.settled_amount = Counter(
            "settlewatch_settled_amount_minor_total",
            "Credited amount matched to items, in minor units.", ["acquirer", "currency"],
            registry=r)
        self.settlement_delay = Histogram(
            "settlewatch_settlement_delay_seconds",
            "Event time from an item's latest sale to the credit that settled it.",
            ["acquirer", "channel"], buckets=DELAY_BUCKETS, registry=r)
        self.processing = Histogram(
            "settlewatch_event_processing_seconds",
            "Worker time per input event, decode to findings sent (a batch is spread evenly "
            "over its events).", buckets=PROCESSING_BUCKETS, registry=r)
        self.consumer_lag = Gauge(
            "settlewatch_consumer_lag_messages",
            "Records between the worker's position and the end of the partition.",
            ["topic", "partition"], registry=r)
        self.newest_event_time = Gauge(
            "settlewatch_last_event_timestamp_seconds",
            "Event time of the newest event read from the topic.", ["topic"], registry=r)
        self.last_read = Gauge(
            "settlewatch_last_read_timestamp_seconds",
            "Wall-clock time of the last record read from the topic.", ["topic"], registry=r)
        self.changelog_records = Counter(
            "settlewatch_changelog_records_total",
            "State records the worker wrote to its changelog (changed keys, outbox, clock).",
            registry=r)
        self.changelog_bytes = Counter(
            "settlewatch_changelog_bytes_total",
            "Bytes of keys and values the worker wrote to its changelog.", registry=r)
        self.worker_up = Gauge(
            "settlewatch_worker_up", "1 while the worker consumes its topics, 0 otherwise.",
            registry=r)
        self.worker_info = Info(
            "settlewatch_worker", "The worker's version and name.", registry=r)
        self.open_items = OpenItemsCollector(self.topics, now=now, currencies=self._currencies)
        r.register(self.open_items)
        self.aging = AgingCollector()
        r.register(self.aging)
        self.settlement_files = SettlementFilesCollector()
        r.register(self.settlement_files)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None, *,
               topics: Mapping[str, str] = DEFAULT_TOPICS,
               reconcilers: Callable[[], Iterable[ReconcilerView]] | None = None,
               version: str = "", worker: str | None = None,
               now: Callable[[], float] = time.time) -> Metrics:
        """Register every settlewatch metric in `registry` (a fresh one with process metrics
        when None). The input topics get their series at 0 and their last-read time at `now()`,
        so that "no events since start" is visible and alertable."""
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        m = cls(registry, topics, now)
        if reconcilers is not None:
            m.watch(reconcilers)
        if not version:
            try:
                from importlib.metadata import version as _v
                version = _v("settlewatch")
            except Exception:  # not installed (tests from a checkout)
                version = "unknown"
        m.worker_info.info({"version": version, "worker": worker or socket.gethostname()})
        m.worker_up.set(0)
        started = now()
        for topic in m.topics.values():
            m.events_read.labels(topic)
            m.late_data.labels(topic)
            m.redeliveries.labels(topic)
            m.last_read.labels(topic).set(started)
        return m

    # -- the worker's calls ---------------------------------------------------------------

    def watch(self, reconcilers: Callable[[], Iterable[ReconcilerView]]) -> None:
        """Read open items, watermarks and the clock from `reconcilers()` at each scrape."""
        self.open_items.source = reconcilers
        self.aging.source = reconcilers
        self.settlement_files.source = reconcilers
        if self.early_warning is not None:
            self.early_warning.source = reconcilers

    early_warning: EarlyWarningCollector | None = None

    def enable_early_warning(self, policy: Policy) -> EarlyWarningCollector:
        """Learn each acquirer's baseline from the reconcilers' hooks (the observer forwards
        them) and export the early warning at scrape time."""
        if self.early_warning is None:
            self._baseline_metrics()
            self.early_warning = EarlyWarningCollector(EarlyWarning(policy),
                                                       source=self.open_items.source)
            self.registry.register(self.early_warning)
        return self.early_warning

    def _baseline_metrics(self) -> None:
        """The early warning's baseline in the changelog (streams.live.ewstate): only with the
        early warning enabled."""
        self.baseline_restores = Counter(
            "settlewatch_early_warning_baseline_restores_total",
            "Copies of the early-warning baseline read from the changelog when partitions are "
            "built: restored, or ignored as corrupt or incompatible (then relearned).",
            ["result"], registry=self.registry)
        for result in ("restored", "corrupt", "incompatible"):
            self.baseline_restores.labels(result)
        self.baseline_writes = Counter(
            "settlewatch_early_warning_baseline_writes_total",
            "Copies of the early-warning baseline written to the changelog (one per owned "
            "partition, when the learned history changed).", registry=self.registry)
        self.baseline_write_failures = Counter(
            "settlewatch_early_warning_baseline_write_failures_total",
            "Copies of the early-warning baseline the broker did not acknowledge (written "
            "again at the next chance).", registry=self.registry)
        self.baseline_bytes = Gauge(
            "settlewatch_early_warning_baseline_bytes",
            "Size of the latest early-warning baseline copy written (compressed).",
            registry=self.registry)
        self.baseline_written = Gauge(
            "settlewatch_early_warning_baseline_written_timestamp_seconds",
            "Wall-clock time the early-warning baseline was last written to the changelog.",
            registry=self.registry)

    def step_early_warning(self) -> None:
        """After each batch the worker fed (events or a tick): move the early warning to the
        reconcilers' clock, so that its steps are sampled as event time passes, not only at
        scrape time (a backlog read between two scrapes would look paid all at once)."""
        ew = self.early_warning
        if ew is not None:
            with ew.lock:
                ew.advance()

    def event_read(self, topic: str) -> None:
        """One record read from `topic` (before decoding: rejected records count too)."""
        children = self._read_children.get(topic)
        if children is None:
            children = (self.events_read.labels(topic), self.last_read.labels(topic))
            self._read_children[topic] = children
        children[0].inc()
        children[1].set(self._now())

    def event_rejected(self, topic: str, reason: str) -> None:
        """One record of `topic` sent to the dead-letter topic with reason code `reason`."""
        self.events_rejected.labels(topic, reason).inc()

    def findings_published(self, findings: Iterable[Finding]) -> None:
        """Count findings once they are sent (a resolved missing counts under status resolved)."""
        for f in findings:
            kind, status = str(f.kind), str(f.status)
            self._first_sight(f.acquirer, f.currency)
            self.findings.labels(kind, f.acquirer, status).inc()
            self.findings_amount.labels(kind, f.acquirer, f.currency, status).inc(
                amount_at_stake(f))

    def changelog_written(self, records: int, size: int) -> None:
        """`records` changelog records of `size` bytes (keys and values) written."""
        self.changelog_records.inc(records)
        self.changelog_bytes.inc(size)

    def observe_processing(self, seconds: float, events: int = 1) -> None:
        """Worker time spent on `events` input events (one observation per event)."""
        if events <= 0:
            return
        per_event = seconds / events
        for _ in range(events):
            self.processing.observe(per_event)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(max(lag, 0))

    def remove_consumer_lag(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag, so a stale value cannot keep an alert firing."""
        try:
            self.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    def last_event(self, topic: str, event_time_ms: int) -> None:
        """Event time of an event read from `topic`; the gauge keeps the newest."""
        if event_time_ms > self._newest_event_ms.get(topic, -1):
            self._newest_event_ms[topic] = event_time_ms
            self.newest_event_time.labels(topic).set(event_time_ms / 1000)

    def set_up(self, up: bool) -> None:
        self.worker_up.set(1 if up else 0)

    def observer(self) -> ReconcilerObserver:
        return ReconcilerObserver(self)

    # -- serving --------------------------------------------------------------------------


    @functools.cached_property
    def health(self) -> Health:
        """What /healthz and /readyz answer (streams.live.health): the worker sets
        `health.readiness` and starts `health.start_heartbeat()` on its event loop."""
        return Health()

    def serve(self, port: int, addr: str = "127.0.0.1"):
        """Serve /metrics, /healthz and /readyz from a thread; returns (server, thread):
        server.shutdown() stops it."""
        return serve_health(self.registry, self.health, port, addr)

    # -- internals ------------------------------------------------------------------------

    def _first_sight(self, acquirer: str, currency: str | None) -> None:
        """Create an acquirer's counters at 0 the first time it appears, so that its first
        finding is an increase (rate() and increase() miss a series born at 1)."""
        key = (acquirer, currency)
        if key in self._seen:
            return
        with self._lock:
            if key in self._seen:
                return
            if (acquirer, None) not in self._seen:
                for kind in FindingKind:
                    self.findings.labels(str(kind), acquirer, str(Status.OPEN))
                self.findings.labels(str(FindingKind.MISSING), acquirer, str(Status.RESOLVED))
                self._seen.add((acquirer, None))
            if currency is not None:
                self._currencies.add(currency)
                for kind in FindingKind:
                    self.findings_amount.labels(str(kind), acquirer, currency, str(Status.OPEN))
                self.findings_amount.labels(str(FindingKind.MISSING), acquirer, currency,
                                            str(Status.RESOLVED))
                self.settled_amount.labels(acquirer, currency)
            self._seen.add(key)

    def _topic(self, source: str) -> str:
        return self.topics.get(source, source)


class ReconcilerObserver:
    """What the reconciler reports as it goes (streams.core.reconcile calls these)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._delay_children: dict[tuple[str, str], Any] = {}
        self._opened: set[tuple[str, str, str]] = set()

    def on_settled(self, acquirer: str, currency: str, delay_ms: int, amount_minor: int,
                   channel: str = "") -> None:
        """A credit matched an item; `delay_ms` runs from the item's latest sale to the credit
        (clamped at 0: a credit booked before the sale's own timestamp is a clock skew)."""
        m = self._m
        m._first_sight(acquirer, currency)
        child = self._delay_children.get((acquirer, channel))
        if child is None:
            child = m.settlement_delay.labels(acquirer, channel)
            self._delay_children[(acquirer, channel)] = child
        child.observe(max(delay_ms, 0) / 1000)
        m.settled_amount.labels(acquirer, currency).inc(max(amount_minor, 0))

    def on_item_opened(self, acquirer: str, currency: str, channel: str = "") -> None:
        """A sale opened a new item: create its series at 0 now, at least deadline + grace
        before the item can close, so that a scrape sees 0 before the first increase (a
        series born at its first value is invisible to increase() and rate())."""
        m = self._m
        key = (acquirer, currency, channel)
        if key in self._opened:
            return
        m._first_sight(acquirer, currency)
        m.items_closed.labels(acquirer, channel, "matched")
        m.items_closed.labels(acquirer, channel, "unmatched")
        self._opened.add(key)

    def on_item_closed(self, acquirer: str, matched: bool, channel: str = "") -> None:
        """An item's deadline plus grace passed, with (matched) or without a credit."""
        self._m._first_sight(acquirer, None)
        self._m.items_closed.labels(acquirer, channel, "matched" if matched else "unmatched").inc()

    def on_late_data(self, source: str) -> None:
        self._m.late_data.labels(self._m._topic(source)).inc()

    def on_redelivery(self, source: str) -> None:
        self._m.redeliveries.labels(self._m._topic(source)).inc()

    def on_missing_expired(self, acquirer: str, currency: str, amount_minor: int) -> None:
        self._m.missing_expired.labels(acquirer, currency).inc()
        self._m.missing_expired_amount.labels(acquirer, currency).inc(amount_minor)

    # The early warning's hooks (streams.core.reconcile calls them when it finds them).
    def on_sale_due(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
                    amount_minor: int, sales: int = 1, paid: bool = False,
                    trade_day: int = 0, sale_ms: int | None = None) -> None:
        ew = self._m.early_warning
        if ew is not None:
            with ew.lock:
                ew.warning.on_sale_due(acquirer, channel, currency, deadline_ms, amount_minor,
                                       sales, paid, trade_day, sale_ms)

    def on_sale_paid(self, acquirer: str, channel: str, currency: str, deadline_ms: int,
                     amount_minor: int, credit_ms: int, trade_day: int = 0,
                     sale_ms: int | None = None) -> None:
        ew = self._m.early_warning
        if ew is not None:
            with ew.lock:
                ew.warning.on_sale_paid(acquirer, channel, currency, deadline_ms, amount_minor,
                                        credit_ms, trade_day, sale_ms)


class EarlyWarningCollector:
    """The early warning at scrape time: moves the module's clock to the reconcilers' (the
    slowest partition's event-time clock), tells it when the set of reconcilers changed (a
    partition moved: the open deadlines' counters are partial, see EarlyWarning.disrupt), and
    exports, per acquirer and channel, the next deadline still ahead: its baseline band
    (usual and slow paid share by now, today's), the warning and what is still due by it.

    The hooks run on the event loop's thread and the scrape on the HTTP server's: both take
    `lock`."""

    def __init__(self, warning: EarlyWarning,
                 source: Callable[[], Iterable[ReconcilerView]] | None = None) -> None:
        self.warning = warning
        self.source = source
        self.lock = threading.Lock()
        self._members: frozenset[int] | None = None
        self._seen: set[tuple[str, str]] = set()

    def describe(self):
        return list(self._families())

    @staticmethod
    def _families():
        return (
            GaugeMetricFamily(
                "settlewatch_early_warning",
                "1 while the acquirer's credits for its next deadline run behind its own "
                "learned baseline by at least min_lag (early warning), else 0.",
                labels=["acquirer", "channel"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_info",
                "1 per early warning, its sentence in the text label (for alert mails).",
                labels=["acquirer", "channel", "text"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_paid_ratio",
                "Share of the sales due by the next deadline paid by now: today, the usual "
                "(median) learned day, and a slow usual day (the lower band).",
                labels=["acquirer", "channel", "band"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_later_seconds",
                "How much later than its usual day the acquirer is paying (0: not behind).",
                labels=["acquirer", "channel"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_due_sales",
                "Sales due by the next deadline and not yet credited.",
                labels=["acquirer", "channel"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_due_amount_minor",
                "Their amount, minor units of the currency.",
                labels=["acquirer", "channel", "currency"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_deadline_timestamp_seconds",
                "The next deadline these figures are about.", labels=["acquirer", "channel"]),
            GaugeMetricFamily(
                "settlewatch_early_warning_learned_deadlines",
                "Settle days the acquirer's baseline has learned (warnings wait for "
                "min_history of them after a worker start).", labels=["acquirer", "channel"]),
        )

    def advance(self) -> None:
        """Under `lock`."""
        if self.source is None:
            return
        recs = list(self.source())
        members = frozenset(id(r) for r in recs)
        if self._members is not None and members != self._members:
            self.warning.disrupt()
        self._members = members
        clocks = [c for r in recs if (c := getattr(r, "clock_ms", None)) is not None and c > 0]
        if clocks:
            self.warning.advance_to(min(clocks))

    def collect(self):
        flag, info, ratio, later, due_n, due_amt, deadline, history = self._families()
        with self.lock:
            self.advance()
            ew = self.warning
            bands = ew.bands()
            active = {(w.acquirer, w.channel): w for w in reversed(ew.active())}
            known = ew.known()
            # a restored baseline shows its learned days before any sale comes
            self._seen |= {(b.acquirer, b.channel) for b in bands} | set(known) | set(ew.learned())
            nxt: dict[tuple[str, str], int] = {}
            for b in bands:  # the earliest deadline still ahead, per acquirer and channel
                k = (b.acquirer, b.channel)
                nxt[k] = min(nxt.get(k, b.deadline_ms), b.deadline_ms)
            nan = float("nan")
            for k in sorted(self._seen):
                history.add_metric(list(k), ew.history_days(*k))
                w = active.get(k)
                flag.add_metric(list(k), 1 if w is not None else 0)
                if w is not None:
                    info.add_metric([*k, w.text], 1)
                due_by = w.deadline_ms if w is not None else nxt.get(k)
                of = [b for b in bands if (b.acquirer, b.channel) == k
                      and b.deadline_ms == due_by]
                # one deadline, several trade dates: their shares weighted by their sales;
                # no deadline ahead with a learned band: NaN (a gap on the board), due 0
                total = sum(b.sales for b in of)
                for band, attr in (("today", "paid_share"), ("usual", "expected_share"),
                                   ("slow", "low_share")):
                    ratio.add_metric([*k, band], sum(b.sales * getattr(b, attr) for b in of)
                                     / total if total else nan)
                later.add_metric(list(k), (w.later_ms if w is not None else
                                           max((b.later_ms for b in of), default=0)) / 1000)
                due_n.add_metric(list(k), sum(b.due_sales for b in of))
                amounts = dict.fromkeys(known.get(k, ()), 0)
                for b in of:
                    for cur, v in b.due_minor:
                        amounts[cur] = amounts.get(cur, 0) + v
                for cur, v in sorted(amounts.items()):
                    due_amt.add_metric([*k, cur], v)
                if due_by is not None:
                    deadline.add_metric(list(k), due_by / 1000)
        yield from (flag, info, ratio, later, due_n, due_amt, deadline, history)


class OpenItemsCollector:
    """Gauges read from the live reconcilers at scrape time (prometheus_client custom collector).

    The scrape may run on another thread than the one feeding the reconcilers; an iteration
    that races a mutation ("changed size during iteration") is retried, and after three failures
    the open-item families are left out of that scrape rather than reported wrong.
    """

    _RETRIES = 3

    def __init__(self, topics: Mapping[str, str], *, now: Callable[[], float] = time.time,
                 currencies: set[str] | None = None,
                 source: Callable[[], Iterable[ReconcilerView]] | None = None) -> None:
        self.topics = dict(topics)
        self.now = now
        self.source = source
        self._currencies = currencies if currencies is not None else set()
        self._seen_pairs: set[tuple[str, str]] = set()
        self._seen_missing: set[tuple[str, str]] = set()

    def describe(self):
        return list(self._families())

    def _families(self):
        return (
            GaugeMetricFamily(
                "settlewatch_open_unsettled_amount_minor",
                "Expected net amount of open (unsettled) items, minor units, by age since "
                "the first sale.", labels=["acquirer", "currency", "age"]),
            GaugeMetricFamily(
                "settlewatch_open_unsettled_items", "Open (unsettled) items, by age since the "
                "first sale.", labels=["acquirer", "currency", "age"]),
            GaugeMetricFamily(
                "settlewatch_open_missing_amount_minor",
                "Expected net amount of open items already reported missing, minor units.",
                labels=["acquirer", "currency"]),
            GaugeMetricFamily(
                "settlewatch_open_missing_items", "Open items already reported missing.",
                labels=["acquirer", "currency"]),
            GaugeMetricFamily(
                "settlewatch_watermark_lag_seconds",
                "Wall clock minus the input's watermark (the worst partition).",
                labels=["topic"]),
            GaugeMetricFamily(
                "settlewatch_event_clock_lag_seconds",
                "Wall clock minus the reconciler's event-time clock, which fires deadlines "
                "(the worst partition)."),
            GaugeMetricFamily(
                "settlewatch_reconcilers", "Live reconcilers (partitions assigned)."),
            GaugeMetricFamily(
                "settlewatch_currency_minor_unit_digits",
                "ISO 4217 minor-unit exponent of each currency seen (10^digits minor = 1 major).",
                labels=["currency"]),
        )

    def collect(self):
        unsettled_amt, unsettled_n, missing_amt, missing_n, wm_lag, clock_lag, n_rec, digits = \
            self._families()
        now_s = self.now()
        snapshot = self._snapshot(now_s) if self.source is not None else None
        if snapshot is not None:
            unsettled, missing, wm, clock, count = snapshot
            self._seen_pairs.update(unsettled)
            self._seen_missing.update(missing)
            for pair in sorted(self._seen_pairs):
                ages = unsettled.get(pair, {})
                for _, age in AGE_BUCKETS:
                    amount, n = ages.get(age, (0, 0))
                    unsettled_amt.add_metric([*pair, age], amount)
                    unsettled_n.add_metric([*pair, age], n)
            for pair in sorted(self._seen_missing):
                amount, n = missing.get(pair, (0, 0))
                missing_amt.add_metric(list(pair), amount)
                missing_n.add_metric(list(pair), n)
            for topic, lag in sorted(wm.items()):
                wm_lag.add_metric([topic], lag)
            if clock is not None:
                clock_lag.add_metric([], clock)
            n_rec.add_metric([], count)
            self._currencies.update(c for _, c in self._seen_pairs)
        for currency in sorted(self._currencies):
            digits.add_metric([currency], currency_minor_unit_digits(currency))
        yield from (unsettled_amt, unsettled_n, missing_amt, missing_n, wm_lag, clock_lag,
                    n_rec, digits)

    def _snapshot(self, now_s: float):
        for attempt in range(self._RETRIES):
            try:
                return self._read(now_s)
            except RuntimeError as exc:  # a dict changed size under us: read again
                last = exc
        log.warning("open-items collector skipped a scrape after %d tries: %s", self._RETRIES,
                    last)
        return None

    def _read(self, now_s: float):
        now_ms = now_s * 1000
        unsettled: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        missing: dict[tuple[str, str], tuple[int, int]] = {}
        oldest_wm: dict[str, int] = {}
        oldest_clock: int | None = None
        count = 0
        for rec in list(self.source()):
            count += 1
            for acquirer, currency, first_sale_ms, n_open, open_minor, n_missing, missing_minor \
                    in _open_counts(rec):
                age = _age_label((now_ms - first_sale_ms) / 1000)
                by_age = unsettled.setdefault((acquirer, currency), {})
                amount, n = by_age.get(age, (0, 0))
                by_age[age] = (amount + open_minor, n + n_open)
                if n_missing:
                    amount, n = missing.get((acquirer, currency), (0, 0))
                    missing[(acquirer, currency)] = (amount + missing_minor, n + n_missing)
            for source, wm in rec.watermarks().items():
                if wm is None or wm <= 0:
                    continue
                topic = self.topics.get(source, source)
                if topic not in oldest_wm or wm < oldest_wm[topic]:
                    oldest_wm[topic] = wm
            clock = getattr(rec, "clock_ms", None)
            # A clock at or below 0 has not started (the reconciler's NEVER before both inputs
            # are seen): reporting it as decades of lag would page for nothing.
            if clock is not None and clock > 0 and (oldest_clock is None or clock < oldest_clock):
                oldest_clock = clock
        wm_lag = {topic: now_s - wm / 1000 for topic, wm in oldest_wm.items()}
        clock_lag = None if oldest_clock is None else now_s - oldest_clock / 1000
        return unsettled, missing, wm_lag, clock_lag, count


def _read_while_running(read: Callable[[], Any], what: str) -> list | None:
    """``list(read())`` from the scrape thread, or None when the event loop changed the state
    while it was read (a torn read: skipped, the next scrape reads it again)."""
    try:
        return list(read())
    except (ValueError, RuntimeError, KeyError, IndexError):
        log.debug("%s changed while read; skipped", what)
        return None


def _open_counts(rec) -> Iterable[tuple[str, str, int, int, int, int, int]]:
    """(acquirer, currency, first sale ms, open n, open amount, missing n, missing amount):
    from the core's counters (`open_summary`, by minute of the first sale) when the reconciler
    keeps them, else one row per item of `open_items()`."""
    summary = getattr(rec, "open_summary", None)
    if summary is not None:
        rows = _read_while_running(lambda: summary().items(), "open-items summary")
        if rows is None:
            return
        for (acquirer, currency, minute), (n, amount, n_missing, missing_minor) in rows:
            yield acquirer, currency, minute * 60_000, n, amount, n_missing, missing_minor
        return
    for acquirer, currency, first_sale_ms, expected_minor, is_missing in rec.open_items():
        yield (acquirer, currency, first_sale_ms, 1, expected_minor, int(is_missing),
               expected_minor if is_missing else 0)


def _age_label(age_s: float) -> str:
    for upper, label in AGE_BUCKETS:
        if age_s < upper:
            return label
    return AGE_BUCKETS[-1][1]


class AgingCollector:
    """Open findings by SLA tier, read at scrape time from each reconciler's aging counters
    (`Reconciler.aging_summary`, streams.core.aging): a scrape costs the counters' keys, never
    a pass over the open findings. Each acquirer (and acquirer, currency) seen keeps a series
    per tier, at 0 once its findings close, so an alert on a tier resolves instead of
    vanishing. A reconciler built without aging contributes nothing."""

    def __init__(self, source: Callable[[], Iterable[Any]] | None = None) -> None:
        self.source = source
        self._tiers: tuple[str, ...] = ()
        self._dues: tuple[str, ...] = ()
        self._acquirers: set[str] = set()
        self._pairs: set[tuple[str, str]] = set()

    def describe(self):
        return list(self._families())

    @staticmethod
    def _families():
        return (
            GaugeMetricFamily(
                "settlewatch_open_findings",
                "Open findings (missing until credited; underpaid, overpaid, duplicate, "
                "orphan and file_incomplete for aging.horizon), by SLA tier of amount at "
                "stake and business-day age.", labels=["acquirer", "tier"]),
            GaugeMetricFamily(
                "settlewatch_open_findings_amount_minor",
                "Amount at stake of open findings, minor units, by SLA tier.",
                labels=["acquirer", "currency", "tier"]),
            GaugeMetricFamily(
                "settlewatch_aging_tier_info",
                "1 per configured SLA tier; rank 0 is the most severe, due the time ops has.",
                labels=["tier", "rank", "due"]),
        )

    def collect(self):
        count, amount, info = self._families()
        by_acquirer: dict[tuple[str, str], int] = {}
        by_pair: dict[tuple[str, str, str], int] = {}
        for rec in list(self.source()) if self.source is not None else ():
            book = getattr(rec, "aging", None)
            if book is None:
                continue
            if not self._tiers:
                self._tiers = book.tiers.names
                self._dues = tuple(t.due_text for t in book.tiers.rules.tiers)
            rows = _read_while_running(lambda: rec.aging_summary().items(), "aging counters")
            if rows is None:
                continue
            for (acquirer, currency, tier), (n, minor) in rows:
                by_acquirer[(acquirer, tier)] = by_acquirer.get((acquirer, tier), 0) + n
                k = (acquirer, currency, tier)
                by_pair[k] = by_pair.get(k, 0) + minor
                self._acquirers.add(acquirer)
                self._pairs.add((acquirer, currency))
        for acquirer in sorted(self._acquirers):
            for tier in self._tiers:
                count.add_metric([acquirer, tier], by_acquirer.get((acquirer, tier), 0))
        for acquirer, currency in sorted(self._pairs):
            for tier in self._tiers:
                amount.add_metric([acquirer, currency, tier],
                                  by_pair.get((acquirer, currency, tier), 0))
        for rank, (tier, due) in enumerate(zip(self._tiers, self._dues)):
            info.add_metric([tier, str(rank), due], 1)
        yield from (count, amount, info)


class SettlementFilesCollector:
    """``settlewatch_settlement_files_overdue{acquirer, settle_date}`` at scrape time: per
    acquirer and settle date, the merchants whose settlement file (a contract v1.1
    settlement_file_complete marker) was expected by the reconciler's clock and has not come.

    Read from counters the core keeps (``Reconciler.files_overdue``: expected and arrived per
    acquirer and date), never from a scan of the state. Labels stay bounded: only acquirers
    with a ``[[settlement_files]]`` entry, only dates still within ``redelivery_window``, and
    only values above 0 (the series goes away, and the alert resolves, when the file comes).
    """

    def __init__(self, source: Callable[[], Iterable[Any]] | None = None) -> None:
        self.source = source

    def describe(self):
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "settlewatch_settlement_files_overdue",
            "Merchants whose settlement file (settlement_file_complete marker) from the acquirer "
            "for the settle date was expected by now and has not arrived.",
            labels=["acquirer", "settle_date"])

    def collect(self):
        family = self._family()
        totals: dict[tuple[str, int], int] = {}
        if self.source is not None:
            for rec in list(self.source()):
                overdue = getattr(rec, "files_overdue", None)
                if overdue is None:
                    continue
                rows = _read_while_running(lambda: overdue().items(),
                                           "settlement-file counters")
                if rows is None:
                    continue
                for key, n in rows:
                    totals[key] = totals.get(key, 0) + n
        for (acquirer, day), n in sorted(totals.items()):
            family.add_metric([acquirer, date.fromordinal(day).isoformat()], n)
        yield family
