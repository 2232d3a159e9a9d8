"""The rules generated from every example pass the real promtool's check and its unit tests; the generated unit tests
fire and stay quiet per kind of alert, and fail when a rule is weakened; objectives that cannot page are refused."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from llmctl.config.errors import ConfigError
from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.gateway.metrics import GatewayMetrics
from llmctl.gateway.spec import SloThresholds
from llmctl.monitor import tools
from llmctl.monitor.rule_tests import rule_tests
from llmctl.monitor.promql import le
from llmctl.monitor.rules import RuleGroup, rule_files, rule_groups, rules_yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*/llmops.yaml"))


def _desired(path: Path) -> Desired:
    return Desired.from_config(load(path))


def _write(directory: Path, desired: Desired, change: Callable[[list[RuleGroup]], list[RuleGroup]] | None = None
           ) -> list[Path]:
    """Each rule file and its test file; `change` alters the rules written, not the tests."""
    tests = []
    for name, groups in rule_files(desired).items():
        (directory / f"{name}.rules.yml").write_text(rules_yaml(change(groups) if change else groups))
        test = directory / f"{name}.rules.test.yml"
        test.write_text(yaml.safe_dump(rule_tests(desired, groups, f"{name}.rules.yml"), sort_keys=False))
        tests.append(test)
    return tests


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools.require("promtool")), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_rules_pass_promtool_check_and_their_own_unit_tests(tmp_path: Path, example: Path) -> None:
    tests = _write(tmp_path, _desired(example))
    checked = _promtool("check", "rules", *sorted(tmp_path.glob("*.rules.yml")))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(tests) >= 2


def test_each_kind_has_a_case_that_fires_and_one_that_stays_quiet(tmp_path: Path) -> None:
    desired = _desired(REPO / "examples" / "reference" / "llmops.yaml")
    cases = [case for groups in rule_files(desired).values()
             for case in rule_tests(desired, groups, "rules.yml")["tests"]]
    outcomes: dict[str, set[bool]] = {}
    for case in cases:
        for check in case["alert_rule_test"]:
            outcomes.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    for alert in ("ErrorBudgetBurn", "BudgetProjectedOverrun", "BudgetExhausted", "BudgetThresholdReached",
                  "GatewayDown", "ModelDown", "UpstreamErrorSpike", "GuardrailBlockSpike"):
        assert outcomes.get(alert) == {True, False}, alert


def _weakened(groups: list[RuleGroup], alert: str, change: dict) -> list[RuleGroup]:
    return [group.model_copy(update={"rules": [rule.model_copy(update=change) if rule.alert == alert else rule
                                               for rule in group.rules]}) for group in groups]


@pytest.mark.parametrize(("alert", "change", "failing_case"), [
    ("GatewayDown", {"for_": "1h"}, "the gateway stops answering scrapes"),
    ("ErrorBudgetBurn", {"expr": 'llmctl:slo_bad:ratio_rate1h{model="assistant"} > 0'}, "fewer than"),
    ("BudgetProjectedOverrun", {"expr": 'llmctl_budget_spent_usd > 0'}, "a tenth of the limit's pace"),
])
def test_the_generated_unit_tests_fail_when_a_rule_is_weakened(tmp_path: Path, alert: str, change: dict,
                                                               failing_case: str) -> None:
    desired = _desired(REPO / "examples" / "quickstart" / "llmops.yaml")
    tests = _write(tmp_path, desired, lambda groups: _weakened(groups, alert, change))
    tested = _promtool("test", "rules", *tests)
    assert tested.returncode != 0
    assert failing_case in tested.stdout + tested.stderr


def test_the_threshold_bucket_the_rules_select_is_one_the_gateway_exports() -> None:
    metrics = GatewayMetrics(SloThresholds(ttft_seconds=[0.8], request_seconds=[4.0], itl_seconds=[0.06]))
    metrics.ttft("m", 0.5)
    metrics.request("m", "anonymous", "none", 200, 3.0)
    metrics.itl("m", [0.05])
    exported = metrics.render().decode()
    for name, threshold in (("ttft", 0.8), ("request", 4.0), ("itl", 0.06)):
        assert f'llmctl_gateway_{name}_seconds_bucket{{le="{le(threshold)}",model="m",version="stable"}} 1.0' \
            in exported


def _config(tmp_path: Path, slo: str, window: str = "") -> Path:
    path = tmp_path / "llmops.yaml"
    path.write_text(f"version: 1\nproject: x\nslos:\n  - name: chat\n    {slo}\n{window}")
    return path


@pytest.mark.parametrize(("slo", "window", "field", "numbers"), [
    ("error_rate: 0.1", "", "error_rate", "13.44 x 0.1 = 1.34 > 1"),
    ("min_goodput: 0.9", "", "min_goodput", "13.44 x 0.1 = 1.34 > 1"),
    ("ttft_p95_ms: 800", "    window: 60d\n", "ttft_p95_ms", "28.80 x 0.05 = 1.44 > 1"),
])
def test_an_objective_that_cannot_page_is_refused_at_its_line_with_the_numbers(
        tmp_path: Path, slo: str, window: str, field: str, numbers: str) -> None:
    path = _config(tmp_path, slo, window)
    with pytest.raises(ConfigError) as caught:
        load(path)
    [problem] = caught.value.diagnostics
    assert (problem.line, problem.message.split(":")[0]) == (5, f"slo 'chat' {field}")
    assert numbers in problem.message and "shorten `window`" in problem.message


def test_an_objective_that_can_page_is_accepted(tmp_path: Path) -> None:
    load(_config(tmp_path, "error_rate: 0.05"))  # 13.44 x 0.05 = 0.67


def test_a_window_shorter_than_three_days_has_no_three_day_ticket(tmp_path: Path) -> None:
    desired = _desired(_config(tmp_path, "error_rate: 0.01", "    window: 1d\n"))
    desired = Desired(**{**desired.__dict__, "models": {}})
    text = rules_yaml(rule_groups(desired))
    assert "ratio_rate3d" not in text


def test_alerts_name_what_they_are_about_the_limit_and_a_runbook() -> None:
    desired = _desired(REPO / "examples" / "reference" / "llmops.yaml")
    alerts = [rule for group in rule_groups(desired) for rule in group.rules if rule.alert]
    burn = next(r for r in alerts if r.alert == "ErrorBudgetBurn" and r.labels["sli"] == "ttft")
    assert {"model": "assistant", "slo": "interactive", "severity": "page", "kind": "slo_page"}.items() <= \
        burn.labels.items()
    assert "1500 ms TTFT" in burn.annotations["summary"] and "$value" in burn.annotations["summary"]
    budget = next(r for r in alerts if r.alert == "BudgetExhausted")
    assert budget.labels["budget"] == "team-monthly" and "$2500 limit" in budget.annotations["summary"]
    assert all(rule.annotations.get("runbook") for rule in alerts)
    assert all(rule.labels["kind"] and rule.labels["severity"] in ("page", "ticket") for rule in alerts)


def test_error_budget_left_survives_an_idle_hour(tmp_path: Path) -> None:
    """Ten clean minutes, then an hour without a request: the budget is untouched, not unknown."""
    desired = _desired(REPO / "examples" / "quickstart" / "llmops.yaml")
    (tmp_path / "slos.rules.yml").write_text(rules_yaml(rule_files(desired)["slos"]))
    remaining = 'llmctl:slo_budget_remaining:ratio{model="assistant",slo="interactive",sli="errors"}'
    test = tmp_path / "idle.test.yml"
    test.write_text(yaml.safe_dump({"rule_files": ["slos.rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'llmctl_gateway_requests_total{model="assistant",status="200"}',
                          "values": "0+600x10 6000x60"}],
        "promql_expr_test": [{"expr": remaining, "eval_time": "70m",
                              "exp_samples": [{"labels": remaining, "value": 1}]}],
    }]}))
    tested = _promtool("test", "rules", test)
    assert tested.returncode == 0, tested.stdout + tested.stderr
