"""File replay of a feed with completeness markers (contract v1.1), and the report listing the
files found incomplete."""
from __future__ import annotations

import json
from pathlib import Path

import orjson
from click.testing import CliRunner

from streams import wire
from streams.audit.files import file_topic, replay_files
from streams.audit.report import write_report
from streams.cli import main
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed

from .test_replay import MIN, T0, credit_line, line, write

POLICY = default_policy()
UNTIL = "2026-10-13T00:00:00Z"


def marker_line(**fields) -> bytes:
    base = {"type": "settlement_file_complete", "marker_id": "F1", "merchant_id": "m1",
            "acquirer": "acq-instant", "settle_date": "2026-10-09", "credit_count": 1,
            "total_minor": 9_940, "currency": "CNY",
            "event_time": wire.format_time_ms(T0 + 20 * MIN)}
    base.update(fields)
    return orjson.dumps(base)


def simulated(tmp_path: Path) -> Path:
    out = tmp_path / "in"
    result = CliRunner().invoke(main, [
        "simulate", "--out", str(out), "--markers", "--duration", "1d", "--rate", "1/m",
        "--merchants", "8", "--faults", "missing=5%,marker_short=10%,marker_missing=20%"])
    assert result.exit_code == 0, result.output
    return out


def findings_in(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "findings.jsonl").read_text().splitlines()]


def test_a_simulated_feed_with_markers_replays_to_the_findings_of_the_pure_reconciler(tmp_path):
    src = simulated(tmp_path)
    inputs = [str(src / "auths.jsonl"), str(src / "credits.jsonl")]
    assert file_topic(inputs[1]) == wire.SETTLEMENT_TOPIC
    until = wire.parse_time_ms(UNTIL)
    result = replay_files(POLICY, inputs, str(tmp_path / "out"), until)
    assert result.rejected == 0
    events = []
    for path, topic in zip(inputs, (wire.AUTH_TOPIC, wire.SETTLEMENT_TOPIC)):
        events += [wire.parse(topic, raw, until) for raw in Path(path).read_bytes().splitlines()]
    events.sort(key=lambda e: e.event_time_ms)
    expected = feed(Reconciler(POLICY), events, until)
    got = findings_in(tmp_path / "out")
    assert sorted((f["anomaly_id"], f["status"]) for f in got) == sorted(
        (f.anomaly_id, f.status.value) for f in expected)
    kinds = {f["kind"] for f in got}
    assert "file_incomplete" in kinds
    assert any(f["probable_cause"] == "not_in_settlement_file" for f in got)


def test_replaying_a_feed_with_markers_twice_gives_byte_identical_output(tmp_path):
    src = simulated(tmp_path)
    inputs = [str(src / "auths.jsonl"), str(src / "credits.jsonl")]
    for out in ("one", "two"):
        replay_files(POLICY, inputs, str(tmp_path / out), wire.parse_time_ms(UNTIL))
    for name in ("findings.jsonl", "deadletter.jsonl", "summary.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_file_incomplete_has_evidence_naming_the_file_and_both_counts(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line()])
    credits = write(tmp_path / "c.jsonl", [credit_line(), marker_line(credit_count=2,
                                                                      total_minor=20_000)])
    replay_files(POLICY, [auths, credits], str(tmp_path / "out"), T0 + 60 * MIN)
    f, = findings_in(tmp_path / "out")
    assert (f["kind"], f["expected_count"], f["received_count"]) == ("file_incomplete", 2, 1)
    evidence = json.loads((tmp_path / "out" / "evidence" / f"{f['anomaly_id']}.json")
                          .read_text())["evidence"]
    assert evidence["marker"]["settle_date"] == "2026-10-09"
    assert any("lists 2 credits" in s and "1 credits" in s for s in evidence["statement"])


def test_a_marker_inside_the_authorisations_file_is_wrong_topic(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line(), marker_line()])
    credits = write(tmp_path / "c.jsonl", [credit_line()])
    replay_files(POLICY, [auths, credits], str(tmp_path / "out"), T0 + 60 * MIN)
    dead = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_bytes()
            .splitlines()]
    assert [(d["reason"], d["topic"]) for d in dead] == [
        ("wrong_topic", "pos.authorisations:a.jsonl")]


def test_the_report_lists_the_settlement_files_found_incomplete(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line()])
    credits = write(tmp_path / "c.jsonl", [credit_line(), marker_line(credit_count=3,
                                                                      total_minor=30_000)])
    replay_files(POLICY, [auths, credits], str(tmp_path / "out"), T0 + 60 * MIN)
    page = write_report(tmp_path / "out").read_text()
    assert "Settlement files incomplete" in page
    assert "<td>F1</td>" in page and "file_short" in page
    assert 'id="kind-file_incomplete"' in page


def test_a_report_without_markers_has_no_settlement_files_section(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line()])
    replay_files(POLICY, [auths], str(tmp_path / "out"), T0 + 60 * MIN)
    assert "Settlement files incomplete" not in write_report(tmp_path / "out").read_text()
