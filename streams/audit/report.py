"""report.html: one self-contained page an auditor can open offline, from a replay's output.

    write_report(out_dir) -> out_dir/report.html

It reads only the replay's files: summary.json, findings.jsonl, and when present
settlement_delays.json (Kafka replay) and compare_live.json (--compare-live). Sections: the range
and counts; totals per kind and acquirer with the amounts at stake; the settlement delay
distribution per acquirer (inline SVG); a daily timeline of findings (inline SVG); what the live
monitor missed or reported beyond the replay; dead letters by reason; and every finding, grouped
by kind, each row linking to its evidence file. No CDN, no JavaScript library: a few lines of
inline script make the tables sortable, and the page reads fine without them. The page holds no
wall-clock time, so the same replay output gives the same bytes.
"""
from __future__ import annotations

import html
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from streams import wire
from streams.audit.delays import bucket_bounds_s
from streams.audit.evidence import money

KINDS = ("missing", "late", "underpaid", "overpaid", "duplicate", "orphan")
COLOURS = {"missing": "#c0392b", "late": "#e67e22", "underpaid": "#8e44ad",
           "overpaid": "#27ae60", "duplicate": "#2980b9", "orphan": "#7f5a3c",
           "file_incomplete": "#16a085"}
# What is at stake per kind, and how much of the finding's money it is.
AT_STAKE = {
    "missing": ("not credited by the end of the range", lambda f: f["expected_minor"]),
    "late": ("credited after the deadline", lambda f: f["received_minor"]),
    "underpaid": ("short", lambda f: -f["difference_minor"]),
    "overpaid": ("credited in excess", lambda f: f["difference_minor"]),
    "duplicate": ("credited twice", lambda f: f["received_minor"]),
    "orphan": ("credited for no known sale", lambda f: f["received_minor"]),
}
DAY_MS = 86_400_000
_TICK = 'text-anchor="middle" font-size="11" fill="#444"'
_LABEL = 'text-anchor="end" font-size="11" fill="#444"'
_GRID = 'stroke="#e4e4e4"'
_LINE_STYLE = {"p50": 'stroke="#222" stroke-width="2"',
               "p90": 'stroke="#c0392b" stroke-width="2" stroke-dasharray="4 3"'}

e = html.escape


