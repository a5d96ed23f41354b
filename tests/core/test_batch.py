"""on_events(batch): the same findings, in the same order, as on_event per event."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.reconcile import Reconciler

from .test_changes import POLICY, UNTIL, _stream, full


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 400), min_size=1, max_size=8))
def test_feeding_in_batches_gives_the_findings_of_feeding_one_by_one(seed, sizes):
    events = _stream(seed)
    one = Reconciler(POLICY)
    expected = [f for e in events for f in one.on_event(e)] + one.advance_to(UNTIL)
    batched = Reconciler(POLICY)
    got, n, k = [], 0, 0
    while n < len(events):
        size = sizes[k % len(sizes)]
        got += batched.on_events(events[n:n + size])
        n, k = n + size, k + 1
    got += batched.advance_to(UNTIL)
    assert full(got) == full(expected)
    assert batched.stats.as_dict() == one.stats.as_dict()
