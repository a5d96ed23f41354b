"""settlewatch / Ops overview: is the merchants' money arriving, and where is it stuck?

Generated into grafana/dashboards/ops.json by `python grafana/generate.py`.
"""
from defaults import (bargauge, dashboard as make_dashboard, major_units, query_variable, row,
                      stat, table, timeseries)

ACQ = 'acquirer=~"$acquirer"'
ACQ_CH = 'acquirer=~"$acquirer", channel=~"$channel"'


def aging_panels():
    """Open findings by SLA tier ([aging] in settlewatch.toml; streams/core/aging.py): count and
    amount at stake per tier and acquirer, now and over time."""
    return [
        row("SLA aging"),
        bargauge("Open findings by SLA tier",
                 [(f"sum by (tier) (settlewatch_open_findings{{{ACQ}}})", "{{tier}}")],
                 description="Open findings (missing until credited; underpaid, overpaid, "
                             "duplicate and orphan for aging.horizon) by tier of amount at "
                             "stake and age in business days. The top tier pages on-call; the "
                             "others go to the daily digest."),
        table("Open amount at stake by acquirer and tier (major units)",
              [(major_units(f"sum by (acquirer, tier, currency) "
                            f"(settlewatch_open_findings_amount_minor{{{ACQ}}}) > 0"), "")],
              description="What each acquirer's open findings put at stake, per SLA tier, in "
                          "major units of each currency."),
        timeseries("Open findings by SLA tier over time",
                   [(f"sum by (tier) (settlewatch_open_findings{{{ACQ}}})", "{{tier}}")],
                   stack=True, w=24,
                   description="A finding moves up a tier as it ages in business days (never "
                               "over a weekend or a holiday) and leaves when resolved or past "
                               "its horizon."),
    ]


