"""Prometheus on the local target, for real: apply starts it scraping the gateway with the generated rules loaded,
a gateway that stops answering fires GatewayDown, a changed SLO threshold is a replacement the plan shows rule by
rule, and destroy stops it. The model is a hosted one, so no model server is needed (the quickstart's own run is
in tests/integration/test_monitoring.py)."""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from prometheus_api import api, eventually
from support import Run

CONFIG = """\
version: 1
project: watch
environment: test
targets:
  laptop: {provider: local}
models:
  - name: hosted
    source: api://openai/gpt-4o-mini
    slo: chat
    budget: monthly
slos:
  - {name: chat, ttft_p95_ms: 800, error_rate: 0.01}
budgets:
  - {name: monthly, limit_usd: 50, alert_at: [0.5]}
monitoring:
  prometheus: {run: true, scrape_interval: 1s, evaluation_interval: 1s}
  down_for: 3s
"""


def _resources(config: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((config.parent / ".llmctl" / "state" / "watch" / "test.json").read_text())
    return {r["address"]: r for r in data["resources"]}


@pytest.fixture
def config(llmctl: Run, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "llmops.yaml"
    path.write_text(CONFIG)
    yield path
    state = tmp_path / ".llmctl" / "state" / "watch" / "test.json"
    pids = [r["attrs"]["pid"] for r in _resources(path).values()] if state.exists() else []
    llmctl("destroy", "-f", str(path), "--auto-approve")
    for pid in pids:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def test_apply_runs_prometheus_on_the_gateway_and_rules_and_destroy_stops_it(llmctl: Run, config: Path) -> None:
    applied = llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert applied.returncode == 0, applied.stderr
    assert "local_prometheus.test: ready" in applied.stderr
    resources = _resources(config)
    prometheus = resources["local_prometheus.test"]
    gateway_port = resources["local_gateway.test"]["attrs"]["port"]
    base = prometheus["endpoint"]

    targets = eventually(lambda: [t for t in api(f"{base}/api/v1/targets")["activeTargets"]
                                   if t["health"] == "up"], "the gateway scraped")
    assert [(t["labels"]["job"], t["labels"]["instance"]) for t in targets] == [
        ("llmctl-gateway", f"127.0.0.1:{gateway_port}")]
    groups = eventually(lambda: api(f"{base}/api/v1/rules")["groups"], "rules loaded")
    assert {g["name"] for g in groups} == {"llmctl-slo-hosted", "llmctl-budget-monthly", "llmctl-health"}
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}

    os.kill(resources["local_gateway.test"]["attrs"]["pid"], signal.SIGKILL)
    firing = eventually(lambda: [a for a in api(f"{base}/api/v1/alerts")["alerts"]
                                  if a["labels"]["alertname"] == "GatewayDown" and a["state"] == "firing"],
                         "GatewayDown firing")
    assert firing[0]["labels"]["kind"] == "down" and firing[0]["labels"]["environment"] == "test"

    status = llmctl("status", "-f", str(config), "--format", "json")
    report = json.loads(status.stdout)
    assert [(m["address"], m["health"]) for m in report["monitoring"]] == [("local_prometheus.test", "healthy")]
    assert not any(r["address"].startswith("local_prometheus") for r in report["replicas"])
    assert "GatewayDown" in {alert["name"] for alert in report["alerts"]["alerts"]}
    assert "GatewayDown" in llmctl("status", "-f", str(config)).stdout

    destroyed = llmctl("destroy", "-f", str(config), "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "local_prometheus.test: stopped" in destroyed.stderr
    assert not psutil.pid_exists(prometheus["attrs"]["pid"]) or \
        psutil.Process(prometheus["attrs"]["pid"]).status() == psutil.STATUS_ZOMBIE


def test_a_changed_slo_threshold_replaces_prometheus_showing_the_rules_it_changes(llmctl: Run, config: Path) -> None:
    assert llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify").returncode == 0
    config.write_text(CONFIG.replace("ttft_p95_ms: 800", "ttft_p95_ms: 500"))
    plan = llmctl("plan", "-f", str(config), "--format", "json")
    assert plan.returncode == 0, plan.stderr
    [change] = [c for c in json.loads(plan.stdout)["resource_changes"] if c["address"] == "local_prometheus.test"]
    assert change["action"] == "replace" and change["reason"] == "rules changed"
    before, after = change["before"]["rules"]["slos.rules.yml"], change["after"]["rules"]["slos.rules.yml"]
    changed = {key for key in before if before[key] != after.get(key)}
    assert changed and all("sli=ttft" in key for key in changed)
    assert any('le="0.8"' in before[key] and 'le="0.5"' in after[key] for key in changed)
    text = llmctl("plan", "-f", str(config))
    assert "local_prometheus.test" in text.stdout and "rules changed" in text.stdout


def test_apply_without_prometheus_installed_refuses_before_starting_anything(llmctl: Run, config: Path,
                                                                             tmp_path: Path) -> None:
    bare = {"LLMCTL_TOOLS_DIR": str(tmp_path / "no-tools"), "PATH": str(tmp_path)}  # llmctl runs by absolute path
    applied = llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify", env=bare)
    assert applied.returncode == 1
    assert "prometheus was not found on PATH" in applied.stdout + applied.stderr
    assert "install-monitoring-tools" in applied.stdout + applied.stderr
    assert not (tmp_path / ".llmctl" / "state" / "watch" / "test.json").exists()
