"""Audit replay from Kafka against a real broker: the range, the reconciler, the output files.

One seeded week of simulated traffic (with injected faults and bad records) is produced once per
module to topics of its own, each record stamped with its event time as a feed that produces
records as they happen would; the tests replay a range of it and compare with the pure
reconciler and with file replay over the same in-range events.
"""
from __future__ import annotations

import json
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer
from kafka.admin import NewTopic

from streams import wire
from streams.cli import main
from streams.core.events import Credit
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler, feed
from streams.audit.kafka import (
    Group,
    Plan,
    Progress,
    ReplayError,
    Stream,
    Topics,
    replay_kafka,
    replay_kafka_cli,
)
from streams.audit.files import replay_files
from streams.sim.simulator import SimConfig, Simulation, parse_faults

POLICY = default_policy()
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
SIM_START = wire.parse_time_ms("2026-10-05T00:00:00Z")
SIM_END = wire.parse_time_ms("2026-10-12T00:00:00Z")
FROM = wire.parse_time_ms("2026-10-08T00:00:00Z")
TO = wire.parse_time_ms("2026-10-11T00:00:00Z")
LEAD_IN = 2 * DAY


def _bad_records() -> list[tuple[str, bytes, int, str]]:
    """(wire topic, raw, record time, reason): bad records in, before and after the range."""
    good = {"type": "authorisation", "event_id": "EBAD", "auth_id": "ABAD", "merchant_id": "MBAD",
            "terminal_id": "TBAD", "acquirer": "acq-std", "channel": "credit",
            "amount_minor": 1000, "currency": "CNY", "status": "approved",
            "event_time": "2026-10-09T03:00:00Z"}
    credit = {"type": "settlement_credit", "credit_id": "CRBAD", "merchant_id": "MBAD",
              "acquirer": "acq-std", "amount_minor": 1000, "currency": "CNY",
              "event_time": "2026-10-09T04:00:00Z", "auth_ids": ["ABAD"]}
    t = wire.parse_time_ms
    return [
        (wire.AUTH_TOPIC, b'{"type": "authorisation", "event_id": ', t("2026-10-08T06:00:00Z"),
         "malformed_json"),
        (wire.AUTH_TOPIC,
         orjson.dumps({**good, "event_id": "EP", "pan_masked": "4111111111111111"}),
         t("2026-10-09T01:00:00Z"), "full_pan"),
        (wire.AUTH_TOPIC,
         orjson.dumps({**good, "event_id": "EF", "event_time": "2026-10-09T12:00:00Z"}),
         t("2026-10-09T10:00:00Z"), "future_timestamp"),
        (wire.AUTH_TOPIC, orjson.dumps({**good, "event_id": "EN", "amount_minor": -5}),
         t("2026-10-10T08:00:00Z"), "bad_amount"),
        (wire.SETTLEMENT_TOPIC, orjson.dumps(good), t("2026-10-09T05:00:00Z"), "wrong_topic"),
        (wire.SETTLEMENT_TOPIC, b"\xff\xfe not json", t("2026-10-10T20:00:00Z"), "malformed_json"),
        # outside the range (by record time): in the lead-in and after `to`, never written
        (wire.AUTH_TOPIC, b"{broken", t("2026-10-07T12:00:00Z"), "malformed_json"),
        (wire.SETTLEMENT_TOPIC, orjson.dumps(credit)[:-3], t("2026-10-11T02:00:00Z"),
         "malformed_json"),
    ]


BAD = _bad_records()
BAD_IN_RANGE = sorted(reason for _, _, ts, reason in BAD if FROM <= ts < TO)


def _simulation() -> list:
    cfg = SimConfig(start_ms=SIM_START, end_ms=SIM_END, merchants=240, sales_per_second=0.02,
                    seed=7, jitter_ms=2 * MIN,
                    faults=parse_faults("late=3%,missing=3%,duplicate=2%,underpaid=3%,"
                                        "overpaid=2%,orphan=1%,refund_netted=1%,redelivery=1%"))
    return list(Simulation(cfg, POLICY).events())


@pytest.fixture(scope="module")
def events() -> list:
    return _simulation()


