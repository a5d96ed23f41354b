"""Open findings by SLA tier on the metrics page: settlewatch_open_findings{acquirer,tier} and
settlewatch_open_findings_amount_minor{acquirer,currency,tier}, read at scrape time from real
reconcilers' aging counters (fresh registry each time)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.core.reconcile import Reconciler
from streams.live.metrics import Metrics
from tests.core.builders import credit, ms, net, policy, sale
from tests.live.test_metrics import value

NOW = 1_800_000_000.0
P = policy()


def scrape(reconcilers):
    registry = CollectorRegistry()
    m = Metrics.create(registry, now=lambda: NOW, version="test", worker="w1")
    m.watch(lambda: reconcilers)
    return registry, m


def missing(r: Reconciler, auth_id: str, amount: int, acquirer: str = "acq-fast",
            currency: str = "CNY", at: str = "2026-11-16 10:00") -> None:
    r.on_event(sale(auth_id, at, amount, acquirer=acquirer, currency=currency))


def test_open_findings_are_counted_by_acquirer_and_tier_across_partitions():
    one, two = Reconciler(P, aging=True), Reconciler(P, aging=True)
    missing(one, "A1", 20_000_000)  # 200,000.00 at stake: critical
    missing(two, "A2", 50_000)  # 500.00: low on its first day
    missing(two, "A3", 60_000, acquirer="acq-other")
    for r in (one, two):
        r.advance_to(ms("2026-11-16 11:00"))
    registry, _ = scrape([one, two])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast",
                 tier="critical") == 1
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast", tier="low") == 1
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast", tier="high") == 0
    assert value(registry, "settlewatch_open_findings", acquirer="acq-other", tier="low") == 1
    assert value(registry, "settlewatch_open_findings_amount_minor", acquirer="acq-fast",
                 currency="CNY", tier="critical") == net(20_000_000)
    assert value(registry, "settlewatch_open_findings_amount_minor", acquirer="acq-fast",
                 currency="CNY", tier="low") == net(50_000)


def test_the_tiers_follow_the_reconcilers_clock_not_the_wall_clock():
    r = Reconciler(P, aging=True)
    missing(r, "A1", 50_000, at="2026-11-13 10:00")  # a Friday
    r.advance_to(ms("2026-11-15 12:00"))  # Sunday: still 0 business days old
    registry, _ = scrape([r])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast", tier="low") == 1
    r.advance_to(ms("2026-11-16 00:00"))  # Monday
    registry, _ = scrape([r])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast", tier="low") == 0
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast", tier="medium") == 1


def test_a_tier_reads_zero_once_its_finding_is_resolved():
    r = Reconciler(P, aging=True)
    missing(r, "A1", 20_000_000)
    r.advance_to(ms("2026-11-16 11:00"))
    registry, m = scrape([r])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast",
                 tier="critical") == 1
    r.on_event(credit("C1", "2026-11-16 11:30", net(20_000_000), auth_ids=("A1",)))
    r.advance_to(ms("2026-11-16 12:00"))
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast",
                 tier="critical") == 0
    assert value(registry, "settlewatch_open_findings_amount_minor", acquirer="acq-fast",
                 currency="CNY", tier="critical") == 0


def test_each_configured_tier_is_listed_with_its_rank_and_due_time():
    r = Reconciler(P, aging=True)
    registry, _ = scrape([r])
    assert value(registry, "settlewatch_aging_tier_info", tier="critical", rank="0",
                 due="4h") == 1
    assert value(registry, "settlewatch_aging_tier_info", tier="high", rank="1",
                 due="1 business day") == 1
    assert value(registry, "settlewatch_aging_tier_info", tier="low", rank="3",
                 due="5 business days") == 1


def test_a_reconciler_without_aging_adds_no_tier_series():
    r = Reconciler(P)
    missing(r, "A1", 20_000_000)
    r.advance_to(ms("2026-11-16 11:00"))
    registry, _ = scrape([r])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast",
                 tier="critical") is None


def test_the_live_partitions_reconciler_keeps_the_aging_book():
    from streams.live.partition import LivePartition
    lp = LivePartition(0, P)
    assert lp.reconciler.aging is not None


def test_a_restored_partition_reports_the_same_tiers_as_before_its_restart():
    from streams import wire
    from streams.live.partition import AUTH, SETTLEMENT, LivePartition, encode_tick
    from tests.live.test_live import as_table

    wall = ms("2026-11-17 12:00")
    lp = LivePartition(0, P)
    events = [sale("a1", "2026-11-16 10:00", 20_000_000), sale("a2", "2026-11-16 10:05", 50_000),
              credit("c9", "2026-11-16 10:06", 777, auth_ids=("nobody",))]
    for offset, e in enumerate(events):
        kind = SETTLEMENT if type(e).__name__ == "Credit" else AUTH
        assert lp.on_input(kind, wire.event_to_json(e), e.event_time_ms, offset) is None
    assert lp.on_tick(encode_tick(wall))
    table: dict = {}
    as_table(lp.flush(wall), table)
    before = lp.reconciler.aging_summary()
    assert sum(n for n, _ in before.values()) == 3  # two missing and an orphan
    back, _ = LivePartition.restore(0, P, entries=table.items(), published=(), now_ms=wall + 1)
    assert back.reconciler.aging_summary() == before
    assert back.reconciler.aging.entries == lp.reconciler.aging.entries
    registry, _ = scrape([back.reconciler])
    assert value(registry, "settlewatch_open_findings", acquirer="acq-fast",
                 tier="critical") == 1
