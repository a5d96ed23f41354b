"""audit: what auditors run over the past, apart from the live consumer group.

Owns file replay (`files`: JSON-lines in, findings/dead letters/summary/evidence out), the
Kafka time-range replay (`kafka`), evidence for a merchant's claim (`evidence`), settlement
delay statistics (`delays`), the self-contained report.html (`report`) and the `settlewatch
replay` command (`command`). It may import `streams.core`, `streams.wire`, `streams.runtime`
and kafka-python; never faust, `live`, `sim`, `ops`, `bench` or the CLI.
"""
