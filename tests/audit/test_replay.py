"""File replay: the first way to run settlewatch, and the audit path's shared writer."""
from __future__ import annotations

import json
from pathlib import Path

import orjson
from click.testing import CliRunner

from streams import wire
from streams.cli import main
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed
from streams.audit.files import ReplayRun, replay_files

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
POLICY = default_policy()
T0 = wire.parse_time_ms("2026-10-09T02:00:00Z")  # 10:00 in Shanghai
MIN = 60_000


def line(**fields) -> bytes:
    base = {"type": "authorisation", "event_id": "e1", "auth_id": "a1", "merchant_id": "m1",
            "terminal_id": "t1", "acquirer": "acq-instant", "channel": "credit",
            "amount_minor": 10_000, "currency": "CNY", "status": "approved",
            "event_time": wire.format_time_ms(T0)}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def credit_line(**fields) -> bytes:
    base = {"type": "settlement_credit", "credit_id": "c1", "merchant_id": "m1",
            "acquirer": "acq-instant", "amount_minor": 9_940, "currency": "CNY",
            "auth_ids": ["a1"], "event_time": wire.format_time_ms(T0 + 10 * MIN)}
    base.update(fields)
    return orjson.dumps(base)


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return str(path)


def test_the_readme_example_replays_the_shipped_sample(tmp_path):
    result = CliRunner().invoke(main, [
        "replay", "--config", str(REPO / "settlewatch.toml"),
        "--input", str(EXAMPLES / "auths.jsonl"), "--input", str(EXAMPLES / "credits.jsonl"),
        "--until", "2026-10-12T00:00:00Z", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["findings"] > 0 and summary["rejected"] > 0
    assert summary["findings_by_kind"]["missing"] > 0
    findings = [json.loads(x) for x in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert len(findings) == summary["findings"]
    for f in findings:
        assert (tmp_path / "evidence" / (f["anomaly_id"] + (
            "-resolved" if f["status"] == "resolved" else "") + ".json")).exists()
    assert "findings" in result.output


def test_replaying_the_same_input_twice_gives_byte_identical_output(tmp_path):
    inputs = [str(EXAMPLES / "auths.jsonl"), str(EXAMPLES / "credits.jsonl")]
    for out in ("one", "two"):
        replay_files(POLICY, inputs, str(tmp_path / out), wire.parse_time_ms(
            "2026-10-12T00:00:00Z"), read_ms=T0)
    for name in ("findings.jsonl", "deadletter.jsonl", "summary.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    one = sorted(p.name for p in (tmp_path / "one" / "evidence").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two" / "evidence").iterdir())


def test_file_replay_gives_the_findings_of_the_pure_reconciler(tmp_path):
    inputs = [str(EXAMPLES / "auths.jsonl"), str(EXAMPLES / "credits.jsonl")]
    until = wire.parse_time_ms("2026-10-12T00:00:00Z")
    replay_files(POLICY, inputs, str(tmp_path), until, read_ms=T0 + 365 * 86_400_000)
    events = []
    for path in inputs:
        for raw in Path(path).read_bytes().splitlines():
            topic = wire.SETTLEMENT_TOPIC if b"settlement_credit" in raw else wire.AUTH_TOPIC
            e = wire.parse(topic, raw, T0 + 365 * 86_400_000)
            if type(e) is not wire.Reject:
                events.append(e)
    events.sort(key=lambda e: e.event_time_ms)
    expected = feed(Reconciler(POLICY), events, until)
    got = [json.loads(x) for x in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert sorted((f["anomaly_id"], f["status"]) for f in got) == sorted(
        (f.anomaly_id, f.status.value) for f in expected)


def test_bad_lines_are_dead_letters_with_file_and_line_and_never_stop_the_run(tmp_path):
    auths = write(tmp_path / "a.jsonl", [
        line(),
        b"{not json",
        line(event_id="e2", auth_id="a2", amount_minor=-5),
        line(event_id="e3", auth_id="a3", currency="XYZ"),
        line(event_id="e4", auth_id="a4", pan_masked="4111111111111111"),
        line(event_id="e5", auth_id="a5", event_time=wire.format_time_ms(T0 + 5 * MIN)),
    ])
    credits = write(tmp_path / "c.jsonl", [credit_line()])
    result = replay_files(POLICY, [auths, credits], str(tmp_path / "out"), read_ms=T0 + MIN)
    dead = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["offset"]) for d in dead] == [
        ("malformed_json", 2), ("bad_amount", 3), ("unknown_currency", 4), ("full_pan", 5)]
    # the topic the file was read as and its base name, not the path as typed
    assert all(d["topic"] == "pos.authorisations:a.jsonl" for d in dead)
    assert "4111111111111111" not in (tmp_path / "out" / "deadletter.jsonl").read_text()
    assert result.rejected == 4 and result.events == 7


def test_a_far_future_event_is_dead_lettered_and_moves_no_watermark(tmp_path):
    run = ReplayRun(POLICY, tmp_path, evidence=False)
    read = T0 + 20 * MIN
    run.record(wire.AUTH_TOPIC, line(), read, 0, 0)
    run.record(wire.SETTLEMENT_TOPIC, credit_line(credit_id="c0", auth_ids=["zz"],
                                                   event_time=wire.format_time_ms(T0)), read, 0, 0)
    clock_before = run.reconciler.clock_ms
    marks_before = run.reconciler.watermarks()
    # a terminal with a broken clock stamps a sale a year ahead
    far = line(event_id="e9", auth_id="a9",
               event_time=wire.format_time_ms(T0 + 365 * 86_400_000))
    assert run.record(wire.AUTH_TOPIC, far, read, 0, 1) is None
    assert run.reconciler.watermarks() == marks_before
    assert run.reconciler.clock_ms == clock_before
    result = run.finish()
    assert result.findings == 0  # the sale (due 10:30) is not declared missing at 10:20
    dead = json.loads((tmp_path / "deadletter.jsonl").read_text())
    assert dead["reason"] == "future_timestamp"


def test_until_is_the_final_watermark(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line()])
    early = replay_files(POLICY, [auths], str(tmp_path / "early"), T0 + 30 * MIN,
                         read_ms=T0 + MIN)
    late = replay_files(POLICY, [auths], str(tmp_path / "late"), T0 + 40 * MIN,
                        read_ms=T0 + MIN)
    # acq-instant: due 10:30, grace 5m -> missing once the clock passes 10:35
    assert early.findings == 0
    assert late.by_kind == {"missing": 1}


