"""`settlewatch worker`: the click command that configures and starts the live worker."""
from __future__ import annotations

import sys
from typing import Any

import click

from streams.live.app import load_policy_for, run_worker
from streams.live.config import LiveConfig


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from streams.core.policy import PolicyError, parse_duration_ms
    if value.strip() == "0":
        return 0
    try:
        return parse_duration_ms(value, param.name or "")
    except PolicyError as exc:
        raise click.BadParameter(exc.message if hasattr(exc, "message") else str(exc)) from exc


# Every LiveConfig field is one option here, each with its SETTLEWATCH_* variable: the flags and
# the environment are read by click alone, so they cannot disagree; `faust -A
# streams.live.faust_app worker` reads the same options from the environment
# (config_from_environment).
@click.command("worker")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
              envvar="SETTLEWATCH_CONFIG", help="Policy file (default: the packaged sample).")
@click.option("--bootstrap", envvar="SETTLEWATCH_BOOTSTRAP", help="Kafka bootstrap servers "
              "[127.0.0.1:9092].")
@click.option("--metrics-port", type=int, envvar="SETTLEWATCH_METRICS_PORT",
              help="Prometheus /metrics port, 0 for none [9308].")
@click.option("--metrics-addr", envvar="SETTLEWATCH_METRICS_ADDR",
              help="Address the metrics server binds [127.0.0.1].")
@click.option("--app-id", envvar="SETTLEWATCH_APP_ID",
              help="faust app id: consumer group and changelog prefix [settlewatch].")
@click.option("--topic-prefix", envvar="SETTLEWATCH_TOPIC_PREFIX",
              help="Prefix for every topic name (a private topic set).")
@click.option("--partitions", type=int, envvar="SETTLEWATCH_PARTITIONS",
              help="Partitions of the input, tick and anomaly topics [6].")
@click.option("--tick-interval", callback=_duration, envvar="SETTLEWATCH_TICK_INTERVAL",
              help="How often silent inputs are checked, 0 for no clock ticks [1s].")
@click.option("--tick-allowance", callback=_duration, envvar="SETTLEWATCH_TICK_ALLOWANCE",
              help="A tick moves event time to the wall clock minus this [lateness + 2m].")
@click.option("--tick-margin", callback=_duration, envvar="SETTLEWATCH_TICK_MARGIN",
              help="Without --tick-allowance, ticks trail the wall clock by the policy's "
              "lateness plus this [2m].")
@click.option("--tick-idle", callback=_duration, envvar="SETTLEWATCH_TICK_IDLE",
              help="An input is silent after this long without a record [10s].")
@click.option("--dedupe-lookback", callback=_duration, envvar="SETTLEWATCH_DEDUPE_LOOKBACK",
              help="How far back the output is read on restore to drop repeats [15m].")
@click.option("--baseline-interval", callback=_duration, envvar="SETTLEWATCH_BASELINE_INTERVAL",
              help="How often, at most, the early warning's learned baseline is written to the "
              "changelog when it changed (and at a clean stop) [5m].")
@click.option("--batch-max", type=int, envvar="SETTLEWATCH_BATCH_MAX",
              help="Records per batch at most [50000].")
@click.option("--batch-within", callback=_duration, envvar="SETTLEWATCH_BATCH_WITHIN",
              help="The longest a batch waits to fill [1s].")
@click.option("--session-timeout", callback=_duration, envvar="SETTLEWATCH_SESSION_TIMEOUT",
              help="A worker that stops answering loses its partitions after this [10s].")
@click.option("--offset-reset", type=click.Choice(["earliest", "latest"]),
              envvar="SETTLEWATCH_OFFSET_RESET",
              help="Where a new app id starts reading the inputs [earliest].")
@click.option("--data-dir", envvar="SETTLEWATCH_DATA_DIR",
              help="faust data directory [.settlewatch/<app id>].")
@click.option("--store", envvar="SETTLEWATCH_STORE",
              help="faust table store: memory:// or rocksdb:// [memory://].")
@click.option("--loglevel", envvar="SETTLEWATCH_LOGLEVEL", help="[info]")
@click.option("--count-only", is_flag=True, hidden=True,
              help="Throughput baseline: an agent that only counts records.")
def worker_command(count_only: bool, **options: Any) -> None:
    """Run the live monitor: reconcile the POS and settlement topics into findings."""
    try:
        cfg = config_from_options(options)
        load_policy_for(cfg)
    except Exception as exc:  # PolicyError, a bad value
        raise click.ClickException(str(exc)) from exc
    sys.argv = [sys.argv[0]]  # faust's Worker reads no options of ours
    run_worker(cfg, count_only=count_only)


_DURATIONS = ("tick_interval", "tick_allowance", "tick_margin", "tick_idle", "dedupe_lookback",
              "baseline_interval", "batch_within", "session_timeout")


def config_from_options(options: dict[str, Any]) -> LiveConfig:
    """LiveConfig from the worker command's parsed options (those not given keep the default)."""
    values = {(k + "_ms" if k in _DURATIONS else k): v for k, v in options.items()
              if v is not None and k != "count_only"}
    return LiveConfig(**values)


def config_from_environment(args: list[str] | None = None) -> LiveConfig:
    """The settings `settlewatch worker ARGS` would run with: its options, read by click from
    `args` and the SETTLEWATCH_* variables (for `faust -A streams.live.faust_app`)."""
    with worker_command.make_context("worker", list(args or [])) as ctx:
        return config_from_options(ctx.params)
