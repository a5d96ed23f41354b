"""The aging view at the end of a replay: summary.json "aging" and report.html's table."""
from __future__ import annotations

from pathlib import Path

import orjson

from streams import wire
from streams.audit.files import merge_aging_summaries, replay_files
from streams.audit.report import render, write_report
from streams.core.aging import open_rows
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed
from streams.wire import event_to_json
from tests.audit.test_report import page_of
from tests.core.builders import credit, ms, net, policy, sale

REPO = Path(__file__).resolve().parents[2]
P = policy()


def write_inputs(tmp_path: Path, events) -> list[str]:
    auths, credits = tmp_path / "auths.jsonl", tmp_path / "credits.jsonl"
    auths.write_bytes(b"\n".join(event_to_json(e) for e in events
                                 if type(e).__name__ != "Credit") + b"\n")
    credits.write_bytes(b"\n".join(event_to_json(e) for e in events
                                   if type(e).__name__ == "Credit") + b"\n")
    return [str(auths), str(credits)]


EVENTS = [
    sale("A1", "2026-11-13 10:00", 20_000_000),  # missing from Friday, 200,000.00: critical
    sale("A2", "2026-11-13 10:00", 50_000),  # missing from Friday, small: medium on Monday
    sale("A3", "2026-11-16 09:00", 50_000),  # missing from Monday: low
    sale("A4", "2026-11-16 09:00", 30_000),
    credit("C4", "2026-11-16 09:10", net(30_000), auth_ids=("A4",)),  # paid: not aged
    sale("A5", "2026-11-16 09:00", 30_000),
    credit("C5", "2026-11-16 12:00", net(30_000), auth_ids=("A5",)),  # late: not aged
]


def test_summary_json_has_the_open_findings_by_tier_and_acquirer_at_the_final_clock(tmp_path):
    until = ms("2026-11-16 18:00")
    replay_files(P, write_inputs(tmp_path, EVENTS), str(tmp_path / "out"), until,
                 read_ms=until + 3_600_000)
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    doc = summary["aging"]
    assert doc["as_of"] == wire.format_time_ms(until)
    assert [t["name"] for t in doc["tiers"]] == ["critical", "high", "medium", "low"]
    # Friday's findings are 1 business day old on Monday; the critical one was due Friday
    # 14:30 (4h after its close) and is past due
    assert doc["open"] == [
        {"tier": "critical", "acquirer": "acq-fast", "currency": "CNY", "findings": 1,
         "amount_minor": net(20_000_000), "overdue": 1, "oldest_age_days": 1},
        {"tier": "medium", "acquirer": "acq-fast", "currency": "CNY", "findings": 1,
         "amount_minor": net(50_000), "overdue": 0, "oldest_age_days": 1},
        {"tier": "low", "acquirer": "acq-fast", "currency": "CNY", "findings": 1,
         "amount_minor": net(50_000), "overdue": 0, "oldest_age_days": 0},
    ]


def test_report_html_shows_the_aging_table_with_due_times_and_amounts(tmp_path):
    until = ms("2026-11-16 18:00")
    out = tmp_path / "out"
    replay_files(P, write_inputs(tmp_path, EVENTS), str(out), until, read_ms=until + 3_600_000)
    p = page_of(write_report(out).read_text())
    assert "aging" in p.ids
    assert p.row("critical") == ["critical", "4h", "acq-fast", "CNY", "1",
                                 f"{net(20_000_000) / 100:,.2f} CNY", "1", "1"]
    assert p.row("low")[:6] == ["low", "5 business days", "acq-fast", "CNY", "1",
                               f"{net(50_000) / 100:,.2f} CNY"]


def test_a_replay_with_nothing_open_says_so():
    doc = {"as_of": "2026-11-16T10:00:00Z", "tiers": [{"name": "low", "due": "1d"}], "open": []}
    p = page_of(render({"until": "x", "aging": doc}, [], None, None))
    assert ["No finding is open."] in p.cells


def test_the_end_of_replay_rows_agree_with_the_scrape_time_counters():
    from tests.core.test_changes import POLICY, UNTIL, _stream
    r = Reconciler(POLICY, aging=True)
    feed(r, _stream(11), until_ms=UNTIL - 4 * 86_400_000)
    rows = open_rows(r.aging, r.clock_ms)
    from_rows = {(x["acquirer"], x["currency"], x["tier"]): (x["findings"], x["amount_minor"])
                 for x in rows["open"]}
    assert from_rows and from_rows == r.aging_summary()


def test_a_kafka_replays_partitions_merge_into_one_aging_view():
    def part(n, amount, as_of):
        return {"as_of": as_of, "tiers": [{"name": "critical", "due": "4h"},
                                          {"name": "low", "due": "1d"}],
                "open": [{"tier": "low", "acquirer": "a", "currency": "CNY", "findings": n,
                          "amount_minor": amount, "overdue": 0, "oldest_age_days": n}]}
    merged = merge_aging_summaries([part(1, 100, "2026-11-16T10:00:00Z"),
                                    part(2, 50, "2026-11-16T10:00:00Z")])
    assert merged["open"] == [{"tier": "low", "acquirer": "a", "currency": "CNY",
                               "findings": 3, "amount_minor": 150, "overdue": 0,
                               "oldest_age_days": 2}]
    assert merged["as_of"] == "2026-11-16T10:00:00Z"
    assert merge_aging_summaries([]) is None


def test_the_example_replay_output_stays_byte_identical_with_the_aging_view(tmp_path):
    outs = []
    for n in (1, 2):
        replay_files(default_policy(), [str(REPO / "examples" / "auths.jsonl"),
                                        str(REPO / "examples" / "credits.jsonl")],
                     str(tmp_path / str(n)), 1_791_763_200_000, read_ms=1_800_000_000_000)
        outs.append((tmp_path / str(n) / "summary.json").read_bytes())
    assert outs[0] == outs[1]
    assert orjson.loads(outs[0])["aging"]["open"], "the example leaves findings open"
