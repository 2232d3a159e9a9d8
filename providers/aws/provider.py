"""The aws provider: GPU instances in auto-scaling groups, through the Pulumi program in program.py."""
from __future__ import annotations

from providers.aws.program import mock_calls, program
from providers.pulumi_support.provider import PulumiProvider


class AwsProvider(PulumiProvider):
    name = "aws"
    program = staticmethod(program)
    calls = staticmethod(mock_calls)
    serving_type = "aws:autoscaling/group:Group"
    # Inputs AWS cannot change in place (Terraform's ForceNew for the same resources); anything else is an update,
    # e.g. a new instance type is a new launch template version that the group's instance refresh rolls out.
    replace_on = {
        "aws:iam/role:Role": frozenset({"name", "path"}),
        "aws:iam/instanceProfile:InstanceProfile": frozenset({"name", "path"}),
        "aws:ec2/securityGroup:SecurityGroup": frozenset({"name", "name_prefix", "description", "vpc_id"}),
        "aws:ec2/launchTemplate:LaunchTemplate": frozenset({"name", "name_prefix"}),
        "aws:autoscaling/group:Group": frozenset({"name", "name_prefix"}),
        "aws:budgets/budget:Budget": frozenset({"name", "account_id"}),
    }