def _create_topics(admin, prefix: str) -> Topics:
    topics = Topics(authorisations=prefix + "pos.authorisations",
                    settlements=prefix + "pos.settlements",
                    anomalies=prefix + "settlewatch.anomalies")
    # Records are stamped in October 2026: keep them whatever the broker's default retention.
    admin.create_topics([NewTopic(name, 6, 1, topic_configs={"retention.ms": "-1"})
                         for name in (topics.authorisations, topics.settlements, topics.anomalies)])
    return topics


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap, kafka_admin, events):
    """Topics holding the simulated week (record time = event time) and the bad records."""
    topics = _create_topics(kafka_admin, f"t{uuid.uuid4().hex[:8]}.")
    name = {wire.AUTH_TOPIC: topics.authorisations, wire.SETTLEMENT_TOPIC: topics.settlements}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                             batch_size=256 * 1024)
    bad = sorted(BAD, key=lambda b: b[2])
    for e in events:
        while bad and bad[0][2] <= e.event_time_ms:
            topic, raw, ts, _ = bad.pop(0)
            producer.send(name[topic], value=raw, key=b"MBAD", timestamp_ms=ts)
        topic = topics.settlements if type(e) is Credit else topics.authorisations
        producer.send(topic, value=wire.event_to_json(e), key=e.merchant_id.encode(),
                      timestamp_ms=e.event_time_ms)
    for topic, raw, ts, _ in bad:
        producer.send(name[topic], value=raw, key=b"MBAD", timestamp_ms=ts)
    producer.flush()
    producer.close()
    return topics


def _expected(events: list, until: int = TO, keep=lambda e: True) -> list[dict]:
    """The pure reconciler over the events of the range and its lead-in, findings of the range."""
    fed = [e for e in events if FROM - LEAD_IN <= e.event_time_ms < until and keep(e)]
    return [wire.finding_to_dict(f) for f in feed(Reconciler(POLICY), fed, until)
            if FROM <= f.event_time_ms < until]


def _findings(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "findings.jsonl").read_text().splitlines()]


def _comparable(findings: list[dict]) -> list[dict]:
    """Findings without detected_at (the clock that raised them: per partition in Kafka replay,
    as live; one clock in the pure reconciler and file replay), in a fixed order."""
    out = [{k: v for k, v in f.items() if k != "detected_at"} for f in findings]
    return sorted(out, key=lambda f: (f["event_time"], f["anomaly_id"], f["status"]))


@pytest.fixture(scope="module")
def replayed(scenario, tmp_path_factory, kafka_bootstrap):
    out = tmp_path_factory.mktemp("replay")
    result = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, out, topics=scenario,
                          lead_in_ms=LEAD_IN, workers=2, progress=False)
    return out, result


def test_replay_from_kafka_finds_exactly_what_the_pure_reconciler_finds(replayed, events):
    out, result = replayed
    expected = _expected(events)
    got = _findings(out)
    kinds = {f["kind"] for f in got}
    assert kinds >= {"missing", "late", "underpaid", "overpaid", "duplicate", "orphan"}
    assert _comparable(got) == _comparable(expected)
    assert result.findings == len(expected)
    assert all(FROM <= wire.parse_time_ms(f["event_time"]) < TO for f in got)
    # findings are written in the order they became known: by the reconcilers' clocks
    detected = [wire.parse_time_ms(f["detected_at"]) for f in got]
    assert detected == sorted(detected) and max(detected) <= TO


def test_replay_from_kafka_equals_file_replay_of_the_same_events(replayed, events, tmp_path):
    out, _ = replayed
    fed = [e for e in events if FROM - LEAD_IN <= e.event_time_ms < TO]
    auths, credits = tmp_path / "auths.jsonl", tmp_path / "credits.jsonl"
    auths.write_bytes(b"".join(wire.event_to_json(e) + b"\n" for e in fed if type(e) is not Credit))
    credits.write_bytes(b"".join(wire.event_to_json(e) + b"\n" for e in fed if type(e) is Credit))
    replay_files(POLICY, [str(auths), str(credits)], str(tmp_path / "files"), TO,
                 read_ms=SIM_END + DAY)
    from_files = [f for f in _findings(tmp_path / "files")
                  if FROM <= wire.parse_time_ms(f["event_time"]) < TO]
    assert _comparable(_findings(out)) == _comparable(from_files)


