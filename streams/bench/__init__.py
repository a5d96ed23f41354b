"""bench: benchmarks that print their figures as one JSON line each.

Owns `settlewatch bench core`, `bench replay` and `bench causes` (`core`, `replay`,
`causes`, `command`), `settlewatch bench-worker` (`worker`) and `python -m streams.bench.wire`
(`wire`). Nothing shipped imports it. It may import every room below it (`live`, `audit`,
`sim`, `wire`, `core`); never `ops` or the CLI.
"""
