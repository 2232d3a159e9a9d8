"""What a plan says about monitoring before anything runs: tools missing for what the config asks to run, and
alert routing a reviewer should see."""
from __future__ import annotations

from llmctl.checks import Check
from llmctl.desired import Desired
from llmctl.monitor import alertmanager, tools


def checks(desired: Desired) -> list[Check]:
    address = f"monitoring.{desired.environment}"
    settings = desired.monitoring
    found = alertmanager.checks(desired)
    local = any(target.provider == "local" for target in desired.targets.values())
    if settings.prometheus.run and not local:
        found.append(Check(severity="warning", address=address, message=(
            "prometheus.run starts Prometheus on the local target, and this config has none: on kubernetes the "
            "rules, scrape targets and dashboard deploy as PrometheusRule, ServiceMonitor and ConfigMap; elsewhere "
            "`llmctl render --monitoring` writes the files")))
    if settings.alertmanager.run and not settings.prometheus.run:
        found.append(Check(severity="warning", address=address, message=(
            "alertmanager.run without prometheus.run: nothing would send it alerts; set prometheus.run: true")))
    if settings.alertmanager.run:
        found += [Check(severity="warning", address=address, message=f"{problem}; apply will refuse until it is set")
                  for problem in alertmanager.secret_problems(desired)]
    if local and settings.prometheus.run:
        wanted = ["prometheus"] + (["alertmanager"] if settings.alertmanager.run else [])
        found += [Check(severity="error", address=address, message=why)
                  for tool in wanted if (why := tools.problem(tool))]
    return found
