"""The aws provider in plans and applies with no cloud, CLI or credentials: resource-level plans computed offline
under Pulumi's mocks, updates told from replacements, and an apply that stops cleanly without the pulumi CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import fake_pulumi
from support import REPO, Run, edit, record_apply, without_pulumi_cli

EXAMPLE = REPO / "examples" / "aws-gpu" / "llmops.yaml"
WEBHOOK_URL = "https://hooks.example.com/services/T000/B000/webhook-secret-0123"
# Email gets the model-down alarms through SNS; the webhook's URL is a secret that never enters the program.
RECEIVERS = {
    "receivers": [{"name": "team-mail", "email": {"to": "llm-team@example.com", "smarthost": "smtp.example.com:587"}},
                  {"name": "oncall", "webhook": {"url_env": "ONCALL_WEBHOOK_URL"}}],
    "routes": [{"alerts": ["down"], "to": "team-mail"},
               {"alerts": ["down", "slo_page", "slo_ticket", "budget", "errors", "guardrails"], "to": "oncall"}],
}


@pytest.fixture
def example(tmp_path: Path, hub_llmctl: Run) -> tuple[Path, Run]:
    config = tmp_path / "llmops.yaml"
    shutil.copy(EXAMPLE, config)

    def run(*args: str):  # type: ignore[no-untyped-def]
        # A token in the environment must never surface in a plan.
        return hub_llmctl(*args, env={**without_pulumi_cli(), "HF_TOKEN": "hf_secret_value"})

    assert run("lock", "-f", str(config)).returncode == 0
    return config, run


def test_a_resource_level_plan_with_no_cloud_cli_or_credentials(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    result = run("plan", "-f", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    for address in ("aws_iam_role.qwen-7b/role", "aws_ec2_security_group.qwen-7b/sg",
                    "aws_ec2_launch_template.qwen-7b/lt", "aws_autoscaling_group.qwen-7b/asg",
                    "aws_cloudwatch_metric_alarm.qwen-7b/down-alarm", "aws_budgets_budget.team-monthly/budget"):
        assert f"+ {address}" in result.stdout
    assert "planned offline: the Pulumi program ran under Pulumi's mocks" in result.stdout
    assert "on aws only email receivers" not in result.stdout  # its one receiver is email
    as_json = run("plan", "-f", str(config), "--format", "json").stdout
    assert "hf_secret_value" not in result.stdout + as_json
    owners = {rc["address"]: rc["owner"] for rc in json.loads(as_json)["resource_changes"]}
    assert owners["aws_cloudwatch_metric_alarm.qwen-7b/down-alarm"] == "model.qwen-7b"


def test_receivers_show_their_topics_under_monitoring_and_the_unreached_ones_as_a_warning(
        example, hub_llmctl: Run) -> None:  # type: ignore[no-untyped-def]
    config, _ = example
    data = yaml.safe_load(config.read_text())
    data["monitoring"] = RECEIVERS
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**without_pulumi_cli(), "HF_TOKEN": "hf_secret_value", "ONCALL_WEBHOOK_URL": WEBHOOK_URL}
    text = hub_llmctl("plan", "-f", str(config), env=env)
    assert text.returncode == 0, text.stdout + text.stderr
    as_json = hub_llmctl("plan", "-f", str(config), "--format", "json", env=env).stdout
    plan = json.loads(as_json)
    owners = {rc["address"]: rc["owner"] for rc in plan["resource_changes"]}
    assert owners["aws_sns_topic.prod/team-mail-topic"] == "monitoring.prod"
    assert owners["aws_sns_topic_subscription.prod/team-mail-to-llm-team@example.com"] == "monitoring.prod"
    assert owners["aws_cloudwatch_metric_alarm.qwen-7b/down-alarm"] == "model.qwen-7b"
    monitoring = text.stdout[text.stdout.index("monitoring.prod"):]
    assert "+ aws_sns_topic.prod/team-mail-topic" in monitoring
    warnings = [c["message"] for c in plan["checks"] if "on aws only email receivers" in c["message"]]
    assert len(warnings) == 1 and "'oncall'" in warnings[0] and "'team-mail'" not in warnings[0]
    assert "on aws only email receivers get CloudWatch notifications" in text.stdout
    assert WEBHOOK_URL not in text.stdout + text.stderr + as_json
    assert "webhook-secret-0123" not in text.stdout + as_json


def test_edits_show_updates_in_place_and_nothing_else(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    record_apply(config)
    assert run("plan", "-f", str(config), "--detailed-exitcode").returncode == 0  # nothing to do

    edit(config, "replicas: {min: 1, max: 3}", "replicas: {min: 2, max: 3}")
    edit(config, "    gpu: {type: A10G, count: 1}\n", "    instance_type: g6e.xlarge\n")
    plan = json.loads(run("plan", "-f", str(config), "--format", "json").stdout)
    changes = {rc["address"]: rc for rc in plan["resource_changes"]}
    assert changes["aws_autoscaling_group.qwen-7b/asg"]["action"] == "update"
    assert "min_size" in changes["aws_autoscaling_group.qwen-7b/asg"]["reason"]
    assert changes["aws_ec2_launch_template.qwen-7b/lt"]["action"] == "update"
    assert "instance_type" in changes["aws_ec2_launch_template.qwen-7b/lt"]["reason"]
    assert all(rc["action"] == "update" for rc in plan["resource_changes"])

    text = run("plan", "-f", str(config)).stdout
    assert "~ aws_autoscaling_group.qwen-7b/asg  # desired_capacity, min_size changed" in text
    # The new instance's price changes the amortised price in the instances' gateway spec too.
    assert "~ aws_ec2_launch_template.qwen-7b/lt  # instance_type, user_data changed" in text


def test_apply_without_the_pulumi_cli_stops_before_anything_changes(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    state = config.parent / ".llmctl" / "state" / "support-bot" / "prod.json"
    first = run("apply", "-f", str(config), "--auto-approve")
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "the pulumi CLI is not installed" in first.stderr and "pulumi login" in first.stderr
    assert not state.exists()

    backend = record_apply(config)
    before = state.read_bytes()
    edit(config, "replicas: {min: 1, max: 3}", "replicas: {min: 2, max: 3}")
    again = run("apply", "-f", str(config), "--auto-approve")
    assert again.returncode == 1 and state.read_bytes() == before and backend.read().serial == 1


def test_with_the_cli_but_no_credentials_plans_offline_and_apply_fails_with_the_providers_message(
        example, hub_llmctl: Run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, _ = example
    env = {**fake_pulumi.install(tmp_path), "HF_TOKEN": "hf_secret_value"}

    def run(*args: str):  # type: ignore[no-untyped-def]
        return hub_llmctl(*args, env=env)

    plan = run("plan", "-f", str(config))
    assert plan.returncode == 0, plan.stderr
    assert "+ aws_autoscaling_group.qwen-7b/asg" in plan.stdout
    assert "planned offline" in plan.stdout and "no valid credential sources" in plan.stdout

    applied = run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert applied.returncode == 1 and "Traceback" not in applied.stderr
    assert "pulumi stack failed" in applied.stderr and "no valid credential sources" in applied.stderr
    assert not (config.parent / ".llmctl" / "state" / "support-bot" / "prod.json").exists()


def test_status_lists_recorded_cloud_resources_as_unknown_without_failing(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    record_apply(config)
    status = run("status", "-f", str(config), "--format", "json")
    assert status.returncode == 0, status.stdout
    health = {r["address"]: r["health"] for r in json.loads(status.stdout)["replicas"]}
    assert health["aws_autoscaling_group.qwen-7b/asg"].startswith("unknown: cloud resources are read with the pulumi")
