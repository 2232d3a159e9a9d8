"""Engine events → plan lines, drift and recorded outputs, through the Automation API's own event parser."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pulumi.automation import EngineEvent

from llmctl.resource import ResourceChange
from providers.pulumi_support.events import applied_outputs, preview_changes, refresh_drift

EVENTS = Path(__file__).parents[2] / "data" / "pulumi_events"


def _events(name: str) -> list[EngineEvent]:
    return [EngineEvent.from_json(json.loads(line)) for line in (EVENTS / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def changes() -> dict[str, ResourceChange]:
    # The offline plan's names for two of them, as PulumiProvider.resources() records them.
    addresses = {"model.qwen-7b/asg": ("aws_autoscaling_group.qwen-7b/asg", "model.qwen-7b"),
                 "model.qwen-7b/sg": ("aws_ec2_security_group.qwen-7b/sg", "model.qwen-7b")}
    found = preview_changes(_events("preview"), addresses, provider="aws", target="gpu-cloud")
    assert len(found) == len({c.address for c in found}), "a replacement is one change, not three"
    return {change.address: change for change in found}


def test_each_step_becomes_one_change_and_engine_bookkeeping_none(changes: dict[str, ResourceChange]) -> None:
    assert {address: change.action for address, change in changes.items()} == {
        "aws_autoscaling_group.qwen-7b/asg": "update",
        "aws_ec2_launch_template.qwen-7b/lt": "update",
        "aws_ec2_security_group.qwen-7b/sg": "replace",
        "aws_budgets_budget.team-monthly/budget": "create",
        "aws_autoscaling_group.retired/asg": "delete",
    }
    assert {c.owner for c in changes.values()} == {"model.qwen-7b", "model.retired", "budget.team-monthly"}
    assert all(c.provider == "aws" and c.target == "gpu-cloud" for c in changes.values())


def test_updates_name_the_changed_properties_and_replacements_the_forcing_one(
        changes: dict[str, ResourceChange]) -> None:
    asg = changes["aws_autoscaling_group.qwen-7b/asg"]
    assert asg.reason == "desired_capacity, min_size changed"
    assert (asg.before or {})["min_size"] == 1 and (asg.after or {})["min_size"] == 2
    assert changes["aws_ec2_security_group.qwen-7b/sg"].reason == "description changed (forces replacement)"
    assert changes["aws_autoscaling_group.retired/asg"].after is None


def test_values_unknown_before_apply_and_secrets_read_as_such(changes: dict[str, ResourceChange]) -> None:
    template = changes["aws_ec2_launch_template.qwen-7b/lt"]
    assert template.after is not None and template.before is not None
    assert template.after["vpc_security_group_ids"] == ["(known after apply)"]
    assert template.after["user_data"] == "(sensitive value)" == template.before["user_data"]
    assert template.after["instance_type"] == "g6e.xlarge" and template.before["instance_type"] == "g5.xlarge"


def test_a_refresh_reports_deleted_and_changed_resources_only() -> None:
    drift = refresh_drift(_events("refresh"))
    assert drift.gone == {"model.qwen-7b/sg": "deleted outside llmctl (found by pulumi refresh)"}
    assert drift.changed == {"model.qwen-7b/asg": ["desired_capacity", "max_size"]}  # the template is unchanged


def test_an_update_records_urn_and_id_of_what_it_made() -> None:
    outputs = applied_outputs(_events("up"))
    assert outputs == {
        "model.qwen-7b/sg": {"urn": "urn:pulumi:prod-gpu-cloud::support-bot::aws:ec2/securityGroup:SecurityGroup"
                                    "::model.qwen-7b/sg", "id": "sg-0new"},
        "model.qwen-7b/asg": {"urn": "urn:pulumi:prod-gpu-cloud::support-bot::aws:autoscaling/group:Group"
                                     "::model.qwen-7b/asg", "id": "llmctl-support-bot-prod-qwen-7b-2026"},
    }
