"""The topic names of contract v1, and a `Topics` set of them (with a prefix for private sets)."""
from __future__ import annotations

from dataclasses import dataclass

AUTH_TOPIC = "pos.authorisations"
SETTLEMENT_TOPIC = "pos.settlements"
ANOMALY_TOPIC = "settlewatch.anomalies"
DEADLETTER_TOPIC = "settlewatch.deadletter"
INPUT_TOPICS = (AUTH_TOPIC, SETTLEMENT_TOPIC)
TICK_TOPIC = "settlewatch.ticks"


@dataclass(frozen=True, kw_only=True)
class Topics:
    """Topic names. `with_prefix("t1.")` gives a private set (tests, a second deployment)."""

    authorisations: str = AUTH_TOPIC
    settlements: str = SETTLEMENT_TOPIC
    ticks: str = TICK_TOPIC
    anomalies: str = ANOMALY_TOPIC
    deadletter: str = DEADLETTER_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        d = cls()
        return cls(**{f: prefix + getattr(d, f) for f in ("authorisations", "settlements",
                                                          "ticks", "anomalies", "deadletter")})

    def all(self) -> tuple[str, ...]:
        return (self.authorisations, self.settlements, self.ticks, self.anomalies,
                self.deadletter)


