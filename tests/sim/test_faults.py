"""The simulator's per-acquirer fault rates ("acq-d0:missing=25%"): one bad acquirer next to
normal ones, for the demo and the picture of the board (streams/ops/pictures.py)."""
from __future__ import annotations

import pytest

from streams.core.events import Credit
from streams.core.policy import default_policy
from streams.sim.simulator import SimConfig, Simulation, parse_faults

HOUR = 3_600_000
BAD = "acq-d0"


def test_a_fault_rate_can_be_set_for_one_acquirer():
    assert parse_faults("missing=1%,acq-d0:missing=40%,acq-t1:late=0") == {
        "missing": 0.01, "acq-d0:missing": 0.4, "acq-t1:late": 0.0}
    with pytest.raises(ValueError):
        parse_faults("acq-d0:misssing=1%")


def test_the_bad_acquirer_gets_its_own_rate_and_the_others_keep_theirs():
    now = 1_800_000_000_000

    def missing(faults: str) -> tuple[int, int]:
        cfg = SimConfig(start_ms=now - 48 * HOUR, end_ms=now, merchants=200,
                        sales_per_second=0.2, faults=parse_faults(faults), seed=3)
        sim = Simulation(cfg, default_policy())
        list(sim.events())
        kinds = [i.acquirer for i in sim.injected if i.kind == "missing"]
        return kinds.count(BAD), len(kinds) - kinds.count(BAD)

    bad_base, others_base = missing("missing=1%")
    bad, others = missing(f"missing=1%,{BAD}:missing=50%")
    assert bad >= 20 and bad > 10 * max(bad_base, 1)
    assert 0.7 * others_base <= others <= 1.3 * others_base  # the others keep their 1%


def test_without_an_override_the_simulation_is_unchanged():
    """Seeded traffic (examples/, the benchmarks) must not change with the new option."""
    now = 1_800_000_000_000
    base = dict(start_ms=now - 24 * HOUR, end_ms=now, merchants=50, sales_per_second=0.1,
                seed=9)
    a = list(Simulation(SimConfig(faults=parse_faults("missing=5%"), **base),
                        default_policy()).events())
    b = list(Simulation(SimConfig(faults=parse_faults("missing=5%,acq-nobody:missing=90%"),
                                  **base), default_policy()).events())
    assert a == b


def test_a_slowdown_books_that_acquirers_credits_later_from_its_day_on_and_no_one_elses():
    from streams.core.policy import default_policy
    from streams.sim.simulator import SimConfig, Simulation, parse_slowdown

    acquirer, from_ms, delay_ms = parse_slowdown("acq-t1@2026-10-13T00:00:00Z+3h")
    assert (acquirer, delay_ms) == ("acq-t1", 3 * 3_600_000)
    policy = default_policy()
    start = from_ms - 6 * 86_400_000

    def credits(slowdowns):
        cfg = SimConfig(start_ms=start, end_ms=from_ms + 3 * 86_400_000, merchants=40,
                        sales_per_second=0.05, seed=5, slowdowns=slowdowns)
        return {e.credit_id: e for e in Simulation(cfg, policy).events()
                if isinstance(e, Credit)}

    plain, slowed = credits(()), credits(((acquirer, from_ms, delay_ms),))
    assert plain.keys() == slowed.keys()
    moved = [cid for cid in plain if slowed[cid].event_time_ms != plain[cid].event_time_ms]
    assert moved and all(slowed[c].acquirer == acquirer for c in moved)
    assert all(slowed[c].event_time_ms - plain[c].event_time_ms == delay_ms for c in moved)
    # credits due before the slowdown began are untouched
    assert all(plain[c].event_time_ms >= from_ms - 2 * 86_400_000 for c in moved)


def test_a_bad_slowdown_is_refused_with_the_expected_form():
    import pytest

    from streams.sim.simulator import parse_slowdown
    with pytest.raises(ValueError, match="ACQUIRER@RFC3339Z"):
        parse_slowdown("acq-t1+3h")
