"""settlewatch / Pipeline health: can the settlement numbers be trusted right now?

Generated into grafana/dashboards/pipeline.json by `python grafana/generate.py`.
"""
from defaults import dashboard as make_dashboard, query_variable, row, stat, table, timeseries

T = 'topic=~"$topic"'
I = 'instance=~"$instance"'


def dashboard():
    panels = [
        row("Workers"),
        stat("Workers up", [(f'sum(up{{job="settlewatch", {I}}})', "scraped"),
                            (f"sum(settlewatch_worker_up{{{I}}})", "consuming")],
             w=6, thresholds=[(None, "red"), (1, "green")],
             description="Scraped by Prometheus, and reporting that they consume."),
        stat("Since last record", [(f"time() - max by (topic) "
                                    f"(settlewatch_last_read_timestamp_seconds{{{T}, {I}}})",
                                    "{{topic}}")],
             unit="s", w=6, thresholds=[(None, "green"), (3600, "orange")],
             description="Wall-clock time since a worker last read a record from the topic."),
        stat("Event clock behind", [(f"max(settlewatch_event_clock_lag_seconds{{{I}}})", "")],
             unit="s", w=6, thresholds=[(None, "green"), (1800, "orange"), (3600, "red")],
             description="Wall clock minus the reconciler's event-time clock (worst "
                         "partition). Deadlines fire late by this much."),
        stat("Pipeline alerts firing",
             [('count(ALERTS{alertstate="firing", service="settlewatch", '
               'category="pipeline"}) or vector(0)', "")],
             w=6, thresholds=[(None, "green"), (1, "red")]),

        row("Throughput and lag"),
        timeseries("Records read per second",
                   [(f"sum by (topic) (rate(settlewatch_events_read_total{{{T}, {I}}}"
                     f"[$__rate_interval]))", "{{topic}}")], unit="ops"),
        timeseries("Consumer lag (records)",
                   [(f"sum by (topic) (settlewatch_consumer_lag_messages{{{T}, {I}}})",
                     "{{topic}}"),
                    (f"max by (topic, partition) "
                     f"(settlewatch_consumer_lag_messages{{{T}, {I}}})",
                     "{{topic}}/{{partition}}")],
                   description="Records between the workers' positions and the end of each "
                               "partition; total per topic and per partition."),
        timeseries("Watermark behind wall clock",
                   [(f"max by (topic) (settlewatch_watermark_lag_seconds{{{T}, {I}}})",
                     "{{topic}} watermark"),
                    (f"max(settlewatch_event_clock_lag_seconds{{{I}}})", "event clock")],
                   unit="s",
                   description="Per input: wall clock minus its watermark (newest event time "
                               "minus allowed lateness). A quiet topic's watermark stands "
                               "still; the event clock should not."),
        timeseries("Newest event time behind wall clock",
                   [(f"time() - max by (topic) "
                     f"(settlewatch_last_event_timestamp_seconds{{{T}, {I}}})", "{{topic}}")],
                   unit="s"),

        row("Bad input"),
        timeseries("Dead letters per second by reason",
                   [(f"sum by (topic, reason) (rate(settlewatch_events_rejected_total"
                     f"{{{T}, {I}}}[$__rate_interval]))", "{{topic}} {{reason}}")],
                   unit="ops", stack=True, bars=True),
        timeseries("Dead-letter ratio (10m)",
                   [(f"sum by (topic) (rate(settlewatch_events_rejected_total{{{T}, {I}}}[10m])) "
                     f"/ sum by (topic) (rate(settlewatch_events_read_total{{{T}, {I}}}[10m]))",
                     "{{topic}}")],
                   unit="percentunit", thresholds=[(None, "green"), (0.01, "red")]),
        timeseries("Late data and redeliveries per second",
                   [(f"sum by (topic) (rate(settlewatch_late_data_total{{{T}, {I}}}"
                     f"[$__rate_interval]))", "{{topic}} late data"),
                    (f"sum by (topic) (rate(settlewatch_redeliveries_total{{{T}, {I}}}"
                     f"[$__rate_interval]))", "{{topic}} redelivered")],
                   unit="ops", w=24,
                   description="Late data: events older than their watermark, still applied "
                               "while their item is open. Redeliveries: the same event_id or "
                               "credit_id again, ignored."),

        row("Processing"),
        timeseries("Processing time per event",
                   [(f"histogram_quantile({q}, sum by (le) (rate("
                     f"settlewatch_event_processing_seconds_bucket{{{I}}}[$__rate_interval])))",
                     f"p{int(q * 100)}") for q in (0.5, 0.99, 0.999)],
                   unit="s"),
        timeseries("Worker CPU and memory",
                   [(f'sum by (instance) (rate(process_cpu_seconds_total{{job="settlewatch", '
                     f"{I}}}[$__rate_interval]))", "{{instance}} CPU cores"),
                    {"expr": f'sum by (instance) (process_resident_memory_bytes'
                             f'{{job="settlewatch", {I}}}) / 2^30',
                     "legendFormat": "{{instance}} RSS GiB", "range": True,
                     "format": "time_series",
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
                   unit="short"),
        timeseries("Open items held by the reconcilers",
                   [(f"sum(settlewatch_open_unsettled_items{{{I}}})", "open items"),
                    (f"sum(settlewatch_reconcilers{{{I}}})", "reconcilers (partitions)")],
                   w=24),

        # Contract v1.1: acquirers' settlement_file_complete markers, per merchant and date.
        row("Settlement files (completeness markers)"),
        # `or on() vector(0)`: one 0 row when every file came (a series exists only while a
        # file is overdue)
        table("Settlement files not arrived",
              [(f"sum by (acquirer, settle_date) "
                f"(settlewatch_settlement_files_overdue{{{I}}}) or on() vector(0)", "")],
              description="Per acquirer and settle date: merchants whose settlement file "
                          "(settlement_file_complete marker) was expected by now, by the "
                          "policy's [[settlement_files]], and has not arrived. A single 0 "
                          "when every file came (alert SettlewatchSettlementFileNotArrived)."),
        timeseries("Files overdue and files short",
                   [(f"sum(settlewatch_settlement_files_overdue{{{I}}}) or on() vector(0)",
                     "merchants waiting for a file"),
                    (f'sum by (acquirer) (increase(settlewatch_findings_total{{kind='
                     f'"file_incomplete", {I}}}[1h]))', "{{acquirer}} file_incomplete / 1h")],
                   description="Files not arrived (merchants waiting), and files whose "
                               "control totals disagreed with the credits seen "
                               "(file_incomplete findings) per hour."),
    ]
    return make_dashboard(
        "settlewatch-pipeline", "settlewatch / Pipeline health", panels,
        description="The monitor's own health: throughput, consumer lag, watermarks, dead "
                    "letters and processing time.",
        time_from="now-6h",
        variables=[
            query_variable("topic", "Topic",
                           "label_values(settlewatch_events_read_total, topic)"),
            query_variable("instance", "Worker",
                           'label_values(up{job="settlewatch"}, instance)'),
        ])
