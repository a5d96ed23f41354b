"""The open-item counters (open_summary) agree with a scan of the items (open_items)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.reconcile import Reconciler

from .test_changes import POLICY, UNTIL, _stream


def scanned(r: Reconciler) -> dict:
    out: dict = {}
    for acquirer, currency, first_ms, expected, missing in r.open_items():
        row = out.setdefault((acquirer, currency, first_ms // 60_000), [0, 0, 0, 0])
        row[0] += 1
        row[1] += expected
        if missing:
            row[2] += 1
            row[3] += expected
    return {k: tuple(v) for k, v in out.items()}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), every=st.integers(50, 700))
def test_the_counters_equal_a_scan_of_the_items_at_any_point(seed, every):
    r = Reconciler(POLICY)
    for n, e in enumerate(_stream(seed)):
        r.on_event(e)
        if n % every == every - 1:
            assert r.open_summary() == scanned(r)
    r.advance_to(UNTIL)
    assert r.open_summary() == scanned(r)
