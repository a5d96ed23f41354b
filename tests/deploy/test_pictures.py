"""`settlewatch pictures` against a real Prometheus (Debian's, started through
deploy/local/monitoring.sh on free ports) scraping a real metrics server: the worker's
`Metrics`, fed by the pure reconciler running simulated traffic with one bad acquirer for about
half a minute. Every panel of every dashboard becomes a non-empty PNG, and the picture shows
the bad acquirer (made by the simulator's per-acquirer fault rates, tests/sim/test_faults.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler
from streams.live.metrics import Metrics
from streams.ops import pictures
from streams.ops.smtpsink import SmtpSink
from streams.sim.simulator import SimConfig, Simulation, parse_faults

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
BAD = "acq-d0"


@pytest.mark.integration
def test_every_panel_is_drawn_from_a_real_prometheus_and_shows_the_bad_acquirer(tmp_path):
    try:
        from monitoring_helpers import MonitoringStack
    except ModuleNotFoundError:
        import sys
        sys.path.insert(0, str(ROOT / "tests" / "integration"))
        from monitoring_helpers import MonitoringStack

    registry = CollectorRegistry()
    metrics = Metrics.create(registry, version="test", worker="pictures-test")
    policy = default_policy()
    rec = Reconciler(policy, observer=metrics.observer())
    metrics.watch(lambda: [rec])
    server, thread = metrics.serve(0)
    port = server.server_port
    now = int(time.time() * 1000)
    cfg = SimConfig(start_ms=now - 40 * HOUR, end_ms=now - 10 * 60_000, merchants=300,
                    sales_per_second=0.5, seed=5, jitter_ms=60_000,
                    faults=parse_faults(f"late=1%,missing=1%,duplicate=1%,underpaid=1%,"
                                        f"{BAD}:missing=40%"))
    events = list(Simulation(cfg, policy).events())
    with SmtpSink(tmp_path / "mail") as sink:
        stack = MonitoringStack(tmp_path / "run", [f"127.0.0.1:{port}"], sink,
                                env={"SW_SCRAPE_INTERVAL": "1s"}).up()
        try:
            metrics.set_up(True)
            start = time.time()
            chunks = 12
            size = len(events) // chunks + 1
            for i in range(chunks):  # ~30 s of wall clock, a scrape every second
                for e in events[i * size:(i + 1) * size]:
                    metrics.event_read("pos.settlements" if type(e).__name__ == "Credit"
                                       else "pos.authorisations")
                    metrics.findings_published(rec.on_event(e))
                if i == chunks - 1:
                    metrics.findings_published(rec.advance_to(now))
                time.sleep(2.5)
            time.sleep(3)
            end = time.time()
            prom = pictures.Prometheus(f"http://127.0.0.1:{stack.prometheus_port}")
            boards = pictures.draw_all(prom.url, start, end, tmp_path / "pictures", scrape_s=1)
            ops = json.loads((ROOT / "grafana/dashboards/ops.json").read_text())
            drawn = pictures.fetch(prom, ops, start, end, scrape_s=1)
        finally:
            stack.down()
            server.shutdown()
            server.server_close()
    assert set(boards) == {"ops", "pipeline"}
    for name, board in boards.items():
        assert board.stat().st_size > 50_000, board
        panels = sorted((tmp_path / "pictures" / name).glob("*.png"))
        d = json.loads((ROOT / f"grafana/dashboards/{name}.json").read_text())
        want = [p for p in d["panels"] if p["type"] != "row"]
        assert len(panels) == len(want)
        assert all(p.stat().st_size > 3_000 for p in panels)
    by_title = {d.panel["title"]: d for d in drawn}
    findings = by_title["Findings by kind (per hour)"].targets[0][1]
    assert {s.labels["kind"] for s in findings} >= {"missing", "duplicate"}
    # The bad acquirer is the one with the most missing money, on the board as in the data.
    missing = by_title["Open missing amount by acquirer (major units)"].targets[0][1]
    worst = max(missing, key=lambda s: s.last() or 0)
    assert worst.labels["acquirer"] == BAD


def test_the_command_wants_a_window():
    from click.testing import CliRunner
    result = CliRunner().invoke(pictures.pictures_command, [])
    assert result.exit_code == 2 and "give --last, --start or --demo" in result.output


def test_grafana_variables_are_replaced_as_with_all_selected():
    expr = ('sum(increase(x{acquirer=~"$acquirer", channel=~"$channel"}[$__range])) / '
            'rate(y{instance=~"$instance"}[$__rate_interval])')
    assert pictures.grafana_expr(expr, range_s=420.4, rate_interval_s=60) == (
        'sum(increase(x{acquirer=~".*", channel=~".*"}[420s])) / rate(y{instance=~".*"}[60s])')
