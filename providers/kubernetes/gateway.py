"""The gateway in a cluster: one Deployment in front of the target's models, its spend ledger on a volume.

One replica with the Recreate strategy, because the spend ledger is SQLite on a ReadWriteOnce volume: a second
writer (or an old pod still running during a rolling update) would split it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from llmctl.gateway import build
from llmctl.resolve import Resolved
from providers.pulumi_support.images import GATEWAY_IMAGE

GATEWAY_PORT = 8080
DATA_DIR = "/var/lib/llmctl"
SPEC_DIR = "/etc/llmctl"
# A Secret the operator creates with one entry per key variable (and the hosted APIs' keys), e.g.
# kubectl create secret generic llmctl-gateway-keys --from-literal=QUICKSTART_API_KEY=...
KEYS_SECRET = "llmctl-gateway-keys"
NAME = "llmctl-gateway"
# On the pods and on every gateway object: the Service's is what its ServiceMonitor selects (monitoring.py).
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "llmctl"}


def declare(resolved: Resolved, target: str, namespace: str, upstreams: dict[str, build.Upstream],
            meta: k8s.meta.v1.ObjectMetaArgs, opts: pulumi.ResourceOptions) -> None:
    desired = resolved.desired
    spec = build.build_spec(resolved, upstreams, Path(DATA_DIR), keys_from_env=True)
    owner = f"gateway.{desired.environment}"
    config = k8s.core.v1.ConfigMap(f"{owner}/spec", metadata=meta, data={"spec.json": spec.model_dump_json(indent=2)},
                                   opts=opts)
    k8s.core.v1.PersistentVolumeClaim(
        f"{owner}/data", metadata=meta,
        spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteOnce"],
            resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": "1Gi"})),
        opts=opts)
    container = k8s.core.v1.ContainerArgs(
        name="gateway", image=GATEWAY_IMAGE,
        args=["python", "-m", "llmctl.gateway", "--spec", f"{SPEC_DIR}/spec.json", "--host", "0.0.0.0",
              "--port", str(GATEWAY_PORT)],
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=GATEWAY_PORT, protocol="TCP")],
        env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(name=KEYS_SECRET))],
        readiness_probe=k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path="/health", port="http"),
                                              period_seconds=5),
        resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "500m", "memory": "512Mi"}),
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="spec", mount_path=SPEC_DIR, read_only=True),
                       k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR)])
    k8s.apps.v1.Deployment(
        f"{owner}/deployment", metadata=meta,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1, strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": NAME}),
            template=k8s.core.v1.PodTemplateSpecArgs(
                # The spec's content in an annotation: a changed spec rolls the pod, as a new file must be read.
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=LABELS, annotations={
                    "llmctl.dev/spec-sha256": hashlib.sha256(spec.model_dump_json().encode()).hexdigest()}),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[container],
                    volumes=[k8s.core.v1.VolumeArgs(name="spec", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                 name=config.metadata.name)),
                             k8s.core.v1.VolumeArgs(name="data", persistent_volume_claim=(
                                 k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(claim_name=NAME)))]))),
        opts=opts)
    k8s.core.v1.Service(
        f"{owner}/service", metadata=meta,
        spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector={"app.kubernetes.io/name": NAME},
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=GATEWAY_PORT, target_port="http", protocol="TCP")]),
        opts=opts)
    pulumi.export(f"{owner}.endpoints", [f"http://{NAME}.{namespace}.svc.cluster.local:{GATEWAY_PORT}/v1"])
