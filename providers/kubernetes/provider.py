"""The kubernetes provider: Deployments and their companions on an existing cluster, through program.py."""
from __future__ import annotations

from pathlib import Path

from llmctl.resolve import Resolved
from providers.kubernetes.manifests import write_manifests
from providers.kubernetes.program import program
from providers.pulumi_support.capture import capture
from providers.pulumi_support.provider import PulumiProvider, stack_name

_IDENTITY = frozenset({"metadata.name", "metadata.namespace"})


class KubernetesProvider(PulumiProvider):
    name = "kubernetes"
    program = staticmethod(program)
    serving_type = "kubernetes:core/v1:Service"
    # Fields the API server refuses to change (a Deployment's selector), and identity: a new object replaces the old.
    replace_on = {
        "kubernetes:apps/v1:Deployment": _IDENTITY | {"spec.selector"},
        "kubernetes:core/v1:Service": _IDENTITY | {"spec.cluster_ip", "spec.type"},
        "kubernetes:core/v1:Namespace": _IDENTITY,
        "kubernetes:core/v1:ConfigMap": _IDENTITY,
        "kubernetes:core/v1:ResourceQuota": _IDENTITY,
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": _IDENTITY,
        "kubernetes:policy/v1:PodDisruptionBudget": _IDENTITY | {"spec.selector"},
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule": _IDENTITY,
        "kubernetes:monitoring.coreos.com/v1:ServiceMonitor": _IDENTITY,
    }

    def render(self, resolved: Resolved, target: str, directory: Path) -> list[Path]:
        """The manifests the program declares, as YAML files for GitOps (from the same run under mocks)."""
        desired = resolved.desired
        captured = capture(program(resolved, target), project=desired.project, stack=stack_name(desired, target))
        return write_manifests(captured, directory)
