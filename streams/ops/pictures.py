"""`settlewatch pictures`: the Grafana dashboards drawn as PNG files from a real Prometheus.

Grafana cannot run on this project's machines, so this draws what it would show: every panel
of every dashboard in grafana/dashboards/*.json, each target's expression run on Prometheus
(`query_range` over the window for time series, an instant query at the window's end for
`instant` targets, as Grafana does), with matplotlib. Output: one PNG per panel
(`<dashboard>/<NN>-<title>.png`) and one per dashboard laid out on Grafana's 24-column grid
(`<dashboard>.png`).

Grafana's variables are replaced as with "All" selected ($acquirer -> .*), `$__range` by the
window and `$__rate_interval` by four scrape intervals (at least 1m), as the data source's
`timeInterval` makes Grafana do.

`--demo SECONDS` makes the window itself: the local stack (when none is running, one of its
own in `<out>/stack/`, so that Prometheus holds this run only; stopped again after), then
`settlewatch demo --duration SECONDS --faults ...` with one bad acquirer, then the pictures of
that run: what `make pictures` runs to draw docs/ops-board.png.

Imports matplotlib only when drawing (the optional extra `pictures`, also in `test`).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "grafana" / "dashboards"
STACK = REPO / "deploy" / "local" / "stack"

# One acquirer (acq-d0, same-day batch settlement) loses a quarter of its credits and pays a
# tenth late; the others have a normal day's few faults.
BAD_ACQUIRER_FAULTS = ("late=1%,missing=0.5%,duplicate=0.5%,underpaid=0.5%,overpaid=0.3%,"
                       "orphan=0.2%,redelivery=0.5%,acq-d0:missing=25%,acq-d0:late=10%")

ALL = ".*"
GRID_COLUMNS = 24


@dataclass
class Series:
    labels: dict[str, str]
    times: list[float] = field(default_factory=list)  # unix seconds
    values: list[float] = field(default_factory=list)

    def last(self) -> float | None:
        for v in reversed(self.values):
            if not math.isnan(v):
                return v
        return None


@dataclass
class Drawn:
    """One panel's data: per target (legend format, series)."""
    panel: dict
    targets: list[tuple[str, list[Series]]]


class Prometheus:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, **params) -> dict:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=self.timeout_s) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus: {body.get('error', body)}")
        return body["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                         end=f"{end:.3f}", step=f"{step:g}")
        return [Series(r["metric"], [float(t) for t, _ in r["values"]],
                       [float(v) for _, v in r["values"]]) for r in data["result"]]

    def instant(self, expr: str, at: float) -> list[Series]:
        data = self._get("/api/v1/query", query=expr, time=f"{at:.3f}")
        if data["resultType"] == "scalar":
            t, v = data["result"]
            return [Series({}, [float(t)], [float(v)])]
        return [Series(r["metric"], [float(r["value"][0])], [float(r["value"][1])])
                for r in data["result"]]


def grafana_expr(expr: str, *, range_s: float, rate_interval_s: float) -> str:
    """The expression as Grafana sends it with every variable at "All"."""
    out = expr.replace("$__rate_interval", f"{int(rate_interval_s)}s")
    out = out.replace("$__range", f"{max(int(range_s), 1)}s")
    out = out.replace("$__interval", f"{max(int(rate_interval_s / 4), 1)}s")
    return re.sub(r"\$\{?(acquirer|channel|topic|instance|worker)\}?", ALL, out)


def legend(fmt: str, labels: dict[str, str], fallback: str) -> str:
    if fmt:
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
        if text:
            return text
    inner = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return inner or fallback


def fetch(prom: Prometheus, dashboard: dict, start: float, end: float,
          scrape_s: float = 5.0) -> list[Drawn]:
    """Every panel's data over [start, end] (rows have none)."""
    step = max(scrape_s, (end - start) / 240)
    rate_interval = max(60.0, 4 * scrape_s, step)
    out = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            out.append(Drawn(panel, []))
            continue
        targets = []
        for t in panel.get("targets", []):
            expr = grafana_expr(t["expr"], range_s=end - start, rate_interval_s=rate_interval)
            series = prom.range(expr, start, end, step)
            if t.get("instant"):
                # Grafana evaluates these at the window's end; a picture drawn after the
                # worker stopped would find its series stale there, so take each series'
                # last value within the window instead (what the panel showed last).
                series = [Series(s.labels, s.times[-1:], [s.last()]) for s in series
                          if s.last() is not None]
            targets.append((t.get("legendFormat", ""), series))
        out.append(Drawn(panel, targets))
    return out


# -------------------------------------------------------------------------------- drawing

def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "no data"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        for size, suffix in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.1f} s"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.0f}"


