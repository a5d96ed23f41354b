"""The compact state: what the live worker keeps (``evidence=False``) decides exactly the same
findings as the full state replay keeps, and holds no card number, terminal or trace field."""
from __future__ import annotations

import json

from streams.core.reconcile import Reconciler

from .test_changes import POLICY, UNTIL
from .test_changes import _stream as _changes_stream


def _stream(seed: int = 3, hours: int = 72) -> list:
    return _changes_stream(seed, hours)


def wire_fields(findings) -> list[tuple]:
    return [(f.anomaly_id, f.kind.value, f.status.value, f.merchant_id, f.subject, f.auth_ids,
             f.credit_ids, f.expected_minor, f.received_minor, f.deadline_ms, f.event_time_ms,
             f.detected_at_ms, f.probable_cause) for f in findings]


def run(events, **kw) -> tuple[Reconciler, list]:
    r = Reconciler(POLICY, **kw)
    out = []
    for n in range(0, len(events), 50):
        out += r.on_events(events[n:n + 50])
    out += r.advance_to(UNTIL)
    return r, out


def test_a_reconciler_without_evidence_raises_the_same_findings_with_none_as_evidence():
    events = _stream()
    _, full = run(events)
    _, lean = run(events, evidence=False)
    assert len(full) > 20
    assert wire_fields(lean) == wire_fields(full)
    assert all(f.evidence is not None for f in full)
    assert all(f.evidence is None for f in lean)


def test_the_state_without_evidence_holds_no_card_number_terminal_or_trace_reference():
    events = _stream(hours=24)
    r = Reconciler(POLICY, evidence=False, track_changes=True)
    r.on_events(events)
    changes = r.take_changes()
    sales = [s for m in r.merchants.values() for i in m.items.values() for s in i.sales]
    assert sales
    assert all(s.pan_masked is None and s.terminal_id is None and s.refs is None
               for s in sales)
    # items and batch sales (tags i and s); buffered events (b) are the inputs themselves
    state = json.dumps({k: v for k, v in changes.items() if k.split("\x1f")[1] in "is"})
    assert "*" not in state and '"T' not in state
    assert any(k.split("\x1f")[1] == "i" for k in changes)


def test_a_reconciler_without_evidence_restored_from_its_changes_gives_the_same_findings():
    events = _stream(seed=5)
    _, expected = run(events, evidence=False)
    cut = len(events) // 2
    first = Reconciler(POLICY, evidence=False, track_changes=True)
    out = first.on_events(events[:cut])
    table = {k: json.loads(json.dumps(v)) for k, v in first.take_changes().items()
             if v is not None}
    second = Reconciler(POLICY, evidence=False)
    second.restore_changes(list(table.items()))
    second.restore_clock(first.snapshot_clock())
    out += second.drain()
    for n in range(cut, len(events), 50):
        out += second.on_events(events[n:n + 50])
    out += second.advance_to(UNTIL)
    assert wire_fields(out) == wire_fields(expected)
