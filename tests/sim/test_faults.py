"""The simulator's per-acquirer fault rates ("acq-d0:missing=25%"): one bad acquirer next to
normal ones, for the demo and the picture of the board (streams/ops/pictures.py)."""
from __future__ import annotations

import pytest

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