def _short(v: float) -> str:
    """Axis labels: 12k, 3.5M, 0.25."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _unit(panel: dict) -> str:
    return panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")


def _draw_panel(ax, drawn: Drawn, start: float, end: float) -> None:
    import matplotlib.dates as mdates
    from datetime import datetime, timezone
    from matplotlib.ticker import FuncFormatter
    panel = drawn.panel
    kind, unit, title = panel.get("type"), _unit(panel), panel.get("title", "")
    ax.set_title(title, fontsize=10, loc="left", fontweight="bold")
    rows = [(legend(fmt, s.labels, f"{chr(65 + i)}"), s)
            for i, (fmt, series) in enumerate(drawn.targets) for s in series]
    if kind == "timeseries":
        scale = 100.0 if unit == "percentunit" else 1.0
        top = max((abs(v) for _, s in rows for v in s.values if not math.isnan(v)), default=0)
        if unit == "s" and top > 2 * 3600:
            scale, unit = 1 / 3600, "h"
        elif unit == "s" and top > 120:
            scale, unit = 1 / 60, "min"
        for name, s in sorted(rows, key=lambda r: r[0]):  # lines, never stacked: each readable
            ts = [datetime.fromtimestamp(t, timezone.utc) for t in s.times]
            ax.plot(ts, [v * scale for v in s.values], label=name, linewidth=1.4)
        ax.set_xlim(datetime.fromtimestamp(start, timezone.utc),
                    datetime.fromtimestamp(end, timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
        ylabel = {"percentunit": "%", "s": "seconds", "min": "minutes", "h": "hours"}.get(unit)
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=8)
        if rows:
            wide = panel.get("gridPos", {}).get("w", 12) > 12
            ax.legend(fontsize=7, loc="upper left", ncol=(5 if wide else 3) if len(rows) > 3
                      else len(rows), framealpha=0.85)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                    fontsize=10, color="grey")
        return
    ax.set_xticks([])
    ax.set_yticks([])
    if kind == "stat":
        lines = [(name, s.last()) for name, s in rows] or [("", None)]
        text = "\n".join((f"{name}: " if name and len(lines) > 1 else "") + _fmt(v, unit)
                         for name, v in lines[:3])
        ax.text(0.5, 0.45, text, ha="center", va="center", transform=ax.transAxes,
                fontsize=20 if len(lines) == 1 else 13, fontweight="bold")
        return
    if kind == "bargauge":
        items = sorted(((name, s.last() or 0.0) for name, s in rows), key=lambda r: r[1])[-10:]
        if not items:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            return
        top = max(v for _, v in items) or 1.0
        ax.barh(range(len(items)), [v for _, v in items], color="#e0752d", height=0.6)
        ax.set_xlim(0, top * 1.05)
        for i, (name, v) in enumerate(items):
            label = f" {name}: {_fmt(v, unit)} "
            if v > top * 0.5:  # inside a long bar, after a short one
                ax.text(v, i, label, va="center", ha="right", fontsize=9, color="white",
                        fontweight="bold")
            else:
                ax.text(v, i, label, va="center", ha="left", fontsize=9)
        return
    if kind == "table":
        keys = sorted({k for _, s in rows for k in s.labels if k != "__name__"})
        cells = [[s.labels.get(k, "") for k in keys] + [_fmt(s.last(), unit)]
                 for _, s in sorted(rows, key=lambda r: -(r[1].last() or 0))][:12]
        if not cells:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            return
        table = ax.table(cellText=cells, colLabels=keys + ["value"], loc="upper center",
                         cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.2)
        ax.axis("off")
        return
    ax.text(0.5, 0.5, f"({kind} panel)", ha="center", va="center", transform=ax.transAxes)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "panel"


def render(dashboard: dict, drawn: list[Drawn], start: float, end: float, out_dir: Path,
           name: str, note: str = "") -> tuple[Path, list[Path]]:
    """Write `<out_dir>/<name>.png` (the board) and `<out_dir>/<name>/NN-title.png` (each
    panel); returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from datetime import datetime, timezone

    panel_dir = out_dir / name
    panel_dir.mkdir(parents=True, exist_ok=True)
    panels = []
    for i, d in enumerate(x for x in drawn if x.panel.get("type") != "row"):
        fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
        _draw_panel(ax, d, start, end)
        fig.tight_layout()
        path = panel_dir / f"{i + 1:02d}-{_slug(d.panel.get('title', ''))}.png"
        fig.savefig(path)
        plt.close(fig)
        panels.append(path)

    # The board: Grafana's grid (24 columns; a height unit is 30 px) at 60 px per column.
    bottom = max((d.panel["gridPos"]["y"] + d.panel["gridPos"]["h"]) for d in drawn)
    col_in, row_in = 0.62, 0.36
    header_in = 0.85
    fig = plt.figure(figsize=(GRID_COLUMNS * col_in, bottom * row_in + header_in), dpi=90)
    height = bottom * row_in + header_in
    when = (f"{datetime.fromtimestamp(start, timezone.utc):%Y-%m-%d %H:%M} - "
            f"{datetime.fromtimestamp(end, timezone.utc):%H:%M} UTC")
    fig.text(0.01, 1 - 0.3 / height, f"{dashboard.get('title', name)}   ({when}, all "
             f"acquirers, drawn from Prometheus by settlewatch pictures)", fontsize=13,
             fontweight="bold", va="center")
    if note:
        fig.text(0.01, 1 - 0.58 / height, note, fontsize=10, va="center", color="#444")
    pad = 0.12
    for d in drawn:
        g = d.panel["gridPos"]
        x0 = g["x"] / GRID_COLUMNS
        w = g["w"] / GRID_COLUMNS
        top_in = header_in + g["y"] * row_in
        if d.panel.get("type") == "row":
            fig.text(x0 + 0.005, 1 - (top_in + row_in * 0.6) / height, d.panel.get("title", ""),
                     fontsize=12, fontweight="bold", color="#335")
            continue
        h_in = g["h"] * row_in
        rect = (x0 + pad / (GRID_COLUMNS * col_in) * 4,
                1 - (top_in + h_in) / height + pad * 3 / height,
                w - pad / (GRID_COLUMNS * col_in) * 6,
                (h_in - pad * 6) / height)
        ax = fig.add_axes(rect)
        _draw_panel(ax, d, start, end)
    board = out_dir / f"{name}.png"
    fig.savefig(board)
    plt.close(fig)
    return board, panels


