"""`settlewatch demo` finds the repository's stack scripts from its own room (streams/ops/):
`make demo` and `make pictures` start Kafka and the monitoring through them."""
from pathlib import Path

from streams.ops import demo, pictures

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_finds_the_local_stack_and_monitoring_scripts():
    assert demo.STACK == ROOT / "deploy" / "local" / "stack"
    assert demo.STACK.exists() and demo.MONITORING.exists()


def test_pictures_find_the_stack_and_the_dashboards():
    assert pictures.STACK == demo.STACK
    assert sorted(p.name for p in pictures.DASHBOARDS.glob("*.json")) == ["ops.json",
                                                                          "pipeline.json"]