def test_dead_letters_are_the_bad_records_stamped_in_the_range_with_masked_card_numbers(replayed,
                                                                                          scenario):
    out, result = replayed
    dead = [json.loads(x) for x in (out / "deadletter.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == BAD_IN_RANGE
    assert result.rejected == len(BAD_IN_RANGE)
    assert {d["topic"] for d in dead} <= {scenario.authorisations, scenario.settlements}
    assert all(FROM <= wire.parse_time_ms(d["record_time"]) < TO for d in dead)
    assert all(isinstance(d["offset"], int) and isinstance(d["partition"], int) for d in dead)
    text = (out / "deadletter.jsonl").read_text()
    assert "4111111111111111" not in text and "411111******1111" in text


def test_the_same_range_replays_to_byte_identical_files_with_one_or_two_workers(
        replayed, scenario, kafka_bootstrap, tmp_path):
    out, _ = replayed
    again = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path / "again", topics=scenario,
                         lead_in_ms=LEAD_IN, workers=1, progress=False)
    assert again.findings > 0
    for name in ("findings.jsonl", "deadletter.jsonl", "summary.json", "settlement_delays.json",
                 "report.html"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    one = {p.name: p.read_bytes() for p in (out / "evidence").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "again" / "evidence").iterdir()}
    assert one == two
    assert not (out / ".parts").exists()


def test_every_finding_has_evidence_a_merchant_can_hand_its_bank(replayed):
    out, _ = replayed
    findings = _findings(out)
    names = {f["anomaly_id"] + ("-resolved" if f["status"] == "resolved" else "") + ".json"
             for f in findings}
    assert names == {p.name for p in (out / "evidence").iterdir()}
    for f in findings:
        name = f["anomaly_id"] + ("-resolved" if f["status"] == "resolved" else "") + ".json"
        doc = json.loads((out / "evidence" / name).read_bytes())
        assert not any(wire.contains_pan(line.encode()) for line in doc["evidence"]["statement"])
        assert doc["finding"] == f
        ev = doc["evidence"]
        assert ev["statement"] and ev["statement"][-1].startswith("expected ")
        if f["kind"] == "orphan":
            assert [c["credit_id"] for c in ev["credits"]] == f["credit_ids"]
            continue
        assert sorted(s["auth_id"] for s in ev["sales"]) == sorted(f["auth_ids"])
        for s in ev["sales"]:
            assert s["pan_masked"] is None or (len(s["pan_masked"]) == 16
                                               and s["pan_masked"][6:12] == "******")
            # RFC 3339 only: epoch milliseconds are 13-digit runs a card-number check can hit
            assert wire.parse_time_ms(s["event_time"]) and "event_time_ms" not in s
            assert s["fee_rule"]["bps"] == POLICY.fee_bps(s["channel"])
            assert "expected_net_minor" in s
        assert ev["cycle"]["due"] and ev["cycle"]["timezone"]
        if f["kind"] in ("underpaid", "overpaid", "late", "duplicate"):
            assert set(f["credit_ids"]) <= {c["credit_id"] for c in ev["credits"]}
        if f["kind"] in ("underpaid", "overpaid") and len(ev["sales"]) == 1 and not (
                ev["sales"][0]["adjustments"]):
            assert ev["sales"][0]["expected_net_minor"] == f["expected_minor"]


def test_summary_names_the_range_offsets_and_counts(replayed, scenario):
    out, result = replayed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["until"] == "2026-10-11T00:00:00Z"
    assert summary["findings"] == len(_findings(out))
    assert summary["rejected_by_reason"] == {r: BAD_IN_RANGE.count(r) for r in set(BAD_IN_RANGE)}
    k = summary["kafka"]
    assert k["range"]["from"] == "2026-10-08T00:00:00Z"
    assert k["range"]["lead_in_from"] == "2026-10-06T00:00:00Z"
    assert k["reconcilers"] == [f"p{p}" for p in range(6)]
    assert len(k["offsets"]) == 12 and k["warnings"] == []
    # the lead-in start skips the first simulated day; the end is each partition's end offset
    starts = [v[0] for v in k["offsets"].values()]
    assert any(s > 0 for s in starts)
    r = k["records"]
    assert r["read"] == result.records == k["records_in_offsets"]
    assert r["read"] == r["in_range"] + r["lead_in"] + r["outside_range"] + r["filtered_out"]
    assert r["in_range"] + r["lead_in"] == summary["events_read"]
    assert r["skipped_by_end_lookup"] == r["not_read_after_end_run"] == 0
    assert r["outside_range"] > 0  # the last simulated day, after to + tail
    assert set(k["partitions"]) == set(k["offsets"])
    delays = json.loads((out / "settlement_delays.json").read_text())
    assert set(delays["acquirers"]) == {"acq-t1", "acq-d0", "acq-instant", "acq-std"}
    assert delays["acquirers"]["acq-instant"]["p90_s"] < delays["acquirers"]["acq-t1"]["p90_s"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tables = 0
        self.rows = 0  # rows in finding tables
        self.links: list[str] = []
        self.svgs = 0
        self.text: list[str] = []
        self._in_findings = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self.tables += 1
            if "findings" in (a.get("class") or ""):
                self._in_findings += 1
        if tag == "tr" and self._in_findings:
            self.rows += 1
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "svg":
            self.svgs += 1
        for k in ("src", "href"):
            if (a.get(k) or "").startswith(("http:", "https:", "//")):
                self.external.append(a[k])

    def handle_endtag(self, tag):
        if tag == "table" and self._in_findings:
            self._in_findings -= 1

    def handle_data(self, data):
        self.text.append(data)


def test_the_report_is_one_offline_page_with_totals_plots_and_every_finding(replayed):
    out, result = replayed
    page = _Page()
    page.feed((out / "report.html").read_text())
    findings = _findings(out)
    assert {"overview", "totals", "delays", "timeline", "findings", "deadletters"} <= page.ids
    assert page.svgs == 2 and not page.external
    groups = {f["kind"] for f in findings}
    assert page.rows == len(findings) + len(groups)  # one heading row per kind table
    evidence_links = [x for x in page.links if x.startswith("evidence/")]
    assert len(evidence_links) == len(findings)
    assert all((out / x).exists() for x in evidence_links)
    text = " ".join(page.text)
    total = sum(1 for f in findings if f["status"] == "open")
    assert f"{total:,}" in text and "2026-10-08T00:00:00Z" in text
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['kafka']['records']['read']:,}: " in text
    assert "Records skipped by the end look-up" in text
    for kind in groups:
        n = sum(1 for f in findings if f["kind"] == kind)
        assert f"{kind} ({n:,})" in text


def test_merchant_and_acquirer_filters_apply_to_events_before_reconciling(
        scenario, events, kafka_bootstrap, tmp_path):
    result = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path, topics=scenario,
                          lead_in_ms=LEAD_IN, merchants=("M00001*", "M00002*"),
                          acquirers=("acq-t1", "acq-std"), workers=2, report=False,
                          progress=False)
    got = _findings(tmp_path)
    assert got and all(f["merchant_id"][:6] in ("M00001", "M00002") for f in got)
    expected = _expected(events, keep=lambda e: e.merchant_id[:6] in ("M00001", "M00002")
                         and e.acquirer in ("acq-t1", "acq-std"))
    assert _comparable(got) == _comparable(expected)
    assert result.rejected == 0  # dead letters carry no trustworthy acquirer
    assert not (tmp_path / "report.html").exists()


