"""Monitoring as code: the rules, Alertmanager config, dashboards and metrics agree.

- every metric (and label) that alerts/ and grafana/ select is in streams.live.metrics' exposition;
- promtool check rules / test rules, amtool check-config and route tests, promtool check
  metrics on a real exposition all pass;
- every alert has its severity, annotations, runbook section and firing and quiet unit tests;
- the committed dashboard JSON equals a fresh generation.

promtool and amtool come from Debian's prometheus packages; when they are missing, the
`tools` fixture installs them through deploy/local/monitoring.sh (and fails if it cannot).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.core.events import Credit, Finding, FindingKind, PosEvent, Status
from streams.core.policy import default_policy
from streams.core.reconcile import Reconciler
from streams.live.metrics import AGE_BUCKETS, Metrics
from streams.ops.smtpsink import SmtpSink, text_of

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "alerts"
RULES = ALERTS / "settlewatch.rules.yaml"
RULE_TESTS = ALERTS / "settlewatch.rules_tests.yaml"
RUNBOOK = ALERTS / "runbook.md"
GRAFANA = ROOT / "grafana"
MONITORING_SH = ROOT / "deploy" / "local" / "monitoring.sh"

MIN_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
# Series that are not settlewatch's own but that alerts or panels select, and who provides them.
FOREIGN = {"up": "Prometheus", "ALERTS": "Prometheus",
           "process_cpu_seconds_total": "prometheus_client ProcessCollector",
           "process_resident_memory_bytes": "prometheus_client ProcessCollector"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# The values a closed label may take (a typo in a matcher would select nothing, silently).
CLOSED_LABELS = {"kind": {str(k) for k in FindingKind}, "status": {str(s) for s in Status},
                 "outcome": {"matched", "unmatched"}, "age": {a for _, a in AGE_BUCKETS},
                 "rank": {str(n) for n in range(len(default_policy().aging.tiers))}}


# -- a worker's metrics, exercised --------------------------------------------------------------


class OpenItems:
    """Stands where a reconciler stands for the scrape-time collector."""

    def __init__(self, items, clock_ms, watermarks):
        self.items, self.clock_ms, self._wm = items, clock_ms, watermarks

    def watermarks(self):
        return self._wm

    def open_items(self):
        yield from self.items

    def files_overdue(self):
        # contract v1.1: two merchants still wait for ACQ-A's settlement file of 2026-10-09
        return {("ACQ-A", 739_898): 2}


def finding(kind, acquirer, currency, expected, received, status=Status.OPEN) -> Finding:
    return Finding(
        anomaly_id=f"{kind}-{acquirer}-{time.monotonic_ns()}", kind=kind, status=status,
        merchant_id="m1", acquirer=acquirer, subject="a1", auth_ids=("a1",), credit_ids=("c1",),
        expected_minor=expected, received_minor=received, difference_minor=received - expected,
        currency=currency, deadline_ms=None, event_time_ms=0, detected_at_ms=0)


def open_items_now(now_ms: int, missing_per_acquirer: dict[str, int]) -> OpenItems:
    """Open items of every age; `missing_per_acquirer` items of 100,000 CNY minor each missing."""
    items = [("ACQ-B", "JPY", now_ms - age_ms, 5_000, False)
             for age_ms in (10 * MIN_MS, 2 * HOUR_MS, 12 * HOUR_MS, 2 * DAY_MS, 4 * DAY_MS)]
    for acquirer, n in missing_per_acquirer.items():
        items += [(acquirer, "CNY", now_ms - 2 * DAY_MS, 100_000, True)] * n
    return OpenItems(items, clock_ms=now_ms - 11 * MIN_MS,
                     watermarks={"authorisations": now_ms - 10 * MIN_MS,
                                 "settlements": now_ms - 40 * MIN_MS})


def exercise(m: Metrics, step: int = 0) -> None:
    """One round of every call a live worker and its reconciler make, with varied values."""
    obs = m.observer()
    now_ms = int(time.time() * 1000)
    for topic in ("pos.authorisations", "pos.settlements"):
        for _ in range(50):
            m.event_read(topic)
        m.last_event(topic, now_ms - 5_000)
        m.set_consumer_lag(topic, 0, 100 + step)
        m.set_consumer_lag(topic, 1, 3)
    m.event_rejected("pos.authorisations", "future_timestamp")
    m.event_rejected("pos.settlements", "malformed_json")
    obs.on_late_data("authorisations")
    obs.on_redelivery("settlements")
    for acquirer, channel, delay_ms in (("ACQ-A", "debit", DAY_MS + step * MIN_MS),
                                        ("ACQ-B", "qr", 20 * MIN_MS)):
        obs.on_settled(acquirer, "CNY", delay_ms, 9_940, channel=channel)
        obs.on_item_closed(acquirer, True, channel=channel)
    obs.on_item_closed("ACQ-A", False, channel="debit")
    m.findings_published([
        finding(FindingKind.MISSING, "ACQ-A", "CNY", 100_000, 0),
        finding(FindingKind.MISSING, "ACQ-A", "CNY", 100_000, 0, Status.RESOLVED),
        finding(FindingKind.LATE, "ACQ-A", "CNY", 100_000, 100_000),
        finding(FindingKind.UNDERPAID, "ACQ-A", "CNY", 100_000, 99_400),
        finding(FindingKind.OVERPAID, "ACQ-B", "JPY", 5_000, 5_100),
        finding(FindingKind.DUPLICATE, "ACQ-B", "JPY", 5_000, 5_000),
        finding(FindingKind.ORPHAN, "ACQ-B", "JPY", 0, 7_000),
    ])
    m.observe_processing(0.004, events=100)
    m.set_up(True)


def aged_findings(now_ms: int, acquirer: str = "ACQ-A") -> Reconciler:
    """A real reconciler with open findings in its aging book: a missing sale (of `acquirer`)
    and an orphan."""
    r = Reconciler(default_policy(), aging=True)
    r.on_event(PosEvent("authorisation", "e1", "a1", "m1", "t1", acquirer, "credit", 20_000_000,
                        "CNY", now_ms - 5 * DAY_MS))
    r.on_event(Credit("c1", "m1", "ACQ-B", 7_000, "JPY", now_ms - 3 * DAY_MS, ("nobody",)))
    r.advance_to(now_ms)
    return r


def exercise_early_warning(m: Metrics, clock_ms: int) -> None:
    """A learned baseline (five settle days paying 10 h before the deadline) and a deadline in
    two hours with nothing paid yet: the early warning holds, with every series it exports."""
    from streams.core.policy import default_policy
    policy = default_policy()
    ew = m.enable_early_warning(policy).warning
    cfg = policy.early_warning
    steps = cfg.lookback_ms // cfg.step_ms
    paid_from = steps - 10 * HOUR_MS // cfg.step_ms
    deadline = clock_ms + 2 * HOUR_MS
    ew.restore({"format": 1, "step_ms": cfg.step_ms, "lookback_ms": cfg.lookback_ms,
                "grid": 101, "fractions": {},
                "curves": {"ACQ-A\x1fdebit": [[deadline - (d + 1) * DAY_MS, "1d",
                                               [0.0] * paid_from + [1.0] * (steps - paid_from)]
                                              for d in range(cfg.min_history)]}})
    ew.advance_to(clock_ms - HOUR_MS)
    for _ in range(cfg.min_due_sales):
        m.observer().on_sale_due("ACQ-A", "debit", "CNY", deadline, 10_000, 1, False,
                                 policy.local_day(deadline) - 1)


def exercised_metrics(registry=None) -> Metrics:
    m = Metrics.create(registry, version="test", worker="test")
    now_ms = int(time.time() * 1000)
    aged = aged_findings(now_ms)
    exercise_early_warning(m, now_ms - 11 * MIN_MS)
    m.watch(lambda: [open_items_now(now_ms, {"ACQ-A": 30}), aged])
    exercise(m)
    return m


@pytest.fixture(scope="module")
def exposition() -> str:
    return generate_latest(exercised_metrics().registry).decode()


@pytest.fixture(scope="module")
def exposed(exposition) -> dict[str, set[str]]:
    """Sample name -> label names, from the exposition text."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


