"""The `settlewatch` command: a click group whose subcommands live in their own modules.

Subcommands are imported only when called, so `settlewatch replay` never pays for importing
faust, and each edge keeps its options beside its code.
"""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command
COMMANDS = {
    "worker": "streams.live.command:worker_command",
    "simulate": "streams.sim.command:simulate_command",
    "replay": "streams.audit.command:replay_command",
    "demo": "streams.ops.demo:demo_command",
    "bench": "streams.bench.command:bench_command",
    "bench-worker": "streams.bench.worker:worker_bench_command",
    "smtp-sink": "streams.ops.smtpsink:smtp_sink_command",
    "check-config": "streams.cli:check_config_command",
    "pictures": "streams.ops.pictures:pictures_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="settlewatch")
def main() -> None:
    """settlewatch: find late, missing, duplicate and short settlement credits as they happen."""


@click.command("check-config")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              required=True, help="Policy file (TOML) to check.")
def check_config_command(config_path: str) -> None:
    """Load a policy file and say what it sets up, or which key is wrong."""
    from streams.core.policy import PolicyError, load_policy
    try:
        policy = load_policy(config_path)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"ok: {len(policy.cycles)} cycles, {len(policy.fees)} fee rules, "
               f"timezone {policy.timezone}")
