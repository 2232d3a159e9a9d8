"""The CLI road of a Pulumi provider, wired end to end: plan from a preview's events, drift from a refresh preview,
state from an update's events and stack outputs.

The pulumi CLI cannot be installed on this machine, so `RecordedStack` stands in for the Automation API stack it
would drive: a named test double that replays engine event streams recorded to Pulumi's event schema
(tests/data/pulumi_events/) to the provider's `on_event` callback. Everything else is the real provider code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import EngineEvent, OutputValue

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.plan.planner import make_refresh_plan
from llmctl.state import State
from providers.aws import AwsProvider
from llmctl.provider import ApplyContext
from llmctl.resource import Resource
from providers.pulumi_support import provider as pulumi_provider
from support import REPO, context

EVENTS = Path(__file__).parents[2] / "data" / "pulumi_events"


class RecordedStack:
    name = "prod-gpu-cloud"

    def _replay(self, stream: str, on_event: Any) -> None:
        for line in (EVENTS / f"{stream}.jsonl").read_text().splitlines():
            on_event(EngineEvent.from_json(json.loads(line)))

    def preview(self, *, on_event: Any, **_: Any) -> None:
        self._replay("preview", on_event)

    def preview_refresh(self, *, on_event: Any, **_: Any) -> None:
        self._replay("refresh", on_event)

    def up(self, *, on_event: Any, **_: Any) -> Any:
        self._replay("up", on_event)
        outputs = {"model.qwen-7b.endpoints": OutputValue(["http://203.0.113.7:8000/v1"], False),
                   "model.qwen-7b.instances": OutputValue(["i-0abc"], False)}
        return type("UpResult", (), {"outputs": outputs})()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> AwsProvider:
    monkeypatch.setattr(pulumi_provider, "cli_available", lambda: True)
    monkeypatch.setattr(AwsProvider, "_stack", lambda self, config, target: (RecordedStack(), "file:///b"))
    monkeypatch.setattr(AwsProvider, "_select", lambda self, attrs: RecordedStack())
    return AwsProvider()


@pytest.fixture(scope="module")
def desired() -> Desired:
    return Desired.from_config(load(REPO / "examples" / "aws-gpu" / "llmops.yaml", None))


def _resource(address: str, type_: str, name: str, **attrs: Any) -> Resource:
    return Resource(address=address, type=type_, owner=name.split("/")[0], provider="aws", target="gpu-cloud",
                    spec={}, attrs={"name": name, **attrs})


ASG = _resource("aws_autoscaling_group.qwen-7b/asg", "aws:autoscaling/group:Group", "model.qwen-7b/asg")
SG = _resource("aws_ec2_security_group.qwen-7b/sg", "aws:ec2/securityGroup:SecurityGroup", "model.qwen-7b/sg")


def test_with_the_cli_the_plan_is_the_previews_and_not_labelled_offline(aws: AwsProvider, desired: Desired) -> None:
    changes, checks = aws.plan(context(desired), "gpu-cloud", [ASG, SG], [], {})
    assert checks == []
    actions = {change.address: change.action for change in changes}
    assert actions["aws_autoscaling_group.qwen-7b/asg"] == "update"
    assert actions["aws_ec2_security_group.qwen-7b/sg"] == "replace"
    assert actions["aws_autoscaling_group.retired/asg"] == "delete"


def test_refresh_only_reports_what_the_refresh_preview_found(aws: AwsProvider, desired: Desired) -> None:
    recorded = {"stack": "prod-gpu-cloud", "backend": "file:///b", "project": "support-bot"}
    state = State(project="support-bot", environment="prod", serial=3, lineage="l",
                  resources=[r.model_copy(update={"attrs": {**r.attrs, **recorded}}) for r in (ASG, SG)])
    plan = make_refresh_plan(context(desired), state, lambda name: aws)
    assert [(d.address, d.kind, d.detail) for d in plan.drift] == [
        ("aws_autoscaling_group.qwen-7b/asg", "changed", "desired_capacity, max_size changed"),
        ("aws_ec2_security_group.qwen-7b/sg", "deleted", "deleted outside llmctl (found by pulumi refresh)"),
    ]
    assert plan.refresh_only and plan.changes == [] and plan.resource_changes == []


def test_apply_records_ids_and_the_models_endpoints(aws: AwsProvider, desired: Desired, tmp_path: Path) -> None:
    ctx = ApplyContext(resolved=context(desired), target="gpu-cloud", persist=lambda resources: None)
    done = aws.apply([], [ASG, SG], [], ctx)
    applied = {r.address: r.attrs for r in done}
    asg = applied["aws_autoscaling_group.qwen-7b/asg"]
    assert asg["id"] == "llmctl-support-bot-prod-qwen-7b-2026" and asg["stack"] == "prod-gpu-cloud"
    assert asg["endpoints"] == ["http://203.0.113.7:8000/v1"] and asg["instances"] == ["i-0abc"]
    assert all(r.endpoint is None for r in done), \
        "the SLO verifier would load-test an address reachable only inside the VPC"
    assert applied["aws_ec2_security_group.qwen-7b/sg"]["id"] == "sg-0new"
    assert "endpoints" not in applied["aws_ec2_security_group.qwen-7b/sg"]