# -- what alerts/ and grafana/ select ------------------------------------------------------------

_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^{}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_NOT_METRICS = {
    # PromQL functions, aggregations, keywords and Grafana's label_values().
    "sum", "max", "min", "count", "topk", "rate", "increase", "delta", "deriv", "time",
    "vector", "absent", "histogram_quantile", "round", "by", "on", "group_left", "and", "or",
    "unless", "offset", "label_values", "avg", "without", "ignoring", "group_right", "bool",
}


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (op, value)}) for every selector of a PromQL expression."""
    # Grafana's label_values(selector, label): only the selector is PromQL.
    expr = re.sub(r"label_values\((.*),\s*\w+\)\s*$", r"\1", expr.strip())
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery brackets
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    out = []
    for m in _SELECTOR.finditer(expr):
        name, braces = m.group(1), m.group(2) or ""
        if name in _NOT_METRICS or name == "X":  # X: an annotation's printf argument
            continue
        if name.startswith("__") or name.startswith("$"):
            continue
        labels = {k: (op, v) for k, op, v in _MATCHER.findall(braces)}
        out.append((name, labels))
    return out


def rule_file_expressions() -> list[str]:
    """Alert and recording expressions plus the PromQL inside annotation templates."""
    text = RULES.read_text()
    exprs = []
    for m in re.finditer(r"^(\s*)expr: (?:\|\n((?:\1  .*\n|\s*\n)+)|(.*)\n)", text, re.M):
        exprs.append(m.group(2) or m.group(3))
    for m in re.finditer(r"printf `([^`]*)`", text):
        exprs.append(re.sub(r"%(\[\d\])?[qsf]", "X", m.group(1)))
    return exprs


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def dashboard_expressions() -> list[str]:
    sys.path.insert(0, str(GRAFANA))
    try:
        import defaults
        return [e for d in dashboards().values() for e in defaults.expressions(d)]
    finally:
        sys.path.remove(str(GRAFANA))


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)", RULES.read_text(), re.M))


def check_selectors(exprs: list[str], exposed: dict[str, set[str]]) -> list[str]:
    problems = []
    recorded = recorded_names()
    for expr in exprs:
        for name, labels in selectors(expr):
            if name in recorded or name in FOREIGN:
                continue
            if name not in exposed:
                problems.append(f"{name}: not exposed by streams.live.metrics ({expr.strip()[:80]})")
                continue
            for label, (op, val) in labels.items():
                if label not in exposed[name] | TARGET_LABELS:
                    problems.append(f"{name}: no label {label!r} ({expr.strip()[:80]})")
                allowed = CLOSED_LABELS.get(label)
                if allowed and op in ("=", "=~"):
                    values = val.split("|") if op == "=~" else [val]
                    bad = [v for v in values if v not in allowed and not v.startswith("$")]
                    if bad:
                        problems.append(f"{name}: {label} cannot be {bad}")
    return problems


def test_the_selector_scan_finds_names_labels_and_values():
    found = selectors('sum by (acquirer) (increase(settlewatch_findings_total{kind=~"late|x",'
                      'status="open"}[6h])) / on(acquirer) group_left() foo:bar offset 1h')
    assert found == [("settlewatch_findings_total",
                      {"kind": ("=~", "late|x"), "status": ("=", "open")}), ("foo:bar", {})]
    assert selectors('label_values(up{job="settlewatch"}, instance)') == [
        ("up", {"job": ("=", "settlewatch")})]
    problems = check_selectors(['settlewatch_findings_total{kind="lat", colour="red"}'],
                               {"settlewatch_findings_total": {"kind", "status"}})
    assert len(problems) == 2


def test_every_series_the_alert_rules_select_is_exposed_with_its_labels(exposed):
    exprs = rule_file_expressions()
    assert len(exprs) > 30
    assert check_selectors(exprs, exposed) == []


def test_every_series_the_dashboards_select_is_exposed_with_its_labels(exposed):
    exprs = dashboard_expressions()
    assert len(exprs) > 30
    assert check_selectors(exprs, exposed) == []


def test_the_process_series_the_dashboards_use_are_in_a_default_registry(exposed):
    for name, provider in FOREIGN.items():
        if provider.startswith("prometheus_client"):
            assert name in exposed, name


def test_the_exposition_names_are_prometheus_clean(tools, exposition):
    out = subprocess.run([tools["promtool"], "check", "metrics"], input=exposition,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    names = {line.split()[2] for line in exposition.splitlines() if line.startswith("# TYPE ")}
    own = sorted(n for n in names if n.startswith("settlewatch_"))
    assert len(own) >= 24
    for n in own:
        assert "milli" not in n and "ms" not in n.split("_"), n


# -- promtool and amtool ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """promtool, amtool (installed by monitoring.sh's monitoring_install when missing)."""
    found = {t: shutil.which(t) for t in ("promtool", "amtool")}
    if not all(found.values()):
        out = subprocess.run(["bash", "-c", f". {MONITORING_SH} && monitoring_install"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        found = {t: shutil.which(t) for t in ("promtool", "amtool")}
    assert all(found.values()), f"missing after monitoring_install: {found}"
    return found


def test_the_alert_rules_pass_promtool_check(tools):
    out = subprocess.run([tools["promtool"], "check", "rules", str(RULES)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_pass_their_promtool_unit_tests(tools):
    out = subprocess.run([tools["promtool"], "test", "rules", str(RULE_TESTS)],
                         capture_output=True, text=True, cwd=ALERTS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def alert_blocks() -> dict[str, str]:
    text = RULES.read_text()
    parts = re.split(r"^      - (?=alert: |record: )", text, flags=re.M)
    return {re.match(r"alert: (\w+)", p).group(1): p for p in parts if p.startswith("alert: ")}


def test_every_alert_has_severity_annotations_and_a_runbook_section():
    blocks = alert_blocks()
    assert len(blocks) == 16
    headings = set(re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.M))
    for name, block in blocks.items():
        assert re.search(r"^\s+severity: (critical|warning)$", block, re.M), name
        assert re.search(r"^\s+category: (settlement|pipeline)$", block, re.M), name
        assert re.search(r"^\s+service: settlewatch$", block, re.M), name
        for annotation in ("summary", "description", "action"):
            assert re.search(rf"^\s+{annotation}: ", block, re.M), (name, annotation)
        assert f"runbook_url: alerts/runbook.md#{name.lower()}\n" in block, name
        assert name in headings, f"alerts/runbook.md has no section ## {name}"
        if "category: settlement" in block:
            assert "items: " in block or "amount_at_stake: " in block, name


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    tests = RULE_TESTS.read_text()
    for name in alert_blocks():
        assert re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", tests), \
            f"{name}: no case that must not fire"
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels:", tests), \
            f"{name}: no case that fires"


def test_thresholds_live_in_one_group():
    text = RULES.read_text()
    group = text.split("- name: settlewatch-thresholds", 1)[1].split("\n  - name: ", 1)[0]
    thresholds = set(re.findall(r"record: (settlewatch:alert_threshold:\w+)", group))
    used = set(re.findall(r"settlewatch:alert_threshold:\w+", text)) - thresholds
    assert used == set(), "thresholds recorded outside the thresholds group"
    assert len(thresholds) >= 12
    for threshold in thresholds:
        assert text.count(threshold) >= 2, f"{threshold} is recorded but not used"
    rest = text.split("- name: settlewatch-settlement", 1)[1]
    # No bare threshold numbers in alert expressions: a comparison is with a threshold series,
    # with 0 (any) or with 1 / 0 for up-ness.
    for expr in re.findall(r"expr: \|\n((?:          .*\n)+)", rest):
        for number in re.findall(r"[<>]=?\s*(\d[\d.]*)", expr):
            assert number in ("0", "1"), expr


@pytest.fixture
def rendered(tmp_path, tools) -> Path:
    """alertmanager.yml rendered by monitoring.sh with credentials and acquirer contacts."""
    password = tmp_path / "smtp-password"
    password.write_text("s3cret-never-in-config")
    env = {**os.environ, "SW_RUN_DIR": str(tmp_path / "run"), "SW_SMTP_HOST": "smtp.example.com",
           "SW_SMTP_PORT": "587", "SW_SMTP_FROM": "settlewatch@example.com",
           "SW_SMTP_TO": "ops@example.com", "SW_SMTP_TO_ONCALL": "oncall@example.com",
           "SW_SMTP_USERNAME": "settlewatch", "SW_SMTP_PASSWORD_FILE": str(password),
           "SW_ACQUIRER_CONTACTS": "ACQ-A=settle@acq-a.example, ACQ-B=ops@acq-b.example",
           "SW_RUNBOOK_BASE_URL": "https://git.example.com/settlewatch/-/blob/main/"}
    out = subprocess.run(["bash", "-c", f". {MONITORING_SH} && monitoring_render"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return tmp_path / "run" / "monitoring"


def test_the_rendered_alertmanager_config_passes_amtool_and_holds_no_secret(tools, rendered):
    config = rendered / "alertmanager.yml"
    out = subprocess.run([tools["amtool"], "check-config", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 inhibit rules" in out.stdout and "5 receivers" in out.stdout
    text = config.read_text()
    assert "s3cret" not in text
    assert "smtp_auth_password_file: '" + str(rendered.parents[1] / "smtp-password") in text
    assert "smtp_require_tls: true" in text  # a relay that is not loopback
    assert "${" not in text
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert (rendered / "templates" / "runbook_base.tmpl").read_text() == (
        '{{ define "settlewatch.runbook_base" }}https://git.example.com/settlewatch/-/blob/main/'
        "{{ end }}\n")


@pytest.mark.parametrize("labels, receivers", [
    # Money at stake: the acquirer's contact gets a copy; critical pages on-call.
    ({"category": "settlement", "severity": "critical", "acquirer": "ACQ-A"},
     "acquirer-ACQ-A,oncall-email"),
    ({"category": "settlement", "severity": "warning", "acquirer": "ACQ-B"},
     "acquirer-ACQ-B,ops-email"),
    ({"category": "settlement", "severity": "warning", "acquirer": "ACQ-Z"}, "ops-email"),
    ({"category": "pipeline", "severity": "critical"}, "oncall-email"),
    ({"category": "pipeline", "severity": "warning"}, "ops-email"),
    # Aging by SLA tier: the top tier pages on-call (with the acquirer's copy, as any
    # critical settlement alert); every other tier goes to the daily digest, and only there.
    ({"alertname": "SettlewatchAgingCritical", "category": "settlement", "severity": "critical",
      "acquirer": "ACQ-Z", "tier": "critical"}, "oncall-email"),
    ({"alertname": "SettlewatchAgingCritical", "category": "settlement", "severity": "critical",
      "acquirer": "ACQ-A", "tier": "critical"}, "acquirer-ACQ-A,oncall-email"),
    ({"alertname": "SettlewatchAgingDigest", "category": "settlement", "severity": "warning",
      "digest": "daily", "acquirer": "ACQ-A", "tier": "high"}, "digest-email"),
    ({"alertname": "SettlewatchAgingDigest", "category": "settlement", "severity": "warning",
      "digest": "daily", "acquirer": "ACQ-Z", "tier": "low"}, "digest-email"),
])
def test_alerts_route_by_category_severity_and_acquirer(tools, rendered, labels, receivers):
    args = [f"{k}={v}" for k, v in {"service": "settlewatch", **labels}.items()]
    out = subprocess.run([tools["amtool"], "config", "routes", "test",
                          f"--config.file={rendered / 'alertmanager.yml'}", *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == receivers


def test_the_aging_digest_is_sent_once_a_day_in_one_mail_for_every_acquirer(tools, rendered):
    out = subprocess.run([tools["amtool"], "config", "routes", "show",
                          f"--config.file={rendered / 'alertmanager.yml'}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (rendered / "alertmanager.yml").read_text()
    route = text.split("matchers: ['digest=\"daily\"']", 1)[1].split("\n        - ", 1)[0]
    assert "receiver: digest-email" in route
    assert "group_by: [service, digest]" in route
    assert "group_interval: 24h" in route and "repeat_interval: 24h" in route


def test_the_local_config_renders_without_credentials(tmp_path, tools):
    env = {**os.environ, "SW_RUN_DIR": str(tmp_path)}
    for k in ("SW_SMTP_HOST", "SW_SMTP_USERNAME", "SW_SMTP_PASSWORD_FILE", "SW_METRICS_TARGETS",
              "SW_ACQUIRER_CONTACTS", "SW_SMTP_REQUIRE_TLS"):
        env.pop(k, None)
    out = subprocess.run(["bash", "-c", f". {MONITORING_SH} && monitoring_render"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    am = (tmp_path / "monitoring" / "alertmanager.yml").read_text()
    assert "smtp_smarthost: '127.0.0.1:2525'" in am and "smtp_require_tls: false" in am
    assert "smtp_auth_username: ''" in am
    prom = (tmp_path / "monitoring" / "prometheus.yml").read_text()
    assert "- '127.0.0.1:9308'" in prom and "targets: ['127.0.0.1:9095']" in prom
    assert f"'{ALERTS}/*.rules.yaml'" in prom


def test_a_username_without_a_readable_password_file_is_refused(tmp_path, tools):
    env = {**os.environ, "SW_RUN_DIR": str(tmp_path), "SW_SMTP_USERNAME": "u",
           "SW_SMTP_PASSWORD_FILE": str(tmp_path / "absent")}
    out = subprocess.run(["bash", "-c", f". {MONITORING_SH} && monitoring_render"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "SW_SMTP_PASSWORD_FILE" in out.stderr


def test_a_password_file_ending_in_a_newline_is_refused(tmp_path, tools):
    # Alertmanager 0.25 would send the newline as part of the password.
    password = tmp_path / "pw"
    password.write_text("secret\n")
    env = {**os.environ, "SW_RUN_DIR": str(tmp_path), "SW_SMTP_USERNAME": "u",
           "SW_SMTP_PASSWORD_FILE": str(password)}
    out = subprocess.run(["bash", "-c", f". {MONITORING_SH} && monitoring_render"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "ends with a newline" in out.stderr


def test_monitoring_sh_is_valid_bash():
    out = subprocess.run(["bash", "-n", str(MONITORING_SH)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- dashboards -----------------------------------------------------------------------------------


def test_the_committed_dashboards_equal_a_fresh_generation():
    out = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboards_are_well_formed():
    ds = dashboards()
    assert set(ds) == {"ops.json", "pipeline.json"}
    assert {d["uid"] for d in ds.values()} == {"settlewatch-ops", "settlewatch-pipeline"}
    ops_vars = {v["name"] for v in ds["ops.json"]["templating"]["list"]}
    assert {"datasource", "acquirer", "channel"} <= ops_vars
    for name, d in ds.items():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in d["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (name, p["title"])
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]


def test_the_ops_dashboard_has_the_panels_ops_asked_for():
    titles = " | ".join(p["title"] for p in dashboards()["ops.json"]["panels"])
    for wanted in ("Match rate", "Open missing amount", "Open missing items",
                   "Findings by kind", "Late-credit ratio", "Settlement delay p50 / p90 / p99",
                   "Top acquirers"):
        assert wanted in titles


def test_the_ops_dashboard_shows_open_findings_by_sla_tier_and_acquirer():
    panels = {p["title"]: p for p in dashboards()["ops.json"]["panels"]}
    assert "SLA aging" in panels
    by_tier = panels["Open findings by SLA tier"]["targets"][0]["expr"]
    assert by_tier.startswith("sum by (tier) (settlewatch_open_findings{")
    amount = panels["Open amount at stake by acquirer and tier (major units)"]["targets"][0]
    assert "sum by (acquirer, tier, currency) (settlewatch_open_findings_amount_minor" in \
        amount["expr"]


# -- the SMTP sink --------------------------------------------------------------------------------


def test_the_smtp_sink_stores_each_mail_and_insists_on_its_login(tmp_path):
    lines = []
    with SmtpSink(tmp_path / "mail", auth=("alertmanager", "pw"), echo=lines.append) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("alertmanager", "wrong")
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused):  # 530 authentication required
                smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: no login\r\n\r\nx")
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            smtp.login("alertmanager", "pw")
            smtp.sendmail("a@example.com", ["b@example.com"],
                          b"Subject: ACQ-A missing\r\nContent-Type: text/plain\r\n\r\n12 items\r\n")
        msg = sink.wait_for(lambda m: "ACQ-A" in m["Subject"], timeout=5)
    assert text_of(msg).strip() == "12 items"
    assert len(sink.files()) == 1
    assert len(lines) == 1 and "subject='ACQ-A missing'" in lines[0]
    assert sink.authenticator.logins == ["PLAIN"]


def test_waiting_for_a_mail_that_never_comes_times_out(tmp_path):
    with SmtpSink(tmp_path / "mail") as sink:
        with pytest.raises(TimeoutError):
            sink.wait_for(lambda m: True, timeout=0.3, poll=0.05)
