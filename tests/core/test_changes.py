"""State per change for the live worker: take_changes / restore_changes.

A worker writes each changed key (the value, or a deletion) to a changelogged table, and on a
restart rebuilds a fresh reconciler from the table's latest values. These tests play that
table with a dict and check that a restored reconciler gives exactly the findings of one that
never stopped, when it resumes where the state was taken and when it re-reads events it had
already seen (production re-reads from committed offsets, which lag the state written).
"""
from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import AUTHORISATION, REFUND, PosEvent
from streams.core.policy import default_policy, policy_from_dict
from streams.core.reconcile import Reconciler
from streams.sim.simulator import SimConfig, Simulation, parse_faults

from .builders import DAY, HOUR, ms

# Short retention, so that a few days of stream drop items, credits and deductions and expire
# redelivery ids as well as open them.
POLICY = replace(default_policy(), keep_settled_ms=DAY, missing_horizon_ms=2 * DAY,
                 redelivery_window_ms=2 * DAY)
START = ms("2026-10-08T00:00:00Z")
UNTIL = START + 8 * DAY


def _stream(seed: int, hours: int = 72) -> list:
    cfg = SimConfig(start_ms=START, end_ms=START + hours * HOUR, merchants=12,
                    sales_per_second=0.01, seed=seed, jitter_ms=120_000,
                    faults=parse_faults("late=5%,missing=8%,duplicate=4%,underpaid=5%,"
                                        "overpaid=3%,orphan=3%,refund_netted=5%,"
                                        "redelivery=4%"))
    return list(Simulation(cfg, POLICY).events())


def full(findings) -> list[tuple]:
    """Everything in a finding, detected_at and evidence included."""
    return [(f.anomaly_id, f.kind.value, f.status.value, f.merchant_id, f.subject, f.auth_ids,
             f.credit_ids, f.expected_minor, f.received_minor, f.deadline_ms, f.event_time_ms,
             f.detected_at_ms, f.probable_cause, json.dumps(f.evidence, sort_keys=True))
            for f in findings]


def apply(table: dict, changes: dict) -> None:
    """What the worker does with take_changes: write values (as JSON), delete the Nones."""
    for key, value in changes.items():
        assert key.split("\x1f", 1)[0], key  # routed by the merchant id before the first \x1f
        if value is None:
            table.pop(key, None)
        else:
            table[key] = json.loads(json.dumps(value))


def restored(table: dict, clock: dict, policy=POLICY) -> Reconciler:
    r = Reconciler(policy)
    r.restore_changes(list(table.items()))
    r.restore_clock(clock)
    return r


def uninterrupted(events, policy=POLICY) -> tuple[list, list[int], list[int]]:
    """Findings, and after each event the number of findings and redeliveries so far."""
    r = Reconciler(policy)
    out, counts, redeliveries = [], [], []
    for e in events:
        out += r.on_event(e)
        counts.append(len(out))
        redeliveries.append(r.stats.redeliveries)
    out += r.advance_to(UNTIL)
    redeliveries.append(r.stats.redeliveries)  # [-1]: at the end, the last ones released
    return out, counts, redeliveries


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), points=st.sets(st.floats(0.0, 1.0), min_size=1, max_size=6),
       crashes=st.integers(0, 63))
def test_restoring_from_the_changes_at_any_points_gives_the_same_findings(seed, points,
                                                                         crashes):
    events = _stream(seed)
    whole, _, _ = uninterrupted(events)
    r, out = with_crashes(events, points, crashes)
    out += r.advance_to(UNTIL)
    assert full(out) == full(whole)


def with_crashes(events, points, crashes: int, policy=POLICY) -> tuple[Reconciler, list]:
    """Feed `events`, taking the changes at each of `points` (fractions of the stream) and
    restoring from them where bit i of `crashes` says take i is followed by a crash: the last
    reconciler and the findings so far (the final clock not yet advanced)."""
    takes = sorted({int(p * len(events)) for p in points})
    r = Reconciler(policy, track_changes=True)
    table: dict = {}
    out = []
    for n, e in enumerate(events):
        if n in takes:
            apply(table, r.take_changes())
            if crashes >> takes.index(n) & 1:  # this take is followed by a crash
                r = restored(table, r.snapshot_clock(), policy)
                out += r.drain()
        out += r.on_event(e)
    return r, out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), commit=st.floats(0.0, 1.0), lag=st.floats(0.0, 0.3))
