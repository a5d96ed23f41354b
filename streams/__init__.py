"""settlewatch: a streaming anomaly monitor for card-payment settlement.

Rooms by role, imports pointing down only (pyproject.toml's import-linter contracts):
`cli` -> `ops`, `bench` -> `live`, `audit`, `sim` -> `wire` -> `core` (and `runtime`).
"""