def dashboard():
    closed = f"sum(increase(settlewatch_items_closed_total{{{ACQ_CH}}}[$__range]))"
    matched = (f'sum(increase(settlewatch_items_closed_total{{{ACQ_CH}, outcome="matched"}}'
               f"[$__range]))")
    panels = [
        row("Now"),
        stat("Match rate (range)", [(f"{matched} / {closed}", "")], unit="percentunit",
             decimals=2, w=6,
             description="Items (sales or batches) credited by their deadline plus grace, out "
                         "of all items whose deadline passed in the selected range.",
             thresholds=[(None, "red"), (0.95, "orange"), (0.99, "green")]),
        stat("Open missing amount", [(major_units(
                 f"sum by (currency) (settlewatch_open_missing_amount_minor{{{ACQ}}})"),
              "{{currency}}")], unit="none", decimals=2, w=6,
             description="Expected net amount of items past deadline plus grace with no "
                         "credit, in major units per currency.",
             thresholds=[(None, "green"), (0.01, "red")]),
        stat("Open missing items", [(f"sum(settlewatch_open_missing_items{{{ACQ}}})", "")],
             w=6, description="Items past deadline plus grace with no credit.",
             thresholds=[(None, "green"), (1, "orange"), (20, "red")]),
        stat("Settlement alerts firing",
             [('count(ALERTS{alertstate="firing", service="settlewatch", '
               f'category="settlement", {ACQ}}}) or vector(0)', "")],
             w=6, thresholds=[(None, "green"), (1, "red")]),

        row("Findings"),
        timeseries("Findings by kind (per hour)",
                   [(f'sum by (kind) (rate(settlewatch_findings_total{{{ACQ}, status="open"}}'
                     f"[$__rate_interval])) * 3600", "{{kind}}")],
                   bars=True, stack=True,
                   description="New findings per hour: missing, late, underpaid, overpaid, "
                               "duplicate, orphan."),
        timeseries("Missing findings resolved (per hour)",
                   [(f'sum by (acquirer) (rate(settlewatch_findings_total{{{ACQ}, '
                     f'kind="missing", status="resolved"}}[$__rate_interval])) * 3600',
                     "{{acquirer}}")],
                   bars=True, stack=True,
                   description="Missing credits that arrived after all (each also raised a "
                               "late finding)."),
        timeseries("Open missing amount by acquirer (major units)",
                   [(major_units(f"sum by (acquirer, currency) "
                                 f"(settlewatch_open_missing_amount_minor{{{ACQ}}})"),
                     "{{acquirer}} {{currency}}")], unit="none",
                   description="What is open now, per acquirer and currency."),
        timeseries("Open unsettled amount by age (major units)",
                   [(major_units(f"sum by (age, currency) "
                                 f"(settlewatch_open_unsettled_amount_minor{{{ACQ}}})"),
                     "{{age}} {{currency}}")], unit="none", stack=True,
                   description="Every open item (missing included) by time since its first "
                               "sale: 0-1h, 1-6h, 6-24h, 1-3d, 3d+."),

        row("Acquirers"),
        timeseries("Late-credit ratio by acquirer (6h)",
                   [(f'sum by (acquirer) (increase(settlewatch_findings_total{{{ACQ}, '
                     f'kind="late", status="open"}}[6h])) / sum by (acquirer) '
                     f"(increase(settlewatch_settlement_delay_seconds_count{{{ACQ_CH}}}[6h]))",
                     "{{acquirer}}")],
                   unit="percentunit", thresholds=[(None, "green"), (0.1, "red")],
                   description="Late findings per credit matched over 6 hours; the alert "
                               "threshold is drawn as a line."),
        timeseries("Match rate by acquirer (6h)",
                   [(f'sum by (acquirer) (increase(settlewatch_items_closed_total{{{ACQ_CH}, '
                     f'outcome="matched"}}[6h])) / sum by (acquirer) '
                     f"(increase(settlewatch_items_closed_total{{{ACQ_CH}}}[6h]))",
                     "{{acquirer}}")], unit="percentunit", max_=1),
        timeseries("Settlement delay p50 / p90 / p99 by acquirer",
                   [(f"histogram_quantile({q}, sum by (acquirer, le) (rate("
                     f"settlewatch_settlement_delay_seconds_bucket{{{ACQ_CH}}}[1h])))",
                     f"{{{{acquirer}}}} p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
                   unit="s", w=24,
                   description="Event time from an item's latest sale to the credit that "
                               "settled it, over the last hour."),
        bargauge("Top acquirers by open missing amount (major units)",
                 [(major_units(f"topk(10, sum by (acquirer, currency) "
                               f"(settlewatch_open_missing_amount_minor{{{ACQ}}}))"),
                   "{{acquirer}} {{currency}}")], unit="none"),
        table("Amount at stake in the range by acquirer and kind (major units)",
              [(major_units(f'sum by (acquirer, kind, currency) (increase('
                            f'settlewatch_findings_amount_minor_total{{{ACQ}, status="open", '
                            f'kind=~"missing|underpaid|duplicate|orphan"}}[$__range])) > 0'),
                "")],
              description="Missing: expected; underpaid: shortfall; duplicate and orphan: "
                          "credited. In major units of each currency."),
        timeseries("Credited amount by acquirer (per hour, major units)",
                   [(major_units(f"sum by (acquirer, currency) (rate("
                                 f"settlewatch_settled_amount_minor_total{{{ACQ}}}"
                                 f"[$__rate_interval])) * 3600"),
                     "{{acquirer}} {{currency}}")], unit="none", w=24),

        row("Early warning"),
        timeseries("Paid by now against the usual band (next deadline)",
                   [(f'avg by (acquirer, channel) (settlewatch_early_warning_paid_ratio'
                     f'{{{ACQ_CH}, band="{band}"}})', f"{{{{acquirer}}}} {{{{channel}}}} {band}")
                    for band in ("usual", "slow", "today")],
                   unit="percentunit", max_=1, w=16,
                   description="Share of the sales due by each acquirer's next deadline that "
                               "is paid by now: usual = the median of its learned settle days, "
                               "slow = their lower band (10th percentile), today. Today well "
                               "below slow raises the early warning."),
        stat("Early warnings", [(f"sum(settlewatch_early_warning{{{ACQ_CH}}}) or vector(0)",
                                 "")],
             w=8, thresholds=[(None, "green"), (1, "orange")],
             description="Acquirers and channels paying later than their own baseline now."),
        timeseries("Paying later than usual by",
                   [(f"max by (acquirer, channel) (settlewatch_early_warning_later_seconds"
                     f"{{{ACQ_CH}}})", "{{acquirer}} {{channel}}")], unit="s", w=12,
                   description="How far today's paid share is behind the usual day's."),
        table("Due before the next deadline, not yet paid (major units)",
              [(major_units(f"sum by (acquirer, channel, currency) "
                            f"(settlewatch_early_warning_due_amount_minor{{{ACQ_CH}}})"), "")],
              description="Sales still due by each acquirer's next deadline, by channel."),
    ] + aging_panels()
    return make_dashboard(
        "settlewatch-ops", "settlewatch / Ops overview", panels,
        description="Settlement reconciliation: match rate, missing and short-paid credits, "
                    "late credits and settlement delay per acquirer.",
        variables=[
            query_variable("acquirer", "Acquirer",
                           "label_values(settlewatch_items_closed_total, acquirer)"),
            query_variable("channel", "Channel",
                           'label_values(settlewatch_items_closed_total{acquirer=~"$acquirer"}, '
                           "channel)"),
        ])
