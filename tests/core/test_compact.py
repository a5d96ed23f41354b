"""The compact state: what the live worker keeps (``evidence=False``) decides exactly the same
findings as the full state replay keeps, and holds no card number, terminal or trace field."""
from __future__ import annotations

import json

from streams.core.reconcile import _EMPTY, ColumnBatchItem, ListBatchItem, Merchant, Reconciler

from .builders import credit, ms, net, policy, refund, reversal, sale
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


# -- the compact forms themselves (issue 13): columns for a live batch's sales, one list of items
# per close time, and the merchant maps shared empty until written.



def _batch_sales(r: Reconciler) -> dict[str, list[tuple]]:
    out = {}
    for m in r.merchants.values():
        for item in m.items.values():
            if item.is_batch:
                out[item.key] = [(s.auth_id, s.channel, s.amount_minor, s.approved,
                                  s.event_time_ms, s.reversed_minor, s.refunded_minor,
                                  s.adjustments, s.captured_minor()) for s in item.sales]
    return out


def test_a_live_batch_keeps_its_sales_as_columns_that_read_as_the_replay_sales_objects():
    events = _stream(seed=11, hours=30)
    full = Reconciler(POLICY)
    lean = Reconciler(POLICY, evidence=False)
    full.on_events(events)
    lean.on_events(events)
    kinds = {type(i) for m in lean.merchants.values() for i in m.items.values() if i.is_batch}
    assert kinds == {ColumnBatchItem}
    assert {type(i) for m in full.merchants.values() for i in m.items.values()
            if i.is_batch} == {ListBatchItem}
    seen, expected = _batch_sales(lean), _batch_sales(full)
    assert seen == expected
    # the stream has batches of several sales, declined sales and adjusted ones
    rows = [row for sales in seen.values() for row in sales]
    assert max(len(sales) for sales in seen.values()) > 1
    assert any(not row[3] for row in rows) and any(row[7] for row in rows)


def test_a_reversal_and_a_refund_of_a_live_batch_sale_are_written_to_its_columns():
    p = policy()
    r = Reconciler(p, evidence=False)
    kw = dict(acquirer="acq-batch", batch_id="B")
    r.on_events([sale("s1", "2026-10-08 12:00", 10_000, **kw),
                 sale("s2", "2026-10-08 12:05", 4_000, status="declined", **kw),
                 sale("s3", "2026-10-08 12:10", 6_000, **kw),
                 reversal("s3", "2026-10-08 12:20", 1_000, acquirer="acq-batch"),
                 refund("s3", "2026-10-08 12:30", 500, acquirer="acq-batch")])
    r.advance_to(ms("2026-10-08 13:00"))
    item = r.merchants["m1"].items[next(iter(r.merchants["m1"].items))]
    assert isinstance(item, ColumnBatchItem)
    assert list(item.amounts) == [10_000, 4_000, 6_000]
    assert item.declined == {1}
    assert item.adjusted is not None and sorted(item.adjusted) == [2]
    s3 = item.sales[2]
    assert (s3.reversed_minor, s3.refunded_minor, s3.captured_minor()) == (1_000, 500, 5_000)
    assert [a[0] for a in s3.adjustments] == ["reversal", "refund"]
    assert item.sales[-1].auth_id == "s3" and len(item.sales) == 3


def _one_batch_moved(evidence: bool, second_at: str, paid_at: str | None) -> list:
    """Batch "X" of acq-batch (T+1 10:00, cut-off 23:00, grace 1h): a sale on Oct 8, then one
    after the cut-off, which moves the batch to the next trade date."""
    p = policy()
    r = Reconciler(p, evidence=evidence)
    kw = dict(acquirer="acq-batch", batch_id="X")
    events = [sale("x1", "2026-10-08 12:00", 10_000, **kw), sale("x2", second_at, 5_000, **kw)]
    if paid_at is not None:
        events.append(credit("cX", paid_at, net(10_000) + net(5_000), batch_id="X",
                             acquirer="acq-batch"))
    out = r.on_events(events)
    out += r.advance_to(ms("2026-10-20 00:00"))
    return [(f.kind.value, f.status.value, f.deadline_ms) for f in out]


def test_a_batch_whose_close_moved_later_does_not_close_at_its_old_time():
    # x2 at 23:30 is trade date Oct 9: the batch is due Sat Oct 10 10:00 (a make-up workday),
    # not Fri Oct 9 10:00. Paid on Oct 9 at 12:00: on time, no finding; the old close entry
    # (Oct 9 11:00) must not close it as missing.
    for evidence in (True, False):
        assert _one_batch_moved(evidence, "2026-10-08 23:30", "2026-10-09 12:00") == []
        unpaid = _one_batch_moved(evidence, "2026-10-08 23:30", None)
        assert unpaid == [("missing", "open", ms("2026-10-10 10:00"))]


def test_a_batch_moved_to_a_trade_date_with_the_same_due_date_closes_once():
    # Sep 30 12:00 is due Oct 8 (holiday week); Sep 30 23:30 is trade date Oct 1, a holiday,
    # also due Oct 8 10:00: the move keeps the close, and the batch closes once.
    p = policy()
    for evidence in (True, False):
        r = Reconciler(p, evidence=evidence)
        kw = dict(acquirer="acq-batch", batch_id="H")
        out = r.on_events([sale("h1", "2026-09-30 12:00", 10_000, **kw),
                           sale("h2", "2026-09-30 23:30", 5_000, **kw)])
        out += r.advance_to(ms("2026-10-20 00:00"))
        assert [(f.kind.value, f.deadline_ms) for f in out] == [
            ("missing", ms("2026-10-08 10:00"))]


def test_a_merchant_shares_one_read_only_empty_map_until_it_writes():
    m = Merchant("m9")
    assert m.credits is _EMPTY and m.deductions is _EMPTY and m.buffered is _EMPTY
    assert m.batch_of is _EMPTY and m.waiting_refs is _EMPTY and not m.amount_only
    try:
        m.credits["c1"] = None  # type: ignore[assignment]
    except TypeError as exc:
        assert "read-only" in str(exc)
    else:
        raise AssertionError("the shared empty map took a write")
    for write in (lambda: _EMPTY.setdefault("k", 1), lambda: _EMPTY.update(k=1)):
        try:
            write()
        except TypeError:
            pass
        else:
            raise AssertionError("the shared empty map took a write")
    assert len(_EMPTY) == 0
    own = m.own_credits()
    assert own is m.credits and own is not _EMPTY and type(own) is dict
    assert Merchant("m10").credits is _EMPTY


def test_a_quiet_merchant_goes_back_to_the_shared_empty_buffer():
    r = Reconciler(policy(), evidence=False)
    r.on_events([sale("q1", "2026-10-08 12:00", 10_000)])
    assert r.merchants["m1"].buffered and r.merchants["m1"].buffered is not _EMPTY
    r.advance_to(ms("2026-10-08 12:05"))
    assert r.merchants["m1"].buffered is _EMPTY
