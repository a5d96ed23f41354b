"""The simulator's completeness markers (contract v1.1) and their faults, run through the core.

Markers are off by default; turned on, they come on top of the very same stream (their own
random generator), one per merchant and settle date, counting the credits booked that date.
"""
from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import FileComplete, FindingKind, Status
from dataclasses import replace

from streams.core.policy import default_policy, policy_from_dict
from streams.core.reconcile import Reconciler, feed
from streams.sim.simulator import SimConfig, Simulation, parse_faults

HOUR = 3_600_000
DAY = 24 * HOUR
START = 1_791_417_600_000  # 2026-10-08T00:00:00Z
# The sample policy, with the settlement files of acq-t1 and acq-d0 expected as its comments
# suggest (markers are opt-in: the sample itself lists no acquirer).
_FILES = policy_from_dict({
    "timezone": "Asia/Shanghai", "cycles": [{"acquirer": "*", "mode": "per_sale", "due": "+1h"}],
    "settlement_files": [{"acquirer": "acq-t1", "expected": "T+0 10:30"},
                         {"acquirer": "acq-d0", "expected": "T+0 18:30"}]}).settlement_files
POLICY = replace(default_policy(), settlement_files=_FILES)


def stream(seed: int, faults: str = "missing=5%,late=3%,redelivery=2%", markers: bool = True,
           hours: int = 72):
    cfg = SimConfig(start_ms=START, end_ms=START + hours * HOUR, merchants=12,
                    sales_per_second=0.02, seed=seed, jitter_ms=60_000,
                    faults=parse_faults(faults), markers=markers)
    sim = Simulation(cfg, POLICY)
    return list(sim.events()), sim


def findings(events):
    return feed(Reconciler(POLICY), events, START + 8 * DAY)


def test_markers_are_off_by_default():
    events, _ = stream(1, markers=False)
    assert not [e for e in events if type(e) is FileComplete]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_a_stream_with_its_markers_stripped_is_the_stream_without_markers(seed):
    with_markers, _ = stream(seed)
    without, _ = stream(seed, markers=False)
    assert [e for e in with_markers if type(e) is not FileComplete] == without
    assert len(with_markers) > len(without)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_markers_that_agree_with_the_credits_only_find_the_same_missing_sooner(seed):
    with_markers, _ = stream(seed)
    without, _ = stream(seed, markers=False)
    marked, plain = findings(with_markers), findings(without)
    assert not [f for f in marked if f.kind == FindingKind.FILE_INCOMPLETE]

    def key(f):
        return (f.anomaly_id, f.kind, f.status, f.expected_minor, f.received_minor)
    assert sorted(map(key, marked)) == sorted(map(key, plain))
    when = {(f.anomaly_id, f.status): f.event_time_ms for f in plain}
    sooner = 0
    for f in marked:
        assert f.event_time_ms <= when[(f.anomaly_id, f.status)]
        if f.kind == FindingKind.MISSING and f.status == Status.OPEN:
            sooner += f.probable_cause == "not_in_settlement_file"
    assert sooner or not [f for f in plain if f.kind == FindingKind.MISSING]


def test_a_short_marker_is_a_file_incomplete_and_its_lost_credit_a_missing_at_once():
    events, sim = stream(5, faults="marker_short=10%")
    lost = [i for i in sim.injected if i.kind == "marker_short"]
    assert lost
    found = findings(events)
    short = [f for f in found if f.kind == FindingKind.FILE_INCOMPLETE]
    assert short and all(f.probable_cause == "file_short" for f in short)
    assert all(f.received_count < f.expected_count for f in short)
    missing = {f.subject for f in found if f.kind == FindingKind.MISSING
               and f.probable_cause == "not_in_settlement_file"}
    assert {i.subject for i in lost} & missing


def test_missing_and_late_markers_leave_files_overdue_until_they_come():
    events, sim = stream(7, faults="acq-t1:marker_missing=30%,acq-t1:marker_late=40%")
    kinds = collections.Counter(i.kind for i in sim.injected)
    assert kinds["marker_missing"] and kinds["marker_late"]
    r = Reconciler(POLICY)
    overdue_seen = False
    for e in events:
        r.on_event(e)
        overdue_seen = overdue_seen or bool(r.files_overdue())
    assert overdue_seen
    r.advance_to(START + 8 * DAY)
    still = sum(n for (acq, _), n in r.files_overdue().items() if acq == "acq-t1")
    # every file never sent is still overdue (a late one came); none of the other acquirers'
    assert still == len({i.subject for i in sim.injected if i.kind == "marker_missing"
                         and i.acquirer == "acq-t1"}) > 0
