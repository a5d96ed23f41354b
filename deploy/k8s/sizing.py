"""Memory for one settlewatch worker pod, from the measured memory per open sale.

    python deploy/k8s/sizing.py [--sales-per-day N] [--replicas R] ...

prints the `resources` of deployment.yaml for those inputs (the defaults are the figures in
deployment.yaml; tests/deploy/test_k8s.py checks that they agree). The formula:

    held      = sales_per_day * (open_days + keep_settled_days)     items in a worker's state
    share     = ceil(partitions / replicas) / partitions           the most one pod holds
    state     = held * share * bytes_per_sale * table_factor
    request   = base + state          limit = limit_factor * request

Inputs and where they come from (update them when the measurements change):
- bytes_per_sale = 994: `settlewatch bench core`'s memory per open sale before issue 13's
  compaction. The core now measures 641 bytes per sale held, open or settled, with its credit
  record (`bytes_per_held_sale_live`, 554k events over 5 days; an open sale alone is 391,
  `bytes_per_open_sale`). 994 stays until the worker's peak at a backlog is matched to this
  formula (README: 1.82 GB at a 1M-record backlog, 662 MB at 300k, once its state values were
  right-sized; 7.1 and 2.25 GB before), because a pod's memory is not the core's alone;
  lowering it first would risk OOM kills.
- keep_settled_days = 7: settlewatch.toml [time] keep_settled; settled items are kept that long
  to catch duplicates (the figure above is for the held mix, open and settled).
- open_days = 2: a T+1 sale is open about a day and a half; a week-long holiday makes it up to
  9 (size for your calendar's longest, or rely on limit_factor).
- table_factor = 2: an assumption, not measured: with the memory:// store faust's table also
  holds each merchant's serialised state next to the reconciler's objects.
- base = 250 MiB: a worker with no state yet (Python, faust, aiokafka, numpy,
  prometheus-client) measured 75-100 MiB RSS (docs/ops-board.png's demo run, "Worker CPU and
  memory" of the Pipeline board), plus room for the consumers' fetch buffers (up to 32 MiB
  per partition fetch, streams/live/app.py MAX_VALUE_BYTES); rounded up.
- limit_factor = 2: headroom for a restore (old and new copies of a partition's state) and
  for backlogs after holidays.
"""
from __future__ import annotations

import argparse
import math

MIB = 1 << 20
DEFAULTS = dict(sales_per_day=100_000, partitions=6, replicas=3, open_days=2.0,
                keep_settled_days=7.0, bytes_per_sale=994, table_factor=2.0, base_mib=250,
                limit_factor=2.0)


def memory_mib(sales_per_day: int, partitions: int, replicas: int, open_days: float,
               keep_settled_days: float, bytes_per_sale: int, table_factor: float,
               base_mib: int, limit_factor: float) -> tuple[int, int]:
    """(request, limit) in MiB, each rounded up to 50 MiB."""
    if not 1 <= replicas <= partitions:
        raise ValueError(f"replicas ({replicas}) must be between 1 and partitions "
                         f"({partitions}): a worker beyond the partition count gets none")
    held = sales_per_day * (open_days + keep_settled_days)
    share = math.ceil(partitions / replicas) / partitions
    state = held * share * bytes_per_sale * table_factor / MIB
    request = base_mib + state

    def up(x: float) -> int:
        return int(math.ceil(x / 50) * 50)

    return up(request), up(request * limit_factor)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in DEFAULTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = vars(p.parse_args())
    request, limit = memory_mib(**args)
    print(f"requests.memory: {request}Mi\nlimits.memory: {limit}Mi")


if __name__ == "__main__":
    main()
