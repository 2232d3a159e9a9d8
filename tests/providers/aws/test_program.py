"""The AWS Pulumi program's resource graph, run under Pulumi's mocks (no cloud, no CLI, no credentials)."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.lock import Lock
from providers.aws.program import AMI_CALL, DEFAULT_INGRESS_CIDRS, mock_calls, program
from providers.pulumi_support.capture import Captured, capture
from support import context, hub_lock

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "aws-gpu" / "llmops.yaml"
TARGET = "gpu-cloud"
MODEL = "qwen-7b"
SHA = "0123456789abcdef0123456789abcdef01234567"
LOCK = hub_lock(**{MODEL: SHA})
FAKE_TOKEN = "hf_secret_value"


def desired_from(tmp_path: Path, edit: Any = None) -> Desired:
    data = yaml.safe_load(EXAMPLE.read_text())
    if edit is not None:
        edit(data)
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Desired.from_config(load(path))


def run(desired: Desired, lock: Lock | None = LOCK) -> list[Captured]:
    return capture(program(context(desired, lock), TARGET), desired.project, desired.environment, calls=mock_calls)


def only(resources: list[Captured], name: str) -> Captured:
    found = [r for r in resources if r.name == name]
    assert len(found) == 1, [r.name for r in resources]
    return found[0]


def model_entry(data: dict, name: str = MODEL) -> dict:
    return next(m for m in data["models"] if m["name"] == name)


def user_data(resources: list[Captured]) -> str:
    return base64.b64decode(only(resources, f"model.{MODEL}/lt").inputs["userData"]).decode()


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Captured]:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return run(desired_from(tmp_path))


def test_resource_graph_of_the_example(example: list[Captured]) -> None:
    by_name = {r.name: r.type for r in example}
    assert by_name == {
        "target.gpu-cloud/provider": "pulumi:providers:aws",
        "model.qwen-7b/role": "aws:iam/role:Role",
        "model.qwen-7b/role-policy": "aws:iam/rolePolicy:RolePolicy",
        "model.qwen-7b/profile": "aws:iam/instanceProfile:InstanceProfile",
        "model.qwen-7b/sg": "aws:ec2/securityGroup:SecurityGroup",
        "model.qwen-7b/lt": "aws:ec2/launchTemplate:LaunchTemplate",
        "model.qwen-7b/asg": "aws:autoscaling/group:Group",
        "model.qwen-7b/down-alarm": "aws:cloudwatch/metricAlarm:MetricAlarm",
        "budget.team-monthly/budget": "aws:budgets/budget:Budget",
        "monitoring.prod/team-mail-topic": "aws:sns/topic:Topic",
        "monitoring.prod/team-mail-to-llm-team@example.com": "aws:sns/topicSubscription:TopicSubscription",
    }  # the hosted fallback-api model gets nothing on aws
    assert only(example, "target.gpu-cloud/provider").inputs["region"] == "us-east-1"


def test_every_name_starts_with_its_owners_address(example: list[Captured]) -> None:
    assert {r.name.split("/", 1)[0] for r in example} == {
        "target.gpu-cloud", "model.qwen-7b", "budget.team-monthly", "monitoring.prod"}
    for resource in example:
        owner, slash, rest = resource.name.partition("/")
        assert slash and rest, resource.name


def test_role_is_assumable_by_ec2_and_profile_uses_it(example: list[Captured]) -> None:
    policy = json.loads(only(example, "model.qwen-7b/role").inputs["assumeRolePolicy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert policy["Statement"][0]["Action"] == "sts:AssumeRole"
    assert only(example, "model.qwen-7b/profile").inputs["role"] == "model.qwen-7b/role-id"
    access = json.loads(only(example, "model.qwen-7b/role-policy").inputs["policy"])
    assert access["Statement"][0]["Action"] == ["ssm:GetParameter"]
    hf_token, keys = access["Statement"][0]["Resource"]
    assert hf_token.endswith(":parameter/llmctl/support-bot/prod/hf-token")
    assert keys.endswith(":parameter/llmctl/support-bot/prod/keys/*")  # the gateway's client keys


def test_gpu_spec_picks_instance_type_from_catalog(example: list[Captured]) -> None:
    lt = only(example, "model.qwen-7b/lt").inputs
    assert lt["instanceType"] == "g5.xlarge"
    assert lt["imageId"].startswith("ami-0mock")
    assert lt["iamInstanceProfile"] == {"name": "model.qwen-7b/profile-id"}
    assert lt["vpcSecurityGroupIds"] == ["model.qwen-7b/sg-id"]


def test_instance_type_wins_over_catalog(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        entry = model_entry(data)
        del entry["gpu"]
        entry["instance_type"] = "g6e.xlarge"

    resources = run(desired_from(tmp_path, edit))
    assert only(resources, "model.qwen-7b/lt").inputs["instanceType"] == "g6e.xlarge"


def test_replica_range_sizes_the_group(example: list[Captured]) -> None:
    asg = only(example, "model.qwen-7b/asg").inputs
    assert asg["minSize"] == 1
    assert asg["maxSize"] == 3
    assert asg["desiredCapacity"] == 1
    assert asg["vpcZoneIdentifiers"]


def test_fixed_replica_count_sets_min_and_max(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        entry = model_entry(data)
        entry["replicas"] = 2
        del entry["autoscale"]  # autoscale needs a {min, max} range

    asg = only(run(desired_from(tmp_path, edit)), "model.qwen-7b/asg").inputs
    assert (asg["minSize"], asg["maxSize"], asg["desiredCapacity"]) == (2, 2, 2)


def test_spot_target_uses_mixed_instances_policy(example: list[Captured]) -> None:
    asg = only(example, "model.qwen-7b/asg").inputs
    policy = asg["mixedInstancesPolicy"]
    distribution = policy["instancesDistribution"]
    assert distribution["onDemandBaseCapacity"] == 0
    assert distribution["onDemandPercentageAboveBaseCapacity"] == 0  # 100% spot above the base
    assert distribution["spotAllocationStrategy"] == "capacity-optimized"
    assert policy["launchTemplate"]["launchTemplateSpecification"]["launchTemplateId"] == "model.qwen-7b/lt-id"
    assert "launchTemplate" not in asg


def test_on_demand_target_has_no_mixed_policy(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["targets"][TARGET]["spot"] = False

    asg = only(run(desired_from(tmp_path, edit)), "model.qwen-7b/asg").inputs
    assert "mixedInstancesPolicy" not in asg
    assert asg["launchTemplate"]["id"] == "model.qwen-7b/lt-id"


def test_security_group_only_opens_the_serving_port(example: list[Captured]) -> None:
    ingress = only(example, "model.qwen-7b/sg").inputs["ingress"]
    assert len(ingress) == 1
    rule = ingress[0]
    assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (8000, 8000, "tcp")
    assert rule["cidrBlocks"] == DEFAULT_INGRESS_CIDRS == ["10.0.0.0/8"]


def test_budget_has_one_notification_per_threshold(example: list[Captured]) -> None:
    budget = only(example, "budget.team-monthly/budget").inputs
    assert budget["budgetType"] == "COST"
    assert budget["timeUnit"] == "MONTHLY"
    assert float(budget["limitAmount"]) == 2500
    assert budget["limitUnit"] == "USD"
    notifications = budget["notifications"]
    assert [n["threshold"] for n in notifications] == [50, 80, 100]
    for n in notifications:
        assert (n["notificationType"], n["comparisonOperator"], n["thresholdType"]) == (
            "ACTUAL", "GREATER_THAN", "PERCENTAGE")


def test_budget_notifies_declared_emails_and_daily_period(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["budgets"][0].update(period="day", notify=["ops@example.com"], alert_at=[0.9])

    budget = only(run(desired_from(tmp_path, edit)), "budget.team-monthly/budget").inputs
    assert budget["timeUnit"] == "DAILY"
    assert budget["notifications"][0]["subscriberEmailAddresses"] == ["ops@example.com"]
    assert budget["notifications"][0]["threshold"] == 90


def test_user_data_starts_vllm_at_the_locked_revision(example: list[Captured]) -> None:
    script = user_data(example)
    assert script.startswith("#!/bin/bash")
    assert "vllm/vllm-openai" in script
    assert "--model Qwen/Qwen2.5-7B-Instruct" in script
    assert f"--revision {SHA}" in script
    assert "--max-model-len 8192" in script
    assert "--served-model-name qwen-7b" in script
    assert "--dtype bfloat16" in script and "--gpu-memory-utilization 0.9" in script
    assert "-p 127.0.0.1:8001:8000" in script  # the engine answers only on the instance
    assert "aws ssm get-parameter" in script and "/llmctl/support-bot/prod/hf-token" in script


def test_the_gateway_fronts_the_engine_on_each_instance(example: list[Captured]) -> None:
    script = user_data(example)
    spec_text = script.split("<<'LLMCTL_SPEC'\n", 1)[1].split("\nLLMCTL_SPEC", 1)[0]
    spec = json.loads(spec_text)
    assert list(spec["routes"]) == ["qwen-7b"]  # hosted models are not routed from a model's instances
    assert spec["routes"]["qwen-7b"]["upstreams"] == ["http://127.0.0.1:8001/v1"]
    assert spec["routes"]["qwen-7b"]["price"]["basis"].startswith("amortised")
    last = script.strip().splitlines()[-1]
    assert "--network host" in last and "ghcr.io/llmctl/llmctl:" in last and last.endswith("--port 8000")


def test_revision_falls_back_to_the_source(tmp_path: Path) -> None:
    script = user_data(run(desired_from(tmp_path), lock=None))
    assert "--revision main" in script


def test_tgi_engine_uses_the_tgi_image(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        entry = model_entry(data)
        entry["engine"] = "tgi"
        entry["engine_args"] = {}

    script = user_data(run(desired_from(tmp_path, edit)))
    assert "ghcr.io/huggingface/text-generation-inference" in script
    assert f"--model-id Qwen/Qwen2.5-7B-Instruct --revision {SHA}" in script
    assert "vllm/vllm-openai" not in script


def test_hf_token_is_never_in_any_input(example: list[Captured]) -> None:
    assert FAKE_TOKEN not in user_data(example)
    for resource in example:
        assert FAKE_TOKEN not in json.dumps(resource.inputs), resource.name


# --- monitoring ------------------------------------------------------------------------------------------------

WEBHOOK_URL = "https://hooks.example.com/services/T000/B000/webhook-secret-0123"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slack-secret-4567"


def receivers(monkeypatch: pytest.MonkeyPatch, down_to: tuple[str, ...] = ("team-mail", "oncall", "chat"),
              to: str = "llm-team@example.com") -> Callable[[dict], None]:
    """An edit declaring an email, a webhook and a Slack receiver, with `down` routed to `down_to` and budgets to
    all three; the webhook and Slack URLs are set in the environment, as at a real plan."""
    monkeypatch.setenv("ONCALL_WEBHOOK_URL", WEBHOOK_URL)
    monkeypatch.setenv("TEAM_SLACK_URL", SLACK_URL)

    def edit(data: dict) -> None:
        data["monitoring"] = {
            "receivers": [
                {"name": "team-mail", "email": {"to": to, "smarthost": "smtp.example.com:587"}},
                {"name": "oncall", "webhook": {"url_env": "ONCALL_WEBHOOK_URL"}},
                {"name": "chat", "slack": {"url_env": "TEAM_SLACK_URL", "channel": "#llm"}},
            ],
            "routes": [{"alerts": ["budget"], "to": name} for name in ("team-mail", "oncall", "chat")]
                      + ([{"alerts": ["down"], "to": name} for name in down_to])}
    return edit


def of_type(resources: list[Captured], kind: str) -> list[Captured]:
    return [r for r in resources if r.type == kind]


def test_each_model_group_publishes_in_service_instances_and_has_a_down_alarm(example: list[Captured]) -> None:
    asg = only(example, "model.qwen-7b/asg").inputs
    assert asg["enabledMetrics"] == ["GroupInServiceInstances"]
    assert asg["metricsGranularity"] == "1Minute"

    alarm = only(example, "model.qwen-7b/down-alarm").inputs
    assert (alarm["namespace"], alarm["metricName"]) == ("AWS/AutoScaling", "GroupInServiceInstances")
    assert alarm["dimensions"] == {"AutoScalingGroupName": "model.qwen-7b/asg-id"}  # the group's ID is its name
    assert (alarm["statistic"], alarm["comparisonOperator"], alarm["threshold"]) == (
        "Maximum", "LessThanThreshold", 1)
    # the example's down_for, 5m: five one-minute periods, all breaching
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (60, 5, 5)
    assert alarm["treatMissingData"] == "breaching"  # no datapoints: nothing shows the model is up
    assert alarm["name"] == "llmctl-support-bot-prod-qwen-7b-down"
    description = alarm["alarmDescription"]
    assert len(description) <= 1024  # CloudWatch's limit
    for words in ("model qwen-7b", "support-bot/prod", "GroupInServiceInstances", "below 1 for 5 min",
                  "Runbook:", "describe-scaling-activities", "`llmctl apply` restores", "spot: false"):
        assert words in description, words
    # the example routes `down` to its email receiver
    assert alarm["alarmActions"] == alarm["okActions"] == ["monitoring.prod/team-mail-topic-id"]


def test_without_receivers_there_is_no_topic_and_the_alarm_notifies_nobody(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        del data["monitoring"]

    resources = run(desired_from(tmp_path, edit))
    assert not [r for r in resources if r.type.startswith("aws:sns/")]
    alarm = only(resources, "model.qwen-7b/down-alarm").inputs
    assert alarm["alarmActions"] == alarm["okActions"] == []  # it shows in the CloudWatch console only
    assert alarm["evaluationPeriods"] == 2  # down_for's default, 2m


def test_every_model_on_the_target_gets_its_own_alarm(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["models"].append({**model_entry(data), "name": "qwen-7b-canary"})

    resources = run(desired_from(tmp_path, edit))
    alarms = {r.name: r.inputs for r in of_type(resources, "aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms) == {"model.qwen-7b/down-alarm", "model.qwen-7b-canary/down-alarm"}
    assert alarms["model.qwen-7b-canary/down-alarm"]["dimensions"] == {
        "AutoScalingGroupName": "model.qwen-7b-canary/asg-id"}
    assert "model qwen-7b-canary" in alarms["model.qwen-7b-canary/down-alarm"]["alarmDescription"]


@pytest.mark.parametrize(("down_for", "periods"), [("20s", 1), ("60s", 1), ("90s", 2), ("5m", 5), ("1h", 60),
                                                   ("1d", 1440)])
def test_down_for_becomes_whole_minutes_rounded_up(tmp_path: Path, down_for: str, periods: int) -> None:
    def edit(data: dict) -> None:
        data["monitoring"] = {"down_for": down_for}

    alarm = only(run(desired_from(tmp_path, edit)), "model.qwen-7b/down-alarm").inputs
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (60, periods, periods)
    assert f"below 1 for {periods} min (monitoring.down_for {down_for}" in alarm["alarmDescription"]


def test_a_down_for_longer_than_cloudwatch_watches_is_refused(tmp_path: Path) -> None:
    def edit(data: dict) -> None:
        data["monitoring"] = {"down_for": "2d"}

    with pytest.raises(ValueError, match=r"monitoring.down_for 2d is longer than a CloudWatch alarm watches"):
        run(desired_from(tmp_path, edit))


def test_an_email_receiver_routed_down_gets_a_topic_the_alarms_notify(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = run(desired_from(tmp_path, receivers(monkeypatch)))
    topics = of_type(resources, "aws:sns/topic:Topic")
    assert [t.name for t in topics] == ["monitoring.prod/team-mail-topic"]  # none for the webhook or Slack
    assert topics[0].inputs["namePrefix"] == "llmctl-support-bot-prod-team-mail-"
    subscription = only(resources, "monitoring.prod/team-mail-to-llm-team@example.com").inputs
    assert subscription == {"topic": "monitoring.prod/team-mail-topic-id", "protocol": "email",
                            "endpoint": "llm-team@example.com"}
    assert len(of_type(resources, "aws:sns/topicSubscription:TopicSubscription")) == 1
    alarm = only(resources, "model.qwen-7b/down-alarm").inputs
    assert alarm["alarmActions"] == alarm["okActions"] == ["monitoring.prod/team-mail-topic-id"]


def test_each_address_of_an_email_receiver_is_subscribed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit = receivers(monkeypatch, down_to=("team-mail",), to="a@example.com, b@example.com")
    subscriptions = of_type(run(desired_from(tmp_path, edit)), "aws:sns/topicSubscription:TopicSubscription")
    assert [s.inputs["endpoint"] for s in subscriptions] == ["a@example.com", "b@example.com"]


def test_receivers_not_routed_down_get_no_topic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = run(desired_from(tmp_path, receivers(monkeypatch, down_to=())))
    assert not [r for r in resources if r.type.startswith("aws:sns/")]
    assert only(resources, "model.qwen-7b/down-alarm").inputs["alarmActions"] == []


def test_webhook_and_slack_urls_are_in_no_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = run(desired_from(tmp_path, receivers(monkeypatch)))
    for resource in resources:
        text = resource.name + json.dumps(resource.inputs)
        for secret in (WEBHOOK_URL, SLACK_URL, "webhook-secret-0123", "slack-secret-4567"):
            assert secret not in text, resource.name


def test_mock_calls_answers_the_ami_and_nothing_unknown() -> None:
    ami = mock_calls(AMI_CALL, {"owners": ["amazon"]})
    assert ami["id"].startswith("ami-0mock")
    assert "Deep Learning" in ami["name"]
    assert mock_calls("aws:index/getRegion:getRegion", {}) == {}