def draw_all(prometheus_url: str, start: float, end: float, out_dir: Path,
             dashboards: list[Path] | None = None, scrape_s: float = 5.0,
             note: str = "") -> dict[str, Path]:
    """Every dashboard's board and panels over [start, end]; returns {dashboard stem: board}."""
    prom = Prometheus(prometheus_url)
    out_dir.mkdir(parents=True, exist_ok=True)
    boards = {}
    for path in dashboards or sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        drawn = fetch(prom, dashboard, start, end, scrape_s)
        board, _ = render(dashboard, drawn, start, end, out_dir, path.stem, note)
        boards[path.stem] = board
    return boards


# ------------------------------------------------------------------------------- the demo

def _stack(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(STACK), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def demo_window(seconds: float, faults: str, *, seed: int, env: dict | None = None,
                echo=click.echo) -> tuple[float, float]:
    """Run `settlewatch demo` for `seconds` on the local stack; returns its wall-clock window.
    The stack is started here when it is not running, so that the demo leaves Prometheus
    running for the pictures, and stopped again once they are drawn (the caller's job)."""
    cmd = [sys.executable, "-c", "from streams.cli import main; main()", "demo",
           "--duration", str(seconds), "--faults", faults, "--seed", str(seed)]
    echo(f"pictures: {' '.join(cmd[3:])}")
    start = time.time()
    done = subprocess.run(cmd, timeout=seconds + 900, check=False, env=env)
    end = time.time()
    if done.returncode != 0:
        raise click.ClickException(f"the demo failed (exit {done.returncode})")
    return start, end


@click.command("pictures")
@click.option("--prometheus", default="http://127.0.0.1:9090", show_default=True,
              help="Prometheus to query (the local stack's by default).")
@click.option("--last", "last", help="Window: this long up to now, e.g. 30m.")
@click.option("--start", type=float, help="Window start, unix seconds.")
@click.option("--end", type=float, help="Window end, unix seconds [now].")
@click.option("--demo", "demo_s", type=float,
              help="Make the window: run the demo this many seconds first (stack up/down).")
@click.option("--faults", default=BAD_ACQUIRER_FAULTS, show_default=True,
              help="With --demo: the simulator's faults (ACQUIRER:KIND=rate for one acquirer).")
@click.option("--seed", default=7, show_default=True, help="With --demo: the simulator's seed.")
@click.option("--out", "out_dir", default="out/pictures", show_default=True,
              type=click.Path(file_okay=False), help="Where the PNG files go.")
@click.option("--board", "board_copy", type=click.Path(dir_okay=False),
              help="Also copy the ops board here (make pictures: docs/ops-board.png).")
@click.option("--note", default="", help="A line under each board's title.")
def pictures_command(prometheus, last, start, end, demo_s, faults, seed, out_dir, board_copy,
                     note):
    """Draw every Grafana panel from Prometheus into PNG files."""
    started_stack = False
    env = dict(os.environ)
    if demo_s:
        if _stack(env, "status").returncode == 0:
            click.echo("pictures: using the running local stack; panels over 6h windows also "
                       "show its earlier data")
        else:
            # A stack of its own in a fresh run directory: Prometheus then holds this run only
            # (a 6h-window panel would otherwise add the counters of an earlier run).
            import shutil
            run_dir = Path(out_dir).resolve() / "stack"
            shutil.rmtree(run_dir, ignore_errors=True)
            env["SW_RUN_DIR"] = str(run_dir)
            up = _stack(env, "up")
            if up.returncode != 0:
                raise click.ClickException(f"deploy/local/stack up failed:\n{up.stdout}{up.stderr}")
            started_stack = True
    try:
        if demo_s:
            start, end = demo_window(demo_s, faults, seed=seed, env=env)
        else:
            end = end or time.time()
            if last:
                from streams.core.policy import parse_duration_ms
                start = end - parse_duration_ms(last, "--last") / 1000
            if start is None:
                raise click.UsageError("give --last, --start or --demo")
        click.echo(f"pictures: window --start {start:.0f} --end {end:.0f}")
        if demo_s and not note:
            note = (f"settlewatch demo, {demo_s:.0f} s: 36 h of simulated traffic replayed at "
                    f"600x, then live. Faults: {faults}")
        boards = draw_all(prometheus, start, end, Path(out_dir), note=note)
    finally:
        if started_stack:
            _stack(env, "down")
    for name, path in boards.items():
        click.echo(f"{name}: {path} (panels in {path.with_suffix('')}/)")
    if board_copy and "ops" in boards:
        import shutil
        Path(board_copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(boards["ops"], board_copy)
        click.echo(f"ops board copied to {board_copy}")