def test_files_in_either_order_are_merged_by_event_time(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line()])
    credits = write(tmp_path / "c.jsonl", [credit_line()])
    one = replay_files(POLICY, [credits, auths], str(tmp_path / "one"), T0 + 60 * MIN,
                       read_ms=T0 + 60 * MIN)
    assert one.findings == 0 and one.rejected == 0


def test_check_config_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((REPO / "settlewatch.toml").read_text().replace(
        'due = "+30m"', 'due = "tomorrow"'))
    result = CliRunner().invoke(main, ["check-config", "--config", str(bad)])
    assert result.exit_code != 0
    assert "cycles[2].due" in result.output


# ---- output is a function of the input alone (issue 14 item 10) ------------------------------


def history(tmp_path: Path, extra_auths: list[bytes] = (), extra_credits: list[bytes] = (),
            at: int = 3) -> tuple[str, str]:
    """Three days of instant sales every 20 minutes, each paid 10 minutes later except every
    7th (missing): a history file pair, with extra lines put in after line `at`."""
    auths, credits = [], []
    for n in range(3 * 72):
        t = T0 + n * 20 * MIN
        auths.append(line(event_id=f"e{n}", auth_id=f"a{n}", event_time=wire.format_time_ms(t)))
        if n % 7:
            credits.append(credit_line(credit_id=f"c{n}", auth_ids=[f"a{n}"],
                                       event_time=wire.format_time_ms(t + 10 * MIN)))
    auths[at:at] = list(extra_auths)
    credits[at:at] = list(extra_credits)
    return write(tmp_path / "auths.jsonl", auths), write(tmp_path / "credits.jsonl", credits)


UNTIL = T0 + 4 * 86_400_000


def test_file_replay_output_depends_neither_on_the_wall_clock_nor_on_the_path_as_typed(
        tmp_path, monkeypatch):
    far = line(event_id="ef", auth_id="af", event_time="2099-01-01T00:00:00Z")
    history(tmp_path, extra_auths=[far], at=100)
    outputs = []
    for n, (now, cwd, prefix) in enumerate([(1_800_000_000.0, tmp_path, ""),
                                             (4_200_000_000.0, tmp_path.parent,
                                              tmp_path.name + "/")]):
        monkeypatch.setattr("time.time", lambda now=now: now)
        monkeypatch.chdir(cwd)
        replay_files(POLICY, [prefix + "auths.jsonl", prefix + "credits.jsonl"],
                     str(tmp_path / f"out{n}"), UNTIL)
        outputs.append({name: (tmp_path / f"out{n}" / name).read_bytes()
                        for name in ("findings.jsonl", "deadletter.jsonl", "summary.json")})
    assert outputs[0] == outputs[1]
    dead = json.loads(outputs[0]["deadletter.jsonl"])
    assert dead["reason"] == "future_timestamp"
    assert dead["topic"] == "pos.authorisations:auths.jsonl"


