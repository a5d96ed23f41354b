"""core: the pure reconciliation logic, no I/O and no clock.

Owns the vocabulary (`events`: sales, reversals, refunds, credits, findings and their kinds), the
policy (`policy`: fees, settlement cycles, T+N business-day arithmetic, the holiday calendar),
the ISO 4217 table (`currencies`), the event-time reconciler (`reconcile`) and the aging of
its open findings by SLA tier (`aging`). It may import the
standard library (and numpy) only: never faust, aiokafka, kafka, prometheus_client, nor any
other room of streams, and it never reads a clock (the shells pass event time and ticks in).
Checked by the import-linter contracts in pyproject.toml and tests/test_layout.py.
"""
