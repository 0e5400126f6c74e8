"""Prometheus rules, scrape config and the Grafana dashboard agree with shared/metrics.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from shared import metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra" / "prometheus"
DASHBOARD = ROOT / "infra" / "grafana" / "sandbox-runner.json"
# Series Prometheus itself provides, and PromQL words that look like metric names.
BUILTIN = {"up"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "by", "without", "and", "or",
    "unless", "on", "ignoring", "bool", "le", "histogram_quantile", "absent", "offset",
}  # fmt: skip


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: infra/local/install-deps.sh installs the prometheus package"
    done = subprocess.run(
        [exe, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def metric_names(expr: str) -> set[str]:
    """Return the metric names an expression reads (label matchers and strings removed)."""
    bare = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', "", expr))
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {w for w in words if w not in PROMQL_WORDS and not w.isdigit()}


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_and_scrape_config_pass_promtool() -> None:
    promtool("check", "rules", "alerts.yml")
    promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in alert_rules()} <= fired


def test_alerts_and_the_dashboard_read_only_defined_metrics() -> None:
    known = metrics.all_metric_names() | BUILTIN
    assert "sandbox_webhook_deliveries_total" in known
    exprs = [str(rule["expr"]) for rule in alert_rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) > 20
    for expr in exprs:
        unknown = metric_names(expr) - known
        assert not unknown, (expr, unknown)


def test_the_scrape_config_covers_every_service() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    assert targets == {
        "sandbox-api": "127.0.0.1:8000",
        "sandbox-provisioner": "127.0.0.1:9101",
        "sandbox-executor": "127.0.0.1:9102",
        "sandbox-finalizer": "127.0.0.1:9103",
    }