def test_compare_live_lists_what_the_live_monitor_missed_and_what_it_alone_reported(
        replayed, scenario, kafka_bootstrap, tmp_path):
    out, _ = replayed
    findings = _findings(out)
    dropped = next(f for f in findings if f["kind"] == "underpaid")
    extra = {**findings[0], "anomaly_id": "0123456789abcdef01234567", "kind": "overpaid",
             "status": "open", "detected_at": "2026-11-23T10:00:00Z"}
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    # as live publishes: keyed by merchant, stamped by the wall clock, a resolved one repeated
    for f in [f for f in findings if f is not dropped] + [extra, findings[-1]]:
        producer.send(scenario.anomalies, key=f["merchant_id"].encode(),
                      value=orjson.dumps({**f, "detected_at": "2026-11-23T09:00:00Z"}))
    producer.send(scenario.anomalies, key=b"x", value=b"not a finding")
    producer.flush()
    producer.close()
    result = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path, topics=scenario,
                          lead_in_ms=LEAD_IN, compare_live=True, workers=2, progress=False)
    compare = json.loads((tmp_path / "compare_live.json").read_text())
    assert [f["anomaly_id"] for f in compare["missed_by_live"]] == [dropped["anomaly_id"]]
    assert [f["anomaly_id"] for f in compare["not_in_replay"]] == [extra["anomaly_id"]]
    assert compare["agree"] == len(findings) - 1
    assert compare["unreadable_live_records"] == 1
    assert "1 missed by live" in result.line() and "1 reported live but not by replay" in (
        result.line())
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    assert "compare-live" in page.ids
    text = " ".join(page.text)
    assert dropped["subject"] in text and "0123456789abcdef01234567" in text
    # a later replay into the same directory without --compare-live leaves no stale comparison
    replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path, topics=scenario,
                 lead_in_ms=LEAD_IN, workers=2, progress=False)
    assert not (tmp_path / "compare_live.json").exists()
    assert 'id="compare-live"' not in (tmp_path / "report.html").read_text()


