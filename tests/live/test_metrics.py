"""streams.live.metrics against a fresh CollectorRegistry each time (no global state)."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from streams.core.events import Finding, FindingKind, Status
from streams.core.reconcile import NEVER, Reconciler
from streams.live.metrics import AGE_BUCKETS, Metrics, amount_at_stake
from tests.core.builders import DAY, HOUR, MIN, credit, ms, net, policy, sale

NOW = 1_800_000_000.0  # the wall clock the tests inject (2027-01-15)
NOW_MS = int(NOW * 1000)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(registry):
    return Metrics.create(registry, now=lambda: NOW, version="test", worker="w1")


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def finding(kind, *, status=Status.OPEN, acquirer="acq-a", currency="CNY", expected=0,
            received=0) -> Finding:
    return Finding(
        anomaly_id=f"{kind}-{status}", kind=kind, status=status, merchant_id="m1",
        acquirer=acquirer, subject="a1", auth_ids=("a1",), credit_ids=(), expected_minor=expected,
        received_minor=received, difference_minor=received - expected, currency=currency,
        deadline_ms=None, event_time_ms=0, detected_at_ms=0)


class Partition:
    """What the scrape-time collector reads from a reconciler: a clock, watermarks, open items."""

    def __init__(self, items, *, clock_ms=NEVER, watermarks=None):
        self.items = items
        self.clock_ms = clock_ms
        self._watermarks = watermarks or {"authorisations": None, "settlements": None}

    def watermarks(self):
        return self._watermarks

    def open_items(self):
        yield from self.items


# -- the worker's calls ---------------------------------------------------------------------


def test_input_topics_start_at_zero_with_the_start_time_as_last_read(registry, metrics):
    for topic in ("pos.authorisations", "pos.settlements"):
        assert value(registry, "settlewatch_events_read_total", topic=topic) == 0
        assert value(registry, "settlewatch_last_read_timestamp_seconds", topic=topic) == NOW
        assert value(registry, "settlewatch_late_data_total", topic=topic) == 0
    assert value(registry, "settlewatch_worker_up") == 0
    assert value(registry, "settlewatch_worker_info", version="test", worker="w1") == 1


def test_reading_a_record_counts_it_and_stamps_the_wall_clock(registry):
    clock = iter([100.0, 205.5, 206.0])
    m = Metrics.create(registry, now=lambda: next(clock))
    m.event_read("pos.settlements")
    m.event_read("pos.settlements")
    assert value(registry, "settlewatch_events_read_total", topic="pos.settlements") == 2
    assert value(registry, "settlewatch_last_read_timestamp_seconds",
                 topic="pos.settlements") == 206.0


def test_rejected_records_are_counted_by_topic_and_reason(registry, metrics):
    metrics.event_rejected("pos.authorisations", "future_timestamp")
    metrics.event_rejected("pos.authorisations", "future_timestamp")
    metrics.event_rejected("pos.authorisations", "full_pan")
    assert value(registry, "settlewatch_events_rejected_total", topic="pos.authorisations",
                 reason="future_timestamp") == 2
    assert value(registry, "settlewatch_events_rejected_total", topic="pos.authorisations",
                 reason="full_pan") == 1


@pytest.mark.parametrize("f, at_stake", [
    (finding(FindingKind.MISSING, expected=9940), 9940),
    (finding(FindingKind.UNDERPAID, expected=9940, received=9900), 40),
    (finding(FindingKind.OVERPAID, expected=9940, received=10000), 60),
    (finding(FindingKind.DUPLICATE, expected=9940, received=9940), 9940),
    (finding(FindingKind.ORPHAN, received=5000), 5000),
    (finding(FindingKind.LATE, expected=9940, received=9940), 9940),
])
def test_each_kind_puts_its_own_amount_at_stake(registry, metrics, f, at_stake):
    assert amount_at_stake(f) == at_stake
    metrics.findings_published([f])
    assert value(registry, "settlewatch_findings_total", kind=str(f.kind), acquirer="acq-a",
                 status="open") == 1
    assert value(registry, "settlewatch_findings_amount_minor_total", kind=str(f.kind),
                 acquirer="acq-a", currency="CNY", status="open") == at_stake


def test_a_resolved_missing_finding_is_counted_apart_from_the_open_one(registry, metrics):
    metrics.findings_published([finding(FindingKind.MISSING, expected=9940),
                                finding(FindingKind.MISSING, expected=9940,
                                        status=Status.RESOLVED)])
    for status in ("open", "resolved"):
        assert value(registry, "settlewatch_findings_total", kind="missing", acquirer="acq-a",
                     status=status) == 1
        assert value(registry, "settlewatch_findings_amount_minor_total", kind="missing",
                     acquirer="acq-a", currency="CNY", status=status) == 9940


def test_an_acquirers_other_kinds_exist_at_zero_once_it_is_seen(registry, metrics):
    # rate() and increase() cannot see the first step of a series born at 1.
    metrics.findings_published([finding(FindingKind.LATE, expected=100, received=100)])
    for kind in FindingKind:
        expected = 1 if kind is FindingKind.LATE else 0
        assert value(registry, "settlewatch_findings_total", kind=str(kind), acquirer="acq-a",
                     status="open") == expected
        assert value(registry, "settlewatch_findings_amount_minor_total", kind=str(kind),
                     acquirer="acq-a", currency="CNY", status="open") == expected * 100


def test_a_batch_spreads_its_processing_time_over_its_events(registry, metrics):
    metrics.observe_processing(0.003, events=3)
    metrics.observe_processing(0.5)
    metrics.observe_processing(1.0, events=0)  # nothing processed: nothing observed
    assert value(registry, "settlewatch_event_processing_seconds_count") == 4
    assert value(registry, "settlewatch_event_processing_seconds_sum") == pytest.approx(0.503)
    assert value(registry, "settlewatch_event_processing_seconds_bucket", le="0.001") == 3


def test_consumer_lag_is_per_partition_and_a_revoked_partition_drops_out(registry, metrics):
    metrics.set_consumer_lag("pos.settlements", 0, 120)
    metrics.set_consumer_lag("pos.settlements", 1, 7)
    metrics.set_consumer_lag("pos.settlements", 1, -3)  # end offset read before the position
    metrics.remove_consumer_lag("pos.settlements", 0)
    metrics.remove_consumer_lag("pos.settlements", 5)  # never set: not an error
    assert value(registry, "settlewatch_consumer_lag_messages", topic="pos.settlements",
                 partition="0") is None
    assert value(registry, "settlewatch_consumer_lag_messages", topic="pos.settlements",
                 partition="1") == 0


def test_the_last_event_time_keeps_the_newest_event_read(registry, metrics):
    metrics.last_event("pos.authorisations", 1_700_000_100_000)
    metrics.last_event("pos.authorisations", 1_700_000_050_000)  # out of order
    assert value(registry, "settlewatch_last_event_timestamp_seconds",
                 topic="pos.authorisations") == 1_700_000_100


def test_the_worker_says_when_it_consumes(registry, metrics):
    metrics.set_up(True)
    assert value(registry, "settlewatch_worker_up") == 1
    metrics.set_up(False)
    assert value(registry, "settlewatch_worker_up") == 0


# -- the reconciler's observer --------------------------------------------------------------


def test_a_settlement_observes_its_delay_and_credited_amount(registry, metrics):
    obs = metrics.observer()
    obs.on_settled("acq-a", "CNY", delay_ms=DAY, amount_minor=9940)
    obs.on_settled("acq-a", "CNY", delay_ms=-5_000, amount_minor=100)  # clock skew: 0 s
    assert value(registry, "settlewatch_settlement_delay_seconds_count", acquirer="acq-a",
                 channel="") == 2
    assert value(registry, "settlewatch_settlement_delay_seconds_sum", acquirer="acq-a",
                 channel="") == 86400
    assert value(registry, "settlewatch_settlement_delay_seconds_bucket", acquirer="acq-a",
                 channel="", le="60.0") == 1
    assert value(registry, "settlewatch_settled_amount_minor_total", acquirer="acq-a",
                 currency="CNY") == 10040


def test_closed_items_count_as_matched_or_unmatched(registry, metrics):
    obs = metrics.observer()
    obs.on_item_closed("acq-a", True)
    obs.on_item_closed("acq-a", True)
    obs.on_item_closed("acq-a", False, channel="qr")
    assert value(registry, "settlewatch_items_closed_total", acquirer="acq-a", channel="",
                 outcome="matched") == 2
    assert value(registry, "settlewatch_items_closed_total", acquirer="acq-a", channel="qr",
                 outcome="unmatched") == 1


def test_late_data_and_redeliveries_are_labelled_with_the_kafka_topic(registry):
    m = Metrics.create(registry, topics={"authorisations": "prod.auth",
                                         "settlements": "prod.credits"})
    obs = m.observer()
    obs.on_late_data("authorisations")
    obs.on_redelivery("settlements")
    obs.on_redelivery("settlements")
    assert value(registry, "settlewatch_late_data_total", topic="prod.auth") == 1
    assert value(registry, "settlewatch_redeliveries_total", topic="prod.credits") == 2


# -- the scrape-time collector --------------------------------------------------------------


def test_open_items_are_summed_by_acquirer_currency_and_age(registry, metrics):
    metrics.watch(lambda: [
        Partition([
            ("acq-a", "CNY", NOW_MS - 10 * MIN, 1000, False),
            ("acq-a", "CNY", NOW_MS - 59 * MIN, 500, False),
            ("acq-a", "CNY", NOW_MS - 2 * HOUR, 300, False),
            ("acq-a", "CNY", NOW_MS - 2 * DAY, 7000, True),
            ("acq-a", "CNY", NOW_MS - 4 * DAY, 9000, True),
        ]),
        Partition([("acq-a", "CNY", NOW_MS - 30 * MIN, 200, False),
                   ("acq-b", "JPY", NOW_MS - 12 * HOUR, 1200, True)]),
    ])
    expected = {("acq-a", "CNY", "0-1h"): (1700, 3), ("acq-a", "CNY", "1-6h"): (300, 1),
                ("acq-a", "CNY", "6-24h"): (0, 0), ("acq-a", "CNY", "1-3d"): (7000, 1),
                ("acq-a", "CNY", "3d+"): (9000, 1), ("acq-b", "JPY", "6-24h"): (1200, 1),
                ("acq-b", "JPY", "0-1h"): (0, 0)}
    for (acq, cur, age), (amount, n) in expected.items():
        labels = {"acquirer": acq, "currency": cur, "age": age}
        assert value(registry, "settlewatch_open_unsettled_amount_minor", **labels) == amount
        assert value(registry, "settlewatch_open_unsettled_items", **labels) == n
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-a",
                 currency="CNY") == 16000
    assert value(registry, "settlewatch_open_missing_items", acquirer="acq-a",
                 currency="CNY") == 2
    assert value(registry, "settlewatch_open_missing_items", acquirer="acq-b",
                 currency="JPY") == 1
    assert value(registry, "settlewatch_reconcilers") == 2
    assert value(registry, "settlewatch_currency_minor_unit_digits", currency="JPY") == 0
    assert value(registry, "settlewatch_currency_minor_unit_digits", currency="CNY") == 2
    assert [label for _, label in AGE_BUCKETS] == ["0-1h", "1-6h", "6-24h", "1-3d", "3d+"]


def test_a_pair_that_had_open_items_reads_zero_once_they_are_settled(registry, metrics):
    partition = Partition([("acq-a", "CNY", NOW_MS - 2 * DAY, 7000, True)])
    metrics.watch(lambda: [partition])
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-a",
                 currency="CNY") == 7000
    partition.items = []
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-a",
                 currency="CNY") == 0
    assert value(registry, "settlewatch_open_unsettled_items", acquirer="acq-a",
                 currency="CNY", age="1-3d") == 0


def test_watermark_and_clock_lag_report_the_worst_partition(registry, metrics):
    metrics.watch(lambda: [
        Partition([], clock_ms=NOW_MS - 20 * MIN,
                  watermarks={"authorisations": NOW_MS - 15 * MIN,
                              "settlements": NOW_MS - 3 * HOUR}),
        Partition([], clock_ms=NOW_MS - 45 * MIN,
                  watermarks={"authorisations": NOW_MS - 45 * MIN, "settlements": None}),
        Partition([]),  # nothing seen yet: clock NEVER, no watermarks; reports no lag
    ])
    assert value(registry, "settlewatch_watermark_lag_seconds",
                 topic="pos.authorisations") == 45 * 60
    assert value(registry, "settlewatch_watermark_lag_seconds",
                 topic="pos.settlements") == 3 * 3600
    assert value(registry, "settlewatch_event_clock_lag_seconds") == 45 * 60


def test_a_worker_that_has_seen_nothing_reports_no_clock_lag(registry, metrics):
    metrics.watch(lambda: [Partition([])])
    assert value(registry, "settlewatch_event_clock_lag_seconds") is None
    assert value(registry, "settlewatch_watermark_lag_seconds",
                 topic="pos.authorisations") is None
    assert value(registry, "settlewatch_reconcilers") == 1


class Racing(Partition):
    """Raises like a dict mutated by the consumer while the scrape thread iterates it."""

    def __init__(self, items, failures):
        super().__init__(items)
        self.failures = failures

    def open_items(self):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("dictionary changed size during iteration")
        yield from self.items


def test_a_scrape_that_races_the_consumer_reads_again(registry, metrics):
    racing = Racing([("acq-a", "CNY", NOW_MS, 500, True)], failures=2)
    metrics.watch(lambda: [racing])
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-a",
                 currency="CNY") == 500


def test_a_scrape_that_keeps_racing_leaves_the_open_items_out(registry, metrics):
    racing = Racing([("acq-a", "CNY", NOW_MS, 500, True)], failures=3)
    metrics.watch(lambda: [racing])
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-a",
                 currency="CNY") is None
    # ...and the rest of the exposition is still served.
    assert value(registry, "settlewatch_events_read_total", topic="pos.settlements") == 0


# -- with the real reconciler ----------------------------------------------------------------


def test_the_reconciler_reports_through_the_observer_and_the_collector(registry):
    t0 = ms("2026-10-09 10:00")
    m = Metrics.create(registry, now=lambda: (t0 + 3 * HOUR) / 1000)
    rec = Reconciler(policy(), observer=m.observer())
    m.watch(lambda: [rec])
    rec.on_event(sale("a1", t0, 10_000))
    rec.on_event(sale("a2", t0 + MIN, 20_000))
    rec.on_event(credit("c1", t0 + 10 * MIN, net(10_000), auth_ids=("a1",)))
    m.findings_published(rec.advance_to(t0 + 2 * HOUR))  # both +30m deadlines have passed

    assert value(registry, "settlewatch_settlement_delay_seconds_count", acquirer="acq-fast",
                 channel="credit") == 1
    assert value(registry, "settlewatch_settlement_delay_seconds_sum", acquirer="acq-fast",
                 channel="credit") == 600
    assert value(registry, "settlewatch_items_closed_total", acquirer="acq-fast", channel="credit",
                 outcome="matched") == 1
    assert value(registry, "settlewatch_items_closed_total", acquirer="acq-fast", channel="credit",
                 outcome="unmatched") == 1
    assert value(registry, "settlewatch_findings_total", kind="missing", acquirer="acq-fast",
                 status="open") == 1
    assert value(registry, "settlewatch_open_missing_amount_minor", acquirer="acq-fast",
                 currency="CNY") == net(20_000)
    assert value(registry, "settlewatch_open_unsettled_items", acquirer="acq-fast",
                 currency="CNY", age="1-6h") == 1
    assert value(registry, "settlewatch_event_clock_lag_seconds") == 3600


def test_an_acquirers_series_exist_at_zero_once_a_sale_opens_an_item(registry):
    # increase() cannot see a series born at its first value: the zero must be scraped first
    t0 = ms("2026-10-09 10:00")
    m = Metrics.create(registry, now=lambda: t0 / 1000)
    rec = Reconciler(policy(), observer=m.observer())
    rec.on_event(sale("a1", t0, 10_000))
    rec.advance_to(t0 + MIN)  # released, not yet due
    for outcome in ("matched", "unmatched"):
        assert value(registry, "settlewatch_items_closed_total", acquirer="acq-fast",
                     channel="credit", outcome=outcome) == 0
    assert value(registry, "settlewatch_findings_total", kind="missing", acquirer="acq-fast",
                 status="open") == 0


def test_missing_items_dropped_at_the_horizon_are_counted_by_acquirer(registry, metrics):
    obs = metrics.observer()
    obs.on_missing_expired("acq-a", "CNY", 12_345)
    obs.on_missing_expired("acq-a", "CNY", 5)
    assert value(registry, "settlewatch_missing_expired_total", acquirer="acq-a",
                 currency="CNY") == 2
    assert value(registry, "settlewatch_missing_expired_amount_minor_total", acquirer="acq-a",
                 currency="CNY") == 12_350


def test_a_settlement_file_not_arrived_by_its_expected_time_is_a_gauge_by_acquirer_and_date(
        registry):
    from datetime import date

    from streams.core.events import FileComplete
    p = policy(settlement_files=[{"acquirer": "acq-fast", "expected": "T+0 11:00"}])
    t0 = ms("2026-10-09 10:00")
    m = Metrics.create(registry, now=lambda: t0 / 1000)
    recs = [Reconciler(p), Reconciler(p)]  # two partitions: the gauge sums them
    m.watch(lambda: recs)
    recs[0].on_event(sale("a1", t0, 10_000))
    recs[1].on_event(sale("a2", t0, 10_000, merchant="m2"))
    for r in recs:
        r.advance_to(t0 + 59 * MIN)
    labels = {"acquirer": "acq-fast", "settle_date": "2026-10-09"}
    assert value(registry, "settlewatch_settlement_files_overdue", **labels) is None
    for r in recs:
        r.advance_to(t0 + 61 * MIN)
    assert value(registry, "settlewatch_settlement_files_overdue", **labels) == 2
    recs[1].on_event(FileComplete("F2", "m2", "acq-fast", date(2026, 10, 9).toordinal(), 0, 0,
                                  "CNY", t0 + 62 * MIN))
    recs[1].advance_to(t0 + 63 * MIN)
    assert value(registry, "settlewatch_settlement_files_overdue", **labels) == 1


def test_a_file_incomplete_puts_the_difference_at_stake():
    f = Finding("id", FindingKind.FILE_INCOMPLETE, Status.OPEN, "m1", "acq", "F1", (), (),
                30_000, 20_000, -10_000, "CNY", None, 0, 0, expected_count=3, received_count=2)
    assert amount_at_stake(f) == 10_000
