"""`settlewatch bench core` runs end to end at a small size and prints its one JSON line with
every figure README's performance table quotes (the figures themselves are measured at the
sizes README gives, not here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_core_prints_one_json_line_with_every_figure():
    settlewatch = str(Path(sys.executable).parent / "settlewatch")
    out = subprocess.run(
        [settlewatch, "bench", "core", "--events", "6000", "--small", "3000", "--open-sales",
         "3000"],
        check=True, capture_output=True, text=True, timeout=300).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("events_per_s_small", "events_per_s_large", "ratio_large_to_small",
                "events_per_cpu_s_small", "events_per_cpu_s_large", "gc_share_small",
                "gc_share_large", "live_events_per_cpu_s_small", "bytes_per_held_sale_live",
                "bytes_per_open_sale", "bytes_per_open_sale_with_evidence",
                "bytes_per_open_sale_released_at_end", "loadavg_1m_before_after"):
        assert key in r, key
    assert r["small"] > 0 and r["large"] > r["small"]
    assert r["live_held_sales_small"] > 0 and r["bytes_per_held_sale_live"] > 0
    assert r["findings_large"] > 0