def test_re_reading_events_already_in_the_state_counts_them_and_finds_nothing_new(seed, commit,
                                                                                  lag):
    events = _stream(seed)
    whole, counts, redeliveries = uninterrupted(events)
    # the state is written after event j; the offsets committed are those of event i <= j
    j = max(int(commit * len(events)), 1)
    i = max(j - int(lag * len(events)), 0)
    first = Reconciler(POLICY, track_changes=True)
    table: dict = {}
    for n, e in enumerate(events[:j]):
        first.on_event(e)
        if n % 97 == 0:
            apply(table, first.take_changes())
    apply(table, first.take_changes())
    second = restored(table, first.snapshot_clock())
    after = second.drain()
    for e in events[i:]:
        after += second.on_event(e)
    after += second.advance_to(UNTIL)
    assert full(after) == full(whole[counts[j - 1]:])
    assert second.stats.redeliveries == (j - i) + redeliveries[-1] - redeliveries[j - 1]


def test_a_reconciler_not_tracking_changes_gives_its_whole_state_on_the_first_take():
    events = _stream(3, hours=30)
    tracked = Reconciler(POLICY, track_changes=True)
    plain = Reconciler(POLICY)
    table_tracked: dict = {}
    for e in events:
        tracked.on_event(e)
        plain.on_event(e)
        if len(table_tracked) % 50 == 0:
            apply(table_tracked, tracked.take_changes())
    apply(table_tracked, tracked.take_changes())
    table_plain: dict = {}
    apply(table_plain, plain.take_changes())
    assert table_plain == table_tracked
    assert plain.take_changes() == {}


def test_no_change_value_outgrows_64_kib_for_a_merchant_with_200k_open_sales():
    # Half the sales in one batch (acq-t1, no batch_id: one batch per trade date), half per
    # sale (acq-std, T+1 12:00), all in one hour: none is due yet.
    policy = default_policy()
    r = Reconciler(policy, track_changes=True)
    start = ms("2026-10-09 10:00")
    n = 200_000
    step = HOUR // n
    events = [PosEvent(AUTHORISATION, f"E{k}", f"A{k}", "big", f"T{k % 50}",
                       "acq-t1" if k % 2 else "acq-std", "credit", 1_000 + k % 5_000, "CNY",
                       start + k * step, pan_masked="622848******1234")
              for k in range(n)]
    r.on_events(events)
    r.advance_to(start + HOUR)
    assert r.open_item_count() == n // 2 + 1
    changes = r.take_changes()
    assert len(changes) == n + 1  # every sale once, and the batch's header
    biggest = max(len(json.dumps(v)) for v in changes.values())
    assert biggest <= 64 * 1024

    # One more sale in the batch, and a refund of a per-sale one: a few keys each.
    r.on_event(PosEvent(AUTHORISATION, "E-new", "A-new", "big", "T1", "acq-t1", "credit",
                        5_000, "CNY", start + HOUR - 1))
    r.advance_to(start + HOUR)
    assert sorted(k.split("\x1f")[1] for k in r.take_changes()) == ["i", "s"]
    r.on_event(PosEvent(REFUND, "R-0", "A0", "big", "T0", "acq-std", "credit", 100, "CNY",
                        start + HOUR))
    r.advance_to(start + HOUR + 1)
    assert list(r.take_changes()) == ["big\x1fi\x1fA0"]

    # Past the missing horizon every item is dropped; what is kept of them comes in chunks.
    r.advance_to(start + 100 * DAY)
    changes = r.take_changes()
    assert max(len(json.dumps(v)) for v in changes.values() if v is not None) <= 64 * 1024
    assert r.stats.missing_expired == n // 2 + 1
    assert not r.merchants


# The sample policy lists no [[settlement_files]] (markers are opt-in): expect acq-t1's files.
FILES_POLICY = replace(POLICY, settlement_files=policy_from_dict({
    "timezone": "UTC", "cycles": [{"acquirer": "*", "mode": "per_sale", "due": "+1h"}],
    "settlement_files": [{"acquirer": "acq-t1", "expected": "T+0 10:30"}]}).settlement_files)


def _stream_with_markers(seed: int, hours: int = 72) -> list:
    cfg = SimConfig(start_ms=START, end_ms=START + hours * HOUR, merchants=12,
                    sales_per_second=0.01, seed=seed, jitter_ms=120_000, markers=True,
                    faults=parse_faults("late=5%,missing=8%,duplicate=4%,redelivery=4%,"
                                        "marker_short=5%,marker_late=20%,marker_missing=10%"))
    return list(Simulation(cfg, FILES_POLICY).events())


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), points=st.sets(st.floats(0.0, 1.0), min_size=1, max_size=6),
       crashes=st.integers(0, 63))
def test_restoring_a_stream_with_completeness_markers_at_any_points_gives_the_same_findings(
        seed, points, crashes):
    events = _stream_with_markers(seed)
    whole, _, _ = uninterrupted(events, FILES_POLICY)
    before_the_end = Reconciler(FILES_POLICY)
    before_the_end.on_events(events)
    r, out = with_crashes(events, points, crashes, FILES_POLICY)
    assert r.files_overdue() == before_the_end.files_overdue()
    out += r.advance_to(UNTIL)
    assert full(out) == full(whole)
