"""`settlewatch simulate`: simulated traffic to Kafka or to JSON-lines files."""
from __future__ import annotations

import random

from streams.core.events import Credit, FileComplete
from streams.sim.simulator import (SimConfig, Simulation, bad_records, parse_faults, parse_rate,
                                   parse_slowdown)


def _write_files(sim: Simulation, out_dir: str, bad_rate: float, now_ms: int) -> dict:
    """auths.jsonl, credits.jsonl (and bad records among them), truth.json; returns counts."""
    import os

    import orjson

    from streams.wire import SETTLEMENT_TOPIC, event_to_json
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(sim.cfg.seed + 1)
    counts = {"authorisations": 0, "settlements": 0, "bad": 0}
    bad_reasons: dict[str, int] = {}
    with open(os.path.join(out_dir, "auths.jsonl"), "wb") as fa, \
            open(os.path.join(out_dir, "credits.jsonl"), "wb") as fc:
        for e in sim.events():
            if type(e) is Credit or type(e) is FileComplete:  # markers travel with credits
                fc.write(event_to_json(e) + b"\n")
                counts["settlements"] += 1
            else:
                fa.write(event_to_json(e) + b"\n")
                counts["authorisations"] += 1
            if bad_rate and rng.random() < bad_rate:
                ((topic, raw, reason),) = bad_records(rng, 1, now_ms)
                if reason in ("wrong_topic", "malformed_json") and topic != SETTLEMENT_TOPIC:
                    continue  # in files the type names the topic: these cannot be told apart
                (fc if topic == SETTLEMENT_TOPIC else fa).write(raw + b"\n")
                counts["bad"] += 1
                bad_reasons[reason] = bad_reasons.get(reason, 0) + 1
    truth = {"injected": sorted(sim.counts.items()), "bad_records": sorted(bad_reasons.items()),
             "faults": [[i.kind, i.merchant_id, i.subject, i.acquirer] for i in sim.injected]}
    with open(os.path.join(out_dir, "truth.json"), "wb") as ft:
        ft.write(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    return counts


def _simulate_options(fn):
    import click
    for option in reversed([
        click.option("--config", type=click.Path(exists=True, dir_okay=False),
                     help="Policy file (TOML); default: the packaged sample."),
        click.option("--rate", default="50/s", show_default=True,
                     help="Sales per second of event time (e.g. 500/s, 30/m)."),
        click.option("--merchants", default=1000, show_default=True, type=int),
        click.option("--faults", default="late=1%,missing=1%,duplicate=0.5%,underpaid=1%,"
                     "overpaid=0.5%,orphan=0.2%,refund_netted=0.5%,redelivery=0.5%",
                     show_default=True, help="Fault rates per settlement item."),
        click.option("--bad", "bad_rate", default=0.0, show_default=True, type=float,
                     help="Share of bad records mixed in (dead-letter path), e.g. 0.001."),
        click.option("--seed", default=1, show_default=True, type=int),
        click.option("--start", help="Event time of the first sale, RFC 3339 "
                     "(files: default 2026-10-08T00:00:00Z; Kafka: now minus the span)."),
        click.option("--duration", default="1d", show_default=True,
                     help="Span of event time to simulate (e.g. 6h, 7d)."),
        click.option("--jitter", default="2m", show_default=True,
                     help="Out-of-orderness of emission (keep under the policy's lateness)."),
        click.option("--out", "out_dir", type=click.Path(file_okay=False),
                     help="Write auths.jsonl, credits.jsonl and truth.json here."),
        click.option("--bootstrap", help="Produce to these Kafka servers instead."),
        click.option("--speedup", default=60.0, show_default=True, type=float,
                     help="Kafka: event time runs this many times faster than the wall clock."),
        click.option("--slowdown", "slowdowns", multiple=True,
                     help="ACQUIRER@RFC3339Z+DURATION: from then on (credits due then or "
                          "later) the acquirer books its credits that much later "
                          "(acq-t1@2026-10-12T00:00:00Z+3h); repeatable."),
        click.option("--markers/--no-markers", default=False, show_default=True,
                     help="Also emit settlement_file_complete markers (contract v1.1), one per "
                     "merchant and settle date; faults marker_late, marker_missing, "
                     "marker_short apply to them."),
    ]):
        fn = option(fn)
    return fn


def _make_command():
    import time

    import click

    from streams.core.policy import PolicyError, default_policy, load_policy, parse_duration_ms

    @click.command("simulate")
    @_simulate_options
    def simulate_command(config, rate, merchants, faults, bad_rate, seed, start, duration,
                         jitter, out_dir, bootstrap, speedup, slowdowns, markers):
        """Generate realistic authorisations and credits with injected faults."""
        from streams import wire
        try:
            policy = load_policy(config) if config else default_policy()
            span_ms = parse_duration_ms(duration, "--duration")
            jitter_ms = parse_duration_ms(jitter, "--jitter")
            cfg_faults = parse_faults(faults)
            sales_per_second = parse_rate(rate)
            cfg_slowdowns = tuple(parse_slowdown(text) for text in slowdowns)
        except (PolicyError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        if bool(out_dir) == bool(bootstrap):
            raise click.UsageError("give exactly one of --out DIR or --bootstrap HOST:PORT")
        now_ms = int(time.time() * 1000)
        if start:
            start_ms = wire.parse_time_ms(start)
        elif out_dir:
            start_ms = wire.parse_time_ms("2026-10-08T00:00:00Z")
        else:
            # live: event time starts in the past and catches up with the wall clock at the end
            start_ms = now_ms - span_ms
        cfg = SimConfig(start_ms=start_ms, end_ms=start_ms + span_ms, merchants=merchants,
                        sales_per_second=sales_per_second, faults=cfg_faults, seed=seed,
                        jitter_ms=jitter_ms, slowdowns=cfg_slowdowns, markers=markers)
        sim = Simulation(cfg, policy)
        if out_dir:
            counts = _write_files(sim, out_dir, bad_rate, now_ms)
            click.echo(f"wrote {counts['authorisations']} authorisation events, "
                       f"{counts['settlements']} credits and {counts['bad']} bad records "
                       f"to {out_dir}; injected: "
                       + ", ".join(f"{k} {n}" for k, n in sorted(sim.counts.items())))
            return
        from streams.sim.producer import simulate_to_kafka
        # bad records: one after every 1/bad_rate events (simulate_to_kafka's bad_every)
        bad_every = round(1 / bad_rate) if bad_rate else 0
        expected = int(sales_per_second * span_ms / 1000 * 1.5) + 1
        bad = (bad_records(random.Random(seed + 1), expected // bad_every + 1, now_ms)
               if bad_every else ())

        def progress(stats) -> None:
            click.echo(f"sent {stats.authorisations} authorisation events, {stats.settlements} "
                       f"credits, {stats.bad} bad records in {stats.wall_s:.0f}s", err=True)

        try:
            stats = simulate_to_kafka(sim.events(), bootstrap, speed=speedup, bad=bad,
                                      bad_every=bad_every, progress=progress,
                                      progress_every_s=10.0)
        except RuntimeError as exc:  # records the broker refused
            raise click.ClickException(str(exc)) from exc
        click.echo(f"sent {stats.authorisations} authorisation events, {stats.settlements} "
                   f"credits and {stats.bad} bad records to {bootstrap}"
                   + (" (stopped)" if stats.stopped else "") + "; injected: "
                   + ", ".join(f"{k} {n}" for k, n in sorted(sim.counts.items())))

    return simulate_command


simulate_command = _make_command()


