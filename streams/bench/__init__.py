"""bench: benchmarks that print their figures as one JSON line each.

Owns `settlewatch bench core` and `bench replay` (`core`, `replay`, `command`),
`settlewatch bench-worker` (`worker`) and `python -m streams.bench.wire` (`wire`). Nothing
shipped imports it. It may import every room below it (`live`, `audit`, `sim`, `wire`,
`core`); never `ops` or the CLI.
"""