def test_a_range_before_any_record_finds_nothing_and_says_what_it_read(scenario, kafka_bootstrap,
                                                                        tmp_path):
    start = wire.parse_time_ms("2026-09-01T00:00:00Z")
    result = replay_kafka(POLICY, kafka_bootstrap, start, start + DAY, tmp_path,
                          topics=scenario, lead_in_ms=DAY, tail_ms=HOUR, end_run=100,
                          progress=False)
    assert result.findings == 0 and result.events == 0
    # no single record's timestamp ends a read: each partition reads a run of 100 records
    # stamped past the range before it stops
    records = json.loads((tmp_path / "summary.json").read_text())["kafka"]["records"]
    assert records["read"] == result.records == records["outside_range"] == 12 * 100
    assert records["in_range"] == records["lead_in"] == 0
    assert (tmp_path / "findings.jsonl").read_bytes() == b""
    assert (tmp_path / "report.html").exists()


def test_the_cli_options_reach_the_kafka_replay(scenario, kafka_bootstrap, tmp_path):
    result = replay_kafka_cli(policy=POLICY, bootstrap=kafka_bootstrap, from_ms=FROM, to_ms=TO,
                              out_dir=str(tmp_path), lead_in="2d", report=False, progress=False,
                              topics=scenario)
    assert result.findings > 0
    cli = CliRunner().invoke(main, ["replay", "--bootstrap", kafka_bootstrap, "--out",
                                    str(tmp_path / "x"), "--to", "2026-10-11T00:00:00Z"])
    assert cli.exit_code != 0 and "--from and --to" in cli.output
    cli = CliRunner().invoke(main, ["replay", "--bootstrap", kafka_bootstrap, "--out",
                                    str(tmp_path / "y"), "--from", "2026-10-11T00:00:00Z",
                                    "--to", "2026-10-08T00:00:00Z"])
    assert cli.exit_code != 0 and "--to must be after --from" in cli.output


def test_a_topic_that_does_not_exist_is_named_in_the_error(kafka_bootstrap, tmp_path):
    topics = Topics(authorisations="no-such.pos.authorisations",
                    settlements="no-such.pos.settlements")
    with pytest.raises(ReplayError, match="no-such.pos.authorisations does not exist"):
        replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path, topics=topics, progress=False)


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def test_the_progress_bar_shows_each_topic_the_rate_and_the_time_left_only_on_a_terminal():
    plan = Plan([Group(0, "p0", [Stream(0, "in.auths", 0, wire.AUTH_TOPIC, 100, 1100),
                                 Stream(1, "in.credits", 0, wire.SETTLEMENT_TOPIC, 0, 500)])])
    counters = [400, 200]
    quiet = _Terminal(tty=False)
    bar = Progress(plan, counters, stream=quiet)
    bar.update(force=True)
    bar.close()
    assert quiet.text == ""
    line = Progress(plan, counters, stream=_Terminal(tty=True)).render({"in.auths": 400,
                                                                         "in.credits": 200}, 2.0)
    assert "in.auths 400/1,000" in line and "in.credits 200/500" in line
    assert "40%" in line and "300 ev/s" in line and "0:03 left" in line
    loud = _Terminal(tty=True)
    bar = Progress(plan, counters, stream=loud)
    bar.update(force=True)
    bar.close()
    assert loud.text.startswith("\rreplay [") and loud.text.endswith("\n")


# ---- record timestamps are not monotonic (issue 14 item 2) -----------------------------------
#
# Upstream, most records are stamped with their event time, but a producer that stamps its own
# clock (an hour slow, but weeks after the history: the broker refuses stamps more than an hour
# ahead of its own clock), or sends no timestamp so that it is stamped when sent, puts records
# stamped far after the range in the middle of it; one whose
# clock is behind stamps records before their event time (live dead-letters those as
# future_timestamp). The read must not end at the first record stamped past the range.

