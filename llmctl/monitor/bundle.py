"""The monitoring files of an environment, as `llmctl render --monitoring` writes them for a Prometheus, Alertmanager
and Grafana that llmctl does not run (aws, or any existing stack): each rule file with its promtool test file, the
Alertmanager configuration when receivers are declared, and the dashboard."""
from __future__ import annotations

from pathlib import Path

import yaml

from llmctl.desired import Desired
from llmctl.monitor import alertmanager
from llmctl.monitor.rule_tests import rule_tests
from llmctl.monitor.rules import rule_files, rules_yaml


def rule_texts(desired: Desired) -> dict[str, str]:
    """`NAME.rules.yml` and its `NAME.rules.test.yml`, for each rule file."""
    found: dict[str, str] = {}
    for name, groups in rule_files(desired).items():
        found[f"{name}.rules.yml"] = rules_yaml(groups)
        found[f"{name}.rules.test.yml"] = yaml.safe_dump(
            rule_tests(desired, groups, f"{name}.rules.yml"), sort_keys=False, width=120)
    return found


def files(desired: Desired, secrets_dir: Path) -> dict[str, str]:
    """Relative path -> text. Receiver secrets are referenced as files under `secrets_dir`, never written here."""
    found = {f"rules/{name}": text for name, text in rule_texts(desired).items()}
    if desired.monitoring.receivers:
        found["alertmanager.yml"] = alertmanager.render(desired, secrets_dir)
    if desired.monitoring.dashboards:
        from llmctl.monitor.dashboard import dashboard_text  # the Grafana SDK is only needed for this file

        found[f"dashboards/{desired.project}-{desired.environment}.json"] = dashboard_text(desired)
    return found


def write(desired: Desired, directory: Path, secrets_dir: Path) -> list[Path]:
    written = []
    for relative, text in files(desired, secrets_dir).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