def write_report(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    summary = _json(out / "summary.json") or {}
    findings = [orjson.loads(line) for line in
                (out / "findings.jsonl").read_bytes().splitlines() if line.strip()]
    delays = _json(out / "settlement_delays.json")
    compare = _json(out / "compare_live.json")
    path = out / "report.html"
    path.write_text(render(summary, findings, delays, compare), encoding="utf-8")
    return path


def _json(path: Path) -> Any:
    return orjson.loads(path.read_bytes()) if path.exists() else None


# ---- the page ------------------------------------------------------------------------------


def render(summary: dict, findings: list[dict], delays: dict | None,
           compare: dict | None) -> str:
    kafka = summary.get("kafka") or {}
    rng = kafka.get("range") or {}
    title = ("settlewatch audit: " + f"{rng['from']} to {rng['to']}" if rng
             else f"settlewatch replay until {summary.get('until')}")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        _overview(summary, findings),
        _totals(findings),
        _aging(summary.get("aging")),
        _delays(delays) if delays is not None else "",
        _timeline(findings, rng),
        _compare(compare) if compare is not None else "",
        _deadletters(summary),
        _settlement_files(findings),
        _findings(findings),
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _overview(summary: dict, findings: list[dict]) -> str:
    kafka = summary.get("kafka") or {}
    rng = kafka.get("range") or {}
    rows = []
    if rng:
        rows += [("Range (event time)", f"[{rng['from']}, {rng['to']})"),
                 ("Lead-in read from", rng["lead_in_from"]),
                 ("Final watermark", summary.get("until"))]
        topics = kafka.get("topics") or {}
        rows.append(("Topics", ", ".join(topics.values())))
        if rng.get("merchants"):
            rows.append(("Merchants", ", ".join(rng["merchants"])))
        if rng.get("acquirers"):
            rows.append(("Acquirers", ", ".join(rng["acquirers"])))
        rows.append(("Kafka records in the offsets read",
                     f"{kafka.get('records_in_offsets', 0):,}"))
        rows += _records_read(kafka.get("records"))
    else:
        rows.append(("Final watermark", summary.get("until")))
    if summary.get("config"):
        rows.append(("Policy", summary["config"]))
    rows += [("Events reconciled (range and lead-in)", f"{summary.get('events_valid', 0):,}"),
             ("Dead letters", f"{summary.get('rejected', 0):,}"),
             ("Findings", f"{len(findings):,}"),
             ("Late data / redeliveries", f"{summary.get('late_data', 0):,} / "
                                          f"{summary.get('redeliveries', 0):,}")]
    body = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    warnings = "".join(f'<p class="warn">{e(w)}</p>' for w in kafka.get("warnings") or [])
    return f'<section id="overview"><table class="kv">{body}</table>{warnings}</section>'


def _records_read(records: dict | None) -> list[tuple[str, str]]:
    """The Kafka read in numbers (DESIGN.md "end of a Kafka replay range")."""
    if not records:
        return []
    return [("Kafka records read", f"{records['read']:,}: {records['in_range']:,} in the range, "
                                   f"{records['lead_in']:,} in the lead-in, "
                                   f"{records['outside_range']:,} outside it, "
                                   f"{records['filtered_out']:,} dropped by the filters"),
            ("Records skipped by the end look-up", f"{records['skipped_by_end_lookup']:,}"),
            ("Records left unread after a run past the range",
             f"{records['not_read_after_end_run']:,}")]


def _open_missing(findings: list[dict]) -> set[str]:
    resolved = {f["anomaly_id"] for f in findings
                if f["kind"] == "missing" and f["status"] == "resolved"}
    return {f["anomaly_id"] for f in findings if f["kind"] == "missing"
            and f["status"] == "open" and f["anomaly_id"] not in resolved}


def _totals(findings: list[dict]) -> str:
    still_missing = _open_missing(findings)
    counts: dict[str, Counter] = defaultdict(Counter)
    stake: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (acquirer, currency) -> kind
    resolved = Counter()
    for f in findings:
        kind, acq = f["kind"], f["acquirer"]
        if f["status"] == "resolved":
            resolved[acq] += 1
            continue
        counts[acq][kind] += 1
        if kind not in AT_STAKE or (kind == "missing" and f["anomaly_id"] not in still_missing):
            continue
        stake[(acq, f["currency"])][kind] += AT_STAKE[kind][1](f)
    head = "".join(f'<th><span class="dot" style="background:{COLOURS[k]}"></span>{k}</th>'
                   for k in KINDS)
    rows = []
    for acq in sorted(counts.keys() | resolved.keys()):
        c = counts[acq]
        cells = "".join(f'<td class="n">{c[k]:,}</td>' for k in KINDS)
        rows.append(f"<tr><th>{e(acq)}</th>{cells}<td class=\"n\">{sum(c.values()):,}</td>"
                    f'<td class="n">{resolved[acq]:,}</td></tr>')
    total = Counter()
    for c in counts.values():
        total.update(c)
    cells = "".join(f'<td class="n">{total[k]:,}</td>' for k in KINDS)
    rows.append(f'<tr class="total"><th>all acquirers</th>{cells}'
                f'<td class="n">{sum(total.values()):,}</td>'
                f'<td class="n">{sum(resolved.values()):,}</td></tr>')
    count_table = (f'<table><thead><tr><th>acquirer</th>{head}<th>total</th>'
                   f'<th>missing resolved</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    srows = []
    by_currency: dict[str, Counter] = defaultdict(Counter)
    for (acq, cur), c in sorted(stake.items()):
        by_currency[cur].update(c)
        cells = "".join(f'<td class="n">{e(money(c[k], cur)) if c[k] else ""}</td>' for k in KINDS)
        srows.append(f"<tr><th>{e(acq)}</th><td>{e(cur)}</td>{cells}</tr>")
    for cur, c in sorted(by_currency.items()):
        cells = "".join(f'<td class="n">{e(money(c[k], cur)) if c[k] else ""}</td>' for k in KINDS)
        srows.append(f'<tr class="total"><th>all acquirers</th><td>{e(cur)}</td>{cells}</tr>')
    meaning = "; ".join(f"<b>{k}</b>: {e(AT_STAKE[k][0])}" for k in KINDS)
    stake_table = (f'<table><thead><tr><th>acquirer</th><th>currency</th>{head}</tr></thead>'
                   f'<tbody>{"".join(srows)}</tbody></table><p class="note">Amounts at stake: '
                   f"{meaning}. A missing finding resolved within the range counts as resolved, "
                   "not at stake; its late credit, if any, is a late finding.</p>")
    return (f'<section id="totals"><h2>Totals per kind and acquirer</h2>{count_table}'
            f"<h3>Amounts at stake</h3>{stake_table}</section>")


def _aging(doc: dict | None) -> str:
    """Open findings by SLA tier and acquirer as of the end of the range (summary.json "aging",
    streams.core.aging)."""
    if not doc:
        return ""
    due = {t["name"]: t["due"] for t in doc.get("tiers", [])}
    rows = []
    for r in doc.get("open", []):
        overdue = f'<td class="n warn">{r["overdue"]:,}</td>' if r["overdue"] else \
            '<td class="n">0</td>'
        rows.append(f'<tr><th>{e(r["tier"])}</th><td>{e(due.get(r["tier"], ""))}</td>'
                    f'<td>{e(r["acquirer"])}</td><td>{e(r["currency"])}</td>'
                    f'<td class="n">{r["findings"]:,}</td>'
                    f'<td class="n">{e(money(r["amount_minor"], r["currency"]))}</td>'
                    f'{overdue}<td class="n">{r["oldest_age_days"]:,}</td></tr>')
    if not rows:
        rows.append('<tr><td colspan="8">No finding is open.</td></tr>')
    tiers = ", ".join(f"{e(t['name'])} (due {e(t['due'])})" for t in doc.get("tiers", []))
    return (f'<section id="aging"><h2>Open findings by SLA tier, as of {e(doc["as_of"])}</h2>'
            '<table><thead><tr><th>tier</th><th>due</th><th>acquirer</th><th>currency</th>'
            '<th>open findings</th><th>amount at stake</th><th>past due</th>'
            '<th>oldest (business days)</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'
            f'<p class="note">Tiers, most severe first: {tiers}. Open: missing until its '
            "credit comes; underpaid, overpaid, duplicate and orphan for aging.horizon after "
            "they were raised; late findings are not aged. Age is in business days of the "
            "policy's calendar; a tier's due time runs from when the finding entered it. A Kafka "
            "replay counts findings of its lead-in that are still open.</p></section>")


# ---- plots ---------------------------------------------------------------------------------


def _fmt_s(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86_400:
        h = seconds / 3600
        return f"{h:.1f}h" if h < 10 else f"{h:.0f}h"
    d = seconds / 86_400
    return f"{d:.1f}d" if d < 10 else f"{d:.0f}d"


def _delays(delays: dict) -> str:
    acquirers = delays.get("acquirers") or {}
    if not acquirers:
        return ('<section id="delays"><h2>Settlement delay per acquirer</h2>'
                "<p>No credit was matched to a sale while the clock was in the range.</p>"
                "</section>")
    # x axis: log10 of seconds, from 1 s to the largest bucket seen (at least a day)
    top = max(max(int(b) for b in a["buckets"]) for a in acquirers.values())
    x_max = max(math.log10(bucket_bounds_s(top)[1]), math.log10(86_400))
    width, left, right, row_h, gap = 760, 150, 30, 70, 14
    plot_w = width - left - right
    height = 30 + len(acquirers) * (row_h + gap) + 24

    def x(seconds: float) -> float:
        return left + plot_w * max(math.log10(max(seconds, 1.0)), 0.0) / x_max

    svg = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="settlement delay histograms per acquirer">']
    ticks = [(1, "1s"), (60, "1m"), (600, "10m"), (3600, "1h"), (6 * 3600, "6h"),
             (86_400, "1d"), (3 * 86_400, "3d"), (7 * 86_400, "7d"), (30 * 86_400, "30d")]
    ticks = [(s, label) for s, label in ticks if math.log10(s) <= x_max + 1e-9]
    y0 = 20
    for s, label in ticks:
        svg.append(f'<line x1="{x(s):.1f}" y1="{y0}" x2="{x(s):.1f}" '
                   f'y2="{height - 24}" {_GRID}/>')
        svg.append(f'<text x="{x(s):.1f}" y="{height - 8}" {_TICK}>{label}</text>')
    rows = []
    for n, (acq, a) in enumerate(sorted(acquirers.items())):
        top_y = y0 + n * (row_h + gap)
        buckets = {int(b): c for b, c in a["buckets"].items()}
        peak = max(buckets.values())
        svg.append(f'<text x="{left - 8}" y="{top_y + row_h / 2 + 4:.0f}" {_LABEL}>'
                   f'{e(acq)}</text>')
        svg.append(f'<line x1="{left}" y1="{top_y + row_h}" x2="{width - right}" '
                   f'y2="{top_y + row_h}" stroke="#999"/>')
        for b, c in sorted(buckets.items()):
            lo, hi = bucket_bounds_s(b)
            x1, x2 = (x(lo) if b else left), x(hi)
            h = row_h * c / peak
            svg.append(f'<rect x="{x1:.1f}" y="{top_y + row_h - h:.1f}" '
                       f'width="{max(x2 - x1 - 0.5, 0.8):.1f}" height="{h:.1f}" fill="#5b7fa6">'
                       f"<title>{e(acq)}: {c:,} credits {_fmt_s(lo)}-{_fmt_s(hi)}</title></rect>")
        for q, cls in (("p50_s", "p50"), ("p90_s", "p90")):
            if q in a:
                svg.append(f'<line x1="{x(a[q]):.1f}" y1="{top_y}" x2="{x(a[q]):.1f}" '
                           f'y2="{top_y + row_h}" {_LINE_STYLE[cls]}><title>{q[:3]} '
                           f"{_fmt_s(a[q])}</title></line>")
        rows.append(f"<tr><th>{e(acq)}</th><td class=\"n\">{a['settled']:,}</td>"
                    + "".join(f'<td class="n">{_fmt_s(a[q]) if q in a else ""}</td>'
                              for q in ("p50_s", "p90_s", "p99_s"))
                    + f'<td class="n">{_fmt_s(a["max_bucket_s"])}</td></tr>')
    svg.append("</svg>")
    table = ("<table><thead><tr><th>acquirer</th><th>credits</th><th>p50</th><th>p90</th>"
             "<th>p99</th><th>max (bucket)</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return ('<section id="delays"><h2>Settlement delay per acquirer</h2>'
            '<p class="note">Time from an item\'s latest sale to the credit that paid it, for '
            "credits matched while the replay clock was in the range; log scale, four bars per "
            'doubling. Lines: <span class="p50k">median</span>, <span class="p90k">90th '
            f"percentile</span> (bucket upper bounds).</p>{''.join(svg)}{table}</section>")


def _timeline(findings: list[dict], rng: dict) -> str:
    per_day: dict[int, Counter] = defaultdict(Counter)
    for f in findings:
        if f["status"] == "resolved":
            continue
        per_day[wire.parse_time_ms(f["event_time"]) // DAY_MS][f["kind"]] += 1
    if not per_day:
        return ""
    first, last = min(per_day), max(per_day)
    if rng:  # the whole range, unless it is far wider than its findings
        first = max(wire.parse_time_ms(rng["from"]) // DAY_MS, first - 31)
        last = min((wire.parse_time_ms(rng["to"]) - 1) // DAY_MS, last + 31)
    days = list(range(first, last + 1))
    if len(days) > 400:  # a very long range: the table below still lists every finding
        days = days[-400:]
    peak = max((sum(per_day[d].values()) for d in days), default=0) or 1
    width, left, bottom, top_pad = 760, 50, 40, 16
    plot_h = 200
    bar_w = (width - left - 10) / max(len(days), 1)
    height = top_pad + plot_h + bottom + 24
    svg = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           'role="img" aria-label="findings per day">']
    for frac in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - frac)
        svg.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" {_GRID}/>')
        svg.append(f'<text x="{left - 6}" y="{y + 4:.1f}" {_LABEL}>{round(peak * frac):,}'
                   "</text>")
    label_every = max(1, math.ceil(len(days) / 14))
    for n, d in enumerate(days):
        x0 = left + n * bar_w
        y = top_pad + plot_h
        for kind in KINDS:
            c = per_day[d][kind]
            if not c:
                continue
            h = plot_h * c / peak
            y -= h
            svg.append(f'<rect x="{x0 + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 0.8):.1f}" '
                       f'height="{h:.1f}" fill="{COLOURS[kind]}"><title>{_day(d)}: {c:,} {kind}'
                       "</title></rect>")
        if n % label_every == 0:
            svg.append(f'<text x="{x0 + bar_w / 2:.1f}" y="{top_pad + plot_h + 16}" '
                       f'{_TICK}>{_day(d)[5:]}</text>')
    lx = left
    for kind in KINDS:
        svg.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" '
                   f'fill="{COLOURS[kind]}"/><text x="{lx + 14}" y="{height - 5}" '
                   f'font-size="11" fill="#444">{kind}</text>')
        lx += 100
    svg.append("</svg>")
    return ('<section id="timeline"><h2>Findings per day</h2><p class="note">By the finding\'s '
            "event time (UTC days); resolutions of missing findings are not counted.</p>"
            + "".join(svg) + "</section>")


def _day(d: int) -> str:
    return wire.format_time_ms(d * DAY_MS)[:10]


# ---- tables --------------------------------------------------------------------------------

_COLUMNS = ("event_time", "status", "merchant_id", "acquirer", "subject", "expected",
            "received", "difference", "deadline", "probable_cause", "detected_at", "evidence")


def _row(f: dict) -> str:
    cur = f["currency"]
    name = f["anomaly_id"] + ("-resolved" if f["status"] == "resolved" else "")
    cells = [
        e(f["event_time"]), e(f["status"]), e(f["merchant_id"]), e(f["acquirer"]),
        e(f["subject"]),
        (f["expected_minor"], e(money(f["expected_minor"], cur))),
        (f["received_minor"], e(money(f["received_minor"], cur))),
        (f["difference_minor"], e(money(f["difference_minor"], cur))),
        e(f["deadline"] or ""), e(f["probable_cause"] or ""), e(f["detected_at"]),
        f'<a href="evidence/{e(name)}.json">{e(f["anomaly_id"])}</a>',
    ]
    out = []
    for c in cells:
        if isinstance(c, tuple):
            out.append(f'<td class="n" data-v="{c[0]}">{c[1]}</td>')
        else:
            out.append(f"<td>{c}</td>")
    return "<tr>" + "".join(out) + "</tr>"


def _table(findings: list[dict], css: str = "findings") -> str:
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in _COLUMNS)
    rows = "\n".join(_row(f) for f in findings)
    return (f'<table class="{css} sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _by_time(findings: list[dict]) -> list[dict]:
    return sorted(findings, key=lambda f: (wire.parse_time_ms(f["event_time"]), f["anomaly_id"],
                                           f["status"]))


def _settlement_files(findings: list[dict]) -> str:
    """Contract v1.1: the settlement files whose control totals disagreed with the credits seen
    (file_incomplete findings); nothing at all for a feed without completeness markers."""
    rows = _by_time([f for f in findings if f["kind"] == "file_incomplete"])
    if not rows:
        return ""
    body = "".join(
        f'<tr><td>{e(f["subject"])}</td><td>{e(f["merchant_id"])}</td><td>{e(f["acquirer"])}</td>'
        f'<td>{e(f["event_time"])}</td>'
        f'<td class="n">{f.get("expected_count", 0):,}</td>'
        f'<td class="n">{f.get("received_count", 0):,}</td>'
        f'<td class="n">{e(money(f["expected_minor"], f["currency"]))}</td>'
        f'<td class="n">{e(money(f["received_minor"], f["currency"]))}</td>'
        f'<td>{e(f.get("probable_cause") or "")}</td></tr>' for f in rows)
    return ('<section id="settlement-files"><h2>Settlement files incomplete</h2>'
            '<p class="note">Completeness markers (settlement_file_complete) whose credit count '
            "or total differs from the credits seen for that merchant, acquirer and settle date: "
            "credits the feed lost (file_short), credits the file does not list (file_extra), "
            "or the same number with another total (file_total_mismatch).</p>"
            '<table class="findings sortable"><thead><tr><th>marker</th><th>merchant</th>'
            "<th>acquirer</th><th>event time</th><th>credits in file</th><th>credits seen</th>"
            "<th>file total</th><th>seen total</th><th>cause</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>")


def _findings(findings: list[dict]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for f in findings:
        groups[f["kind"]].append(f)
    parts = ['<section id="findings"><h2>All findings</h2><p class="note">Grouped by kind, '
             "in event-time order; click a column heading to sort. Each id links to the "
             "evidence file (the sales and credits behind the finding, masked card numbers, "
             "the fee rule and the settlement terms).</p>"]
    for kind in [k for k in KINDS if k in groups] + sorted(set(groups) - set(KINDS)):
        rows = _by_time(groups[kind])
        parts.append(f'<details open id="kind-{e(kind)}"><summary><span class="dot" '
                     f'style="background:{COLOURS.get(kind, "#777")}"></span>{e(kind)} '
                     f"({len(rows):,})</summary>{_table(rows)}</details>")
    if not groups:
        parts.append("<p>No findings in the range.</p>")
    parts.append("</section>")
    return "".join(parts)


def _compare(c: dict) -> str:
    missed, extra = c.get("missed_by_live") or [], c.get("not_in_replay") or []
    parts = ['<section id="compare-live"><h2>Replay against the live monitor</h2>',
             f"<p>Compared by anomaly id, status and kind with "
             f"<code>{e(c.get('anomalies_topic', ''))}</code>: "
             f"<b>{c['agree']:,}</b> findings agree, <b>{len(missed):,}</b> missed by the live "
             f"monitor, <b>{len(extra):,}</b> reported live but not by the replay "
             f"({c.get('live_records', 0):,} live records read in the range).</p>"]
    if missed:
        parts.append(f"<h3>Missed by the live monitor ({len(missed):,})</h3>"
                     + _table(_by_time(missed)))
    if extra:
        parts.append(f"<h3>Reported live, not by the replay ({len(extra):,})</h3>"
                     '<p class="note">detected_at is the live wall clock; the evidence links '
                     "exist only for findings the replay made.</p>" + _table(_by_time(extra)))
    parts.append("</section>")
    return "".join(parts)


def _deadletters(summary: dict) -> str:
    reasons = summary.get("rejected_by_reason") or {}
    if not reasons:
        return ""
    rows = "".join(f'<tr><th>{e(r)}</th><td class="n">{n:,}</td></tr>'
                   for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0])))
    return ('<section id="deadletters"><h2>Dead letters</h2><p class="note">Records that are '
            "not valid events, by reason (the records, card numbers masked, are in "
            f"deadletter.jsonl).</p><table><tbody>{rows}</tbody></table></section>")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f4f4f4;position:sticky;top:0}tr.total th,tr.total td{font-weight:600;
border-top:2px solid #ccc}table.kv th{font-weight:500;color:#555}
table.findings{font-size:12px}table.sortable thead th{cursor:pointer}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.note{color:#666;font-size:12px}.warn{color:#a04000}
details summary{cursor:pointer;font-weight:600;margin:10px 0}
svg.plot{display:block;margin:8px 0;max-width:100%;height:auto}
svg text{font-family:system-ui,Helvetica,Arial,sans-serif}
.p50k{border-bottom:2px solid #222}.p90k{border-bottom:2px dashed #c0392b}
"""

# Click a heading to sort its table (numbers by data-v, the rest as text); again to reverse.
_JS = """
document.querySelectorAll('table.sortable thead th').forEach(function(th){
 th.addEventListener('click',function(){
  var table=th.closest('table'),body=table.tBodies[0],i=th.cellIndex,
      asc=th.dataset.dir!=='asc';
  table.querySelectorAll('thead th').forEach(function(h){delete h.dataset.dir});
  th.dataset.dir=asc?'asc':'desc';
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
   var x=a.cells[i],y=b.cells[i],u=x.dataset.v,v=y.dataset.v,r;
   if(u!==undefined&&v!==undefined){r=Number(u)-Number(v)}
   else{r=x.textContent.localeCompare(y.textContent)}
   return asc?r:-r});
  rows.forEach(function(r){body.appendChild(r)});
 });
});
"""