AHEAD, ON_ARRIVAL, BEHIND = "ahead", "on-arrival", "behind"


def _stamps(events: list) -> list[str | None]:
    """Per event (seeded): None (stamped with its event time) or how its record is stamped."""
    import random
    rnd = random.Random(14)
    out = []
    for _ in events:
        x = rnd.random()
        out.append(AHEAD if x < 0.02 else ON_ARRIVAL if x < 0.04 else BEHIND if x < 0.045
                   else None)
    return out


@pytest.fixture(scope="module")
def stamped(kafka_bootstrap, kafka_admin, events):
    """Topics holding the simulated week with 4.5% of the records stamped off their event time;
    and the events as live would accept them (those stamped behind are future_timestamp)."""
    topics = _create_topics(kafka_admin, f"s{uuid.uuid4().hex[:8]}.")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                             batch_size=256 * 1024)
    stamps = _stamps(events)
    for e, how in zip(events, stamps):
        ts = {None: e.event_time_ms, AHEAD: int(time.time() * 1000) - HOUR, ON_ARRIVAL: None,
              BEHIND: e.event_time_ms - 400 * DAY}[how]
        producer.send(topics.settlements if type(e) is Credit else topics.authorisations,
                      value=wire.event_to_json(e), key=e.merchant_id.encode(), timestamp_ms=ts)
    producer.flush()
    producer.close()
    accepted = [e for e, how in zip(events, stamps) if how != BEHIND]
    assert sum(1 for h in stamps if h in (AHEAD, ON_ARRIVAL)) > 100
    return topics, accepted


def test_records_stamped_far_after_the_range_amid_it_do_not_end_the_read(
        stamped, kafka_bootstrap, tmp_path):
    topics, accepted = stamped
    result = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path / "kafka", topics=topics,
                          lead_in_ms=LEAD_IN, workers=2, progress=False)
    got = _findings(tmp_path / "kafka")
    assert _comparable(got) == _comparable(_expected(accepted))
    # ... and equal to file replay of the same events
    fed = [e for e in accepted if FROM - LEAD_IN <= e.event_time_ms < TO]
    auths, credits = tmp_path / "auths.jsonl", tmp_path / "credits.jsonl"
    auths.write_bytes(b"".join(wire.event_to_json(e) + b"\n" for e in fed if type(e) is not Credit))
    credits.write_bytes(b"".join(wire.event_to_json(e) + b"\n" for e in fed if type(e) is Credit))
    replay_files(POLICY, [str(auths), str(credits)], str(tmp_path / "files"), TO)
    from_files = [f for f in _findings(tmp_path / "files")
                  if FROM <= wire.parse_time_ms(f["event_time"]) < TO]
    assert _comparable(got) == _comparable(from_files)
    summary = json.loads((tmp_path / "kafka" / "summary.json").read_text())
    r = summary["kafka"]["records"]
    # every partition read to its end offset: nothing skipped, the counts add up
    assert r["read"] == result.records == summary["kafka"]["records_in_offsets"]
    assert r["skipped_by_end_lookup"] == r["not_read_after_end_run"] == 0
    assert r["read"] == r["in_range"] + r["lead_in"] + r["outside_range"] + r["filtered_out"]
    assert r["in_range"] + r["lead_in"] == summary["events_read"]


def test_a_run_of_records_stamped_past_the_range_ends_a_partition_early(
        stamped, kafka_bootstrap, tmp_path):
    topics, accepted = stamped
    result = replay_kafka(POLICY, kafka_bootstrap, FROM, TO, tmp_path, topics=topics,
                          lead_in_ms=LEAD_IN, end_run=50, workers=1, progress=False)
    assert _comparable(_findings(tmp_path)) == _comparable(_expected(accepted))
    summary = json.loads((tmp_path / "summary.json").read_text())
    k = summary["kafka"]
    assert k["range"]["end_run"] == 50
    stopped = {n: p for n, p in k["partitions"].items() if p["stopped_by_run_at"] is not None}
    assert len(stopped) == 12  # every partition has a last day stamped past to + tail
    assert all(p["read"] + p["not_read"] == p["end"] - p["start"] for p in stopped.values())
    assert k["records"]["not_read_after_end_run"] == sum(p["not_read"] for p in stopped.values())
    assert k["records"]["not_read_after_end_run"] > 0
    assert result.records == k["records"]["read"] < k["records_in_offsets"]