def test_a_sale_stamped_weeks_after_its_neighbours_is_future_and_steers_nothing(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    expected = replay_files(POLICY, list(history(clean)), str(clean / "out"), UNTIL)
    weeks = line(event_id="ew", auth_id="aw",
                 event_time=wire.format_time_ms(T0 + 21 * 86_400_000))
    result = replay_files(POLICY, list(history(tmp_path, extra_auths=[weeks], at=40)),
                          str(tmp_path / "out"), UNTIL)
    assert expected.by_kind == {"missing": 31} and result.by_kind == expected.by_kind
    assert (tmp_path / "out" / "findings.jsonl").read_bytes() == (
        clean / "out" / "findings.jsonl").read_bytes()
    (dead,) = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_bytes()
               .splitlines()]
    assert (dead["reason"], dead["offset"]) == ("future_timestamp", 41)
    # the record time is where the file was: the sales around line 41, not the wall clock
    assert "after the record time 2026-10-09T1" in dead["message"]


def test_a_jump_that_the_following_lines_confirm_is_no_future(tmp_path):
    # the terminals were switched off for a week: the file's own lines move on with the sale
    later = [line(event_id=f"j{n}", auth_id=f"j{n}",
                  event_time=wire.format_time_ms(T0 + 7 * 86_400_000 + n * MIN))
             for n in range(6)]
    auths = write(tmp_path / "a.jsonl", [line()] + later)
    result = replay_files(POLICY, [auths], str(tmp_path / "out"), T0 + 8 * 86_400_000)
    assert result.rejected == 0 and result.by_kind == {"missing": 7}


def test_the_last_line_of_a_file_is_judged_against_until(tmp_path):
    auths = write(tmp_path / "a.jsonl", [
        line(), line(event_id="e2", auth_id="a2", event_time=wire.format_time_ms(T0 + 3 * 3_600_000)),
        line(event_id="e3", auth_id="a3", event_time="2099-01-01T00:00:00Z")])
    result = replay_files(POLICY, [auths], str(tmp_path / "out"), T0 + 86_400_000)
    assert result.by_reason == {"future_timestamp": 1} and result.by_kind == {"missing": 2}


# ---- a line's topic is its parsed type and its file's (issue 14 item 11) ---------------------


def test_a_sale_with_a_field_equal_to_settlement_credit_is_a_sale(tmp_path):
    auths = write(tmp_path / "a.jsonl", [line(note="settlement_credit")])
    credits = write(tmp_path / "c.jsonl", [credit_line()])
    result = replay_files(POLICY, [auths, credits], str(tmp_path / "out"), T0 + 60 * MIN)
    assert result.rejected == 0 and result.findings == 0


def test_a_sale_inside_the_settlements_file_is_wrong_topic(tmp_path):
    credits = write(tmp_path / "c.jsonl", [
        credit_line(), line(event_id="e2", auth_id="a2"),
        credit_line(credit_id="c3", auth_ids=["a1"], event_time=wire.format_time_ms(T0 + 11 * MIN))])
    result = replay_files(POLICY, [credits], str(tmp_path / "out"), T0 + 60 * MIN)
    dead = [json.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_bytes()
            .splitlines()]
    assert [(d["reason"], d["offset"], d["topic"]) for d in dead] == [
        ("wrong_topic", 2, "pos.settlements:c.jsonl")]
    assert result.events == 3 and result.rejected == 1


def test_a_rejected_line_stamped_2099_steers_neither_the_merge_nor_a_clock(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    replay_files(POLICY, list(history(clean)), str(clean / "out"), UNTIL)
    bad = line(event_id="eb", auth_id="ab", amount_minor=-5, event_time="2099-01-01T00:00:00Z")
    result = replay_files(POLICY, list(history(tmp_path, extra_auths=[bad], at=30)),
                          str(tmp_path / "out"), UNTIL)
    assert result.by_reason == {"bad_amount": 1}
    # byte for byte, detected_at too: the findings became known at the same clocks
    assert (tmp_path / "out" / "findings.jsonl").read_bytes() == (
        clean / "out" / "findings.jsonl").read_bytes()
