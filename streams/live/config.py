"""`LiveConfig`: the settings of the live worker, as the `settlewatch worker` options give them."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.policy import Policy, parse_duration_ms
from streams.wire.topics import Topics


@dataclass(frozen=True)
class LiveConfig:
    """Settings of the live worker. Every field has an environment variable, SETTLEWATCH_ plus
    the upper-case name (SETTLEWATCH_BOOTSTRAP, SETTLEWATCH_TICK_INTERVAL="1s", ...), so that
    `faust -A streams.live.app worker` can be configured without the settlewatch command."""

    app_id: str = "settlewatch"
    bootstrap: str = "127.0.0.1:9092"
    config: str | None = None  # policy file (settlewatch.toml); None: the packaged default
    topic_prefix: str = ""
    partitions: int = 6  # of every input topic, the tick topic and the changelogs
    metrics_port: int = 9308  # 0: no metrics server
    metrics_addr: str = "127.0.0.1"
    tick_interval_ms: int = 1_000
    tick_allowance_ms: int | None = None  # None: the policy's lateness + tick_margin_ms
    tick_margin_ms: int = 120_000
    tick_idle_ms: int = 10_000  # an input counts as silent after this long without a record
    dedupe_lookback_ms: int = 15 * 60_000
    # The early warning's learned baseline goes to the changelog at most this often, when it
    # changed, and at a clean stop (streams.live.ewstate).
    baseline_interval_ms: int = 5 * 60_000
    # State is written once per batch for each merchant the batch touched: bigger batches
    # write less (measured: 2.3k events/s at 5,000 / 200 ms, 5.2k at 50,000 / 1 s, 2,000
    # merchants), at the cost of up to one batch window of finding latency.
    batch_max: int = 50_000  # events per batch at most
    batch_within_ms: int = 1_000  # the longest a batch waits to fill
    store: str = "memory://"
    data_dir: str | None = None  # faust's data directory; None: .settlewatch/<app_id>
    session_timeout_ms: int = 10_000  # a killed worker's partitions move after this long
    offset_reset: str = "earliest"
    loglevel: str = "info"

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    def allowance_ms(self, policy: Policy) -> int:
        if self.tick_allowance_ms is not None:
            return self.tick_allowance_ms
        return policy.lateness_ms + self.tick_margin_ms
