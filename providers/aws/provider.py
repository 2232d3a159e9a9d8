"""The aws provider: GPU instances in auto-scaling groups, through the Pulumi program in program.py."""
from __future__ import annotations

from llmctl.checks import Check
from llmctl.resolve import Resolved
from providers.aws.program import down_receivers, mock_calls, program
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
        "aws:cloudwatch/metricAlarm:MetricAlarm": frozenset({"name"}),
        "aws:sns/topic:Topic": frozenset({"name", "name_prefix"}),
        "aws:sns/topicSubscription:TopicSubscription": frozenset({"topic", "protocol", "endpoint"}),
        # The shared gateway store (gateway.store): fields the AWS API cannot change in place.
        "aws:rds/instance:Instance": frozenset({"identifier", "identifier_prefix", "engine", "db_name", "username",
                                                "storage_encrypted", "kms_key_id", "db_subnet_group_name"}),
        "aws:ssm/parameter:Parameter": frozenset({"name"}),
        # A VPC ingress rule is modified in place (ModifySecurityGroupRules) except for the group it belongs to.
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": frozenset({"security_group_id"}),
    }

    def check(self, resolved: Resolved, target: str) -> list[Check]:
        """Receivers routed `down` that the target's CloudWatch alarms cannot notify (the program subscribes email
        receivers only), so a reviewer does not count on pages that never come."""
        desired = resolved.desired
        unreached = [r.name for r in down_receivers(desired.monitoring) if r.email is None]
        if not unreached or not desired.models_on(target):
            return []
        return [Check(severity="warning", address=f"monitoring.{desired.environment}", message=(
            f"target '{target}': on aws only email receivers get CloudWatch notifications, so the model-down alarms "
            f"do not reach {', '.join(repr(name) for name in unreached)}: subscribing a webhook or Slack URL to SNS "
            "would put that secret in the Pulumi program's inputs, plans and state. Route `down` to an email "
            "receiver as well, or send the rendered rules' alerts to them (`llmctl render --monitoring`)"))]
