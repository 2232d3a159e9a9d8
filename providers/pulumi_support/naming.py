"""How a Pulumi resource is named in plans and state: Terraform-style addresses under the model they serve."""
from __future__ import annotations

import re
from typing import Any


def address_type(pulumi_type: str) -> str:
    """aws:autoscaling/group:Group -> aws_autoscaling_group; kubernetes:apps/v1:Deployment ->
    kubernetes_apps_deployment; kubernetes:monitoring.coreos.com/v1:PrometheusRule ->
    kubernetes_monitoring_prometheus_rule: package, module and kind, as Terraform-style addresses read."""
    package, module, kind = (pulumi_type.split(":") + ["", ""])[:3]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    # An API group's first label only (monitoring.coreos.com/v1 -> monitoring): an address is TYPE.NAME, one dot.
    return "_".join(part for part in (package, module.split("/")[0].split(".")[0], snake) if part)


def address_of(pulumi_type: str, name: str) -> tuple[str, str]:
    """The program names resources OWNER/PART (model.qwen-7b/asg): -> (aws_autoscaling_group.qwen-7b/asg,
    model.qwen-7b)."""
    owner, _, part = name.partition("/")
    return f"{address_type(pulumi_type)}.{owner.split('.', 1)[-1]}/{part}", owner


# Keys of these fields are the user's or the API's data (tag keys, label keys, env names), not property names.
_MAPS = frozenset({"tags", "tagsAll", "labels", "annotations", "data", "stringData", "binaryData", "matchLabels",
                   "selector", "nodeSelector", "hard", "limits", "requests"})
_CAMEL = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][a-zA-Z0-9]*)+$")
_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake(key: str) -> str:
    """maxSize -> max_size, clusterIP -> cluster_ip, vpcSecurityGroupIds -> vpc_security_group_ids."""
    return _BOUNDARY.sub("_", key).lower() if _CAMEL.match(key) else key


def as_declared(value: Any) -> Any:
    """Inputs under the names the Python program declares them with (the wire format is camelCase)."""
    if isinstance(value, dict):
        return {snake(key): item if key in _MAPS else as_declared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_declared(item) for item in value]
    return value


def declared_path(path: str) -> str:
    """A property path from the engine (ingress[0].fromPort) under declared names (ingress[0].from_port)."""
    return ".".join(snake(name) + rest for name, rest in
                    (re.match(r"([^\[]*)(.*)", part).groups() for part in path.split(".")))  # type: ignore[union-attr]
