"""sim: simulated traffic with injected faults, for the demo, tests and benchmarks.

Owns the simulator (`simulator`: merchants, terminals, sales, credits and the faults injected,
with their truth), its Kafka producer (`producer`) and the `settlewatch simulate` command
(`command`). It may import `streams.core`, `streams.wire` and kafka-python; never faust,
`live`, `audit`, `ops`, `bench` or the CLI.
"""
