"""live: the live worker, a faust app around the pure reconciler.

Owns the faust app (`app`: topics, tables, the agent, the tick timer, rebalance hooks), the
worker's per-partition logic apart from faust (`partition`: outbox, dedupe, ticks, offsets),
its settings (`config`) and command (`command`), the Prometheus metrics it serves (`metrics`),
the faust entry point (`faust_app`), every reach past faust's public API (`faust_compat`), exit
codes (`exits`) and diagnostics. It may import `streams.core`, `streams.wire` and
`streams.runtime`, faust, aiokafka, kafka-python and prometheus_client; never `audit`, `sim`,
`ops`, `bench` or the CLI.
"""
