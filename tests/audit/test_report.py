"""report.html from a replay's output files: totals, amounts at stake, plots, tables, escaping."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import orjson

from streams.core.policy import default_policy
from streams.audit.delays import delay_bucket, merge_delays
from streams.audit.evidence import money
from streams.audit.files import replay_files
from streams.audit.report import render, write_report

REPO = Path(__file__).resolve().parents[2]


def finding(kind: str, status: str = "open", *, aid: str = "", merchant: str = "M1",
            acquirer: str = "acq-t1", expected: int = 10_000, received: int = 0,
            event_time: str = "2026-10-08T03:00:00Z", currency: str = "CNY") -> dict:
    return {"anomaly_id": aid or f"{kind}{status}{merchant}{event_time}"[:24],
            "kind": kind, "status": status, "merchant_id": merchant, "acquirer": acquirer,
            "subject": f"A-{kind}", "auth_ids": [f"A-{kind}"], "credit_ids": [],
            "expected_minor": expected, "received_minor": received,
            "difference_minor": received - expected, "currency": currency,
            "deadline": "2026-10-08T02:00:00Z", "event_time": event_time,
            "detected_at": event_time, "probable_cause": None}


FINDINGS = [
    finding("missing", aid="m1", expected=10_000),
    finding("missing", "resolved", aid="m1", expected=10_000, received=10_000,
            event_time="2026-10-09T01:00:00Z"),
    finding("missing", aid="m2", expected=2_500, acquirer="acq-d0"),
    finding("late", aid="l1", expected=5_000, received=5_000, acquirer="acq-d0",
            event_time="2026-10-09T05:00:00Z"),
    finding("underpaid", aid="u1", expected=9_940, received=9_900),
    finding("overpaid", aid="o1", expected=9_940, received=10_940),
    finding("duplicate", aid="d1", expected=9_940, received=9_940, acquirer="acq-d0"),
    finding("orphan", aid="x1", expected=0, received=777, merchant="<script>alert(1)</script>"),
]
SUMMARY = {"events_read": 120, "events_valid": 118, "rejected": 2,
           "rejected_by_reason": {"full_pan": 1, "malformed_json": 1}, "findings": len(FINDINGS),
           "findings_by_kind": {}, "late_data": 0, "redeliveries": 3,
           "until": "2026-10-11T00:00:00Z",
           "kafka": {"range": {"from": "2026-10-08T00:00:00Z", "to": "2026-10-11T00:00:00Z",
                               "lead_in_from": "2026-10-06T00:00:00Z",
                               "tail_to": "2026-10-11T06:00:00Z", "merchants": [],
                               "acquirers": []},
                     "topics": {"authorisations": "pos.authorisations",
                                "settlements": "pos.settlements"},
                     "records_in_offsets": 130, "warnings": ["a warning <b>"]}}
DELAYS = merge_delays([{"histograms": {"acq-t1": {str(delay_bucket(20 * 3_600_000)): 8,
                                                  str(delay_bucket(30 * 3_600_000)): 2},
                                       "acq-instant": {str(delay_bucket(600_000)): 5}},
                        "amounts": [["acq-t1", "CNY", 100]]}])


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[list[str]] = []  # rows of cell texts
        self.ids: set[str] = set()
        self.scripts = 0
        self.svgs = 0
        self.external: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "script":
            self.scripts += 1
        if tag == "svg":
            self.svgs += 1
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        for k in ("src", "href"):
            if (a.get(k) or "").startswith(("http:", "https:", "//")):
                self.external.append(a[k])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.cells.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def row(self, first: str) -> list[str]:
        return next(r for r in self.cells if r and r[0] == first)


def page_of(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


def test_totals_count_open_findings_per_kind_and_acquirer():
    p = page_of(render(SUMMARY, FINDINGS, DELAYS, None))
    # columns: acquirer, missing, late, underpaid, overpaid, duplicate, orphan, total, resolved
    assert p.row("acq-t1") == ["acq-t1", "1", "0", "1", "1", "0", "1", "4", "1"]
    assert p.row("acq-d0") == ["acq-d0", "1", "1", "0", "0", "1", "0", "3", "0"]
    assert p.row("all acquirers")[1:] == ["2", "1", "1", "1", "1", "1", "7", "1"]


def test_a_missing_credit_resolved_in_the_range_is_no_longer_at_stake():
    p = page_of(render(SUMMARY, FINDINGS, DELAYS, None))
    stake = [r for r in p.cells if len(r) == 8 and r[1] == "CNY"]
    t1 = next(r for r in stake if r[0] == "acq-t1")
    # missing m1 was resolved; the short and the excess credit are at stake; the orphan's credit
    assert t1[2:] == ["", "", "0.40 CNY", "10.00 CNY", "", "7.77 CNY"]
    d0 = next(r for r in stake if r[0] == "acq-d0")
    assert d0[2:] == ["25.00 CNY", "50.00 CNY", "", "", "99.40 CNY", ""]


def test_every_finding_is_a_row_grouped_by_kind_with_a_link_to_its_evidence():
    text = render(SUMMARY, FINDINGS, DELAYS, None)
    p = page_of(text)
    for kind in ("missing", "late", "underpaid", "overpaid", "duplicate", "orphan"):
        assert f'id="kind-{kind}"' in text
    rows = [r for r in p.cells if len(r) == 12 and r[0].startswith("2026-")]
    assert len(rows) == len(FINDINGS)
    assert 'href="evidence/m1-resolved.json"' in text and 'href="evidence/m1.json"' in text


def test_the_page_is_self_contained_and_escapes_what_it_shows():
    text = render(SUMMARY, FINDINGS, DELAYS, None)
    p = page_of(text)
    assert not p.external and p.scripts == 1
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)" in text
    assert "a warning &lt;b&gt;" in text
    assert p.svgs == 2  # settlement delays and the daily timeline
    assert {"overview", "totals", "delays", "timeline", "findings", "deadletters"} <= p.ids


def test_the_same_output_gives_the_same_page():
    assert render(SUMMARY, FINDINGS, DELAYS, None) == render(SUMMARY, list(FINDINGS), DELAYS, None)


def test_delay_percentiles_come_from_the_histogram():
    t1 = DELAYS["acquirers"]["acq-t1"]
    assert t1["settled"] == 10
    assert 20 * 3600 <= t1["p50_s"] < 20 * 3600 * 1.2
    assert 30 * 3600 <= t1["p99_s"] < 30 * 3600 * 1.2
    assert DELAYS["acquirers"]["acq-instant"]["p90_s"] < 800
    assert delay_bucket(999) == 0 and delay_bucket(1000) == 1 and delay_bucket(2000) == 5


def test_compare_live_lists_both_sides():
    compare = {"anomalies_topic": "settlewatch.anomalies", "agree": 6, "live_records": 9,
               "missed_by_live": [FINDINGS[4]], "not_in_replay": [finding("late", aid="zz9")]}
    text = render(SUMMARY, FINDINGS, DELAYS, compare)
    p = page_of(text)
    assert "compare-live" in p.ids
    assert "missed by the live monitor" in text and "zz9" in text
    assert "<b>1</b> missed by the live" in text


def test_money_uses_the_currency_minor_unit_digits():
    assert money(1_234_567, "CNY") == "12,345.67 CNY"
    assert money(-5, "CNY") == "-0.05 CNY"
    assert money(1_234, "JPY") == "1,234 JPY"
    assert money(1_234, "BHD") == "1.234 BHD"


def test_file_replay_output_makes_a_report_too(tmp_path):
    replay_files(default_policy(), [str(REPO / "examples" / "auths.jsonl"),
                                    str(REPO / "examples" / "credits.jsonl")],
                 str(tmp_path), 1_791_763_200_000, read_ms=1_800_000_000_000)
    path = write_report(tmp_path)
    p = page_of(path.read_text())
    n = len((tmp_path / "findings.jsonl").read_bytes().splitlines())
    assert n > 0
    rows = [r for r in p.cells if len(r) == 12 and r[0].startswith("2026-")]
    assert len(rows) == n
    assert "delays" not in p.ids and p.svgs == 1  # no delay histogram from file replay
    assert orjson.loads((tmp_path / "summary.json").read_bytes())["findings"] == n
