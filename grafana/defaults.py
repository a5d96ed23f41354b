"""Shared building blocks for settlewatch's Grafana dashboards (stdlib only).

The dashboards are written as `grafana/<name>.dashboard.py`; each defines `dashboard()`
returning a dict. `python grafana/generate.py` writes `grafana/dashboards/<name>.json`
(committed; do not edit the JSON by hand) and `--check` fails when the committed JSON differs
from a fresh generation (tests/test_monitoring.py runs it).

Panels use the `datasource` variable (type prometheus), so a dashboard works with any
Prometheus data source; provisioning (grafana/provisioning/) names one "settlewatch-prometheus".
Amounts are minor units; `major_units()` divides by 10^digits of each currency with
settlewatch_currency_minor_unit_digits (streams/metrics.py).
"""
from __future__ import annotations

import json
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
GRID_WIDTH = 24


def major_units(expr_by_currency: str) -> str:
    """`expr` aggregated by currency (minor units) -> major units (CNY 12.34, JPY 1234)."""
    return (f"({expr_by_currency}) / on(currency) group_left() "
            f"(10 ^ max by (currency) (settlewatch_currency_minor_unit_digits))")


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A",
           fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend,
                         "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    else:
        t["range"] = True
    return t


def _targets(exprs) -> list[dict[str, Any]]:
    out = []
    for i, e in enumerate(exprs):
        if isinstance(e, dict):
            out.append({**e, "refId": chr(ord("A") + i)})
        else:
            expr, legend = e
            out.append(target(expr, legend, ref=chr(ord("A") + i)))
    return out


def timeseries(title: str, exprs, *, unit: str = "short", description: str = "",
               stack: bool = False, bars: bool = False, min_: float | None = 0,
               max_: float | None = None, w: int = 12, h: int = 8,
               thresholds: list[tuple[float | None, str]] | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 60 if bars else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "spanNulls": False,
        },
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": _targets(exprs),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "_size": (w, h),
    }


def _thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def stat(title: str, exprs, *, unit: str = "short", description: str = "", w: int = 6,
         h: int = 5, decimals: int | None = None,
         thresholds: list[tuple[float | None, str]] | None = None,
         text_mode: str = "auto") -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": _thresholds(thresholds or [(None, "green")]),
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    targets = _targets(exprs)
    for t in targets:
        t.update(instant=True, range=False)
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "textMode": text_mode,
                    "justifyMode": "auto", "orientation": "auto"},
        "_size": (w, h),
    }


def bargauge(title: str, exprs, *, unit: str = "short", description: str = "", w: int = 12,
             h: int = 8) -> dict[str, Any]:
    targets = _targets(exprs)
    for t in targets:
        t.update(instant=True, range=False)
    return {
        "type": "bargauge", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                     "thresholds": _thresholds([(None, "orange")]),
                                     "color": {"mode": "thresholds"}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "orientation": "horizontal", "displayMode": "gradient",
                    "showUnfilled": True},
        "_size": (w, h),
    }


def table(title: str, exprs, *, description: str = "", w: int = 12, h: int = 8,
          unit: str = "short", hide: tuple[str, ...] = ("Time",)) -> dict[str, Any]:
    targets = [{**t, "instant": True, "range": False, "format": "table"}
               for t in _targets(exprs)]
    return {
        "type": "table", "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {name: True for name in hide}}},
        ],
        "_size": (w, h),
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "_size": (GRID_WIDTH, 1)}


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "options": []}


def query_variable(name: str, label: str, query: str, *, include_all: bool = True,
                   multi: bool = True) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
        # With "All", match series whose label is empty too (e.g. channel not reported).
        "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0, "options": [], "regex": "",
    }


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at the grid width; number them."""
    x = y = row_h = 0
    out = []
    for pid, p in enumerate(panels, start=1):
        p = dict(p)
        w, h = p.pop("_size")
        if x + w > GRID_WIDTH or p["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        p["id"] = pid
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        out.append(p)
        x += w
        row_h = max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + h, 0
    return out


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], *, description: str,
              variables: list[dict[str, Any]], time_from: str = "now-24h",
              refresh: str = "30s", tags: tuple[str, ...] = ("settlewatch",)) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(tags),
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "refresh": refresh,
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": [{
            "name": "Alerts", "datasource": DS, "enable": True, "iconColor": "red",
            "expr": 'ALERTS{alertstate="firing", service="settlewatch"}',
            "titleFormat": "{{alertname}}", "textFormat": "{{acquirer}} {{topic}}",
            "step": "60s", "useValueForTime": False,
        }]},
        "links": [{"type": "dashboards", "tags": ["settlewatch"], "asDropdown": False,
                   "title": "settlewatch", "includeVars": True, "keepTime": True}],
        "panels": layout(panels),
    }


def to_json(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expressions(d: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard: panel targets, variables, annotations."""
    out = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    out += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
    return out
