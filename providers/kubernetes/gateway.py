"""The gateway in a cluster: one Deployment in front of the target's models.

Without `gateway.store`: one replica with the Recreate strategy, because the spend ledger is SQLite on a
ReadWriteOnce volume: a second writer (or an old pod still running during a rolling update) would split it.

With a store (PostgreSQL every replica shares): `gateway.replica_count` replicas (2 by default), rolled one at a
time with a surge pod (maxUnavailable 0, maxSurge 1) so a rollout never drops below the declared count, and a
PodDisruptionBudget that lets a node drain evict one pod at a time. Nothing of the ledger lives in the pod then, so
there is no volume claim: the pod's data directory (audit log, cache file, the spool of metering the store could
not take) is an emptyDir, which outlives container restarts but not the pod. The DSN comes from a Secret the
operator creates (STORE_SECRET); a DSN in a file (`store.file`, read on the operator's machine) or an RDS
instance (`store.rds`, aws only) cannot reach a cluster and is refused.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from llmctl.config.schema import GatewayStore
from llmctl.desired import Desired
from llmctl.gateway import build
from llmctl.resolve import Resolved
from providers.pulumi_support.images import GATEWAY_IMAGE

GATEWAY_PORT = 8080
DATA_DIR = "/var/lib/llmctl"
SPEC_DIR = "/etc/llmctl"
# A Secret the operator creates with one entry per key variable (and the hosted APIs' keys), e.g.
# kubectl create secret generic llmctl-gateway-keys --from-literal=QUICKSTART_API_KEY=...
KEYS_SECRET = "llmctl-gateway-keys"
# A Secret the operator creates with the store's DSN under the variable's name (`store_dsn_env`: the config's
# `store.env`, else LLMCTL_STORE_DSN), e.g.
# kubectl -n NAMESPACE create secret generic llmctl-gateway-store --from-literal=LLMCTL_STORE_DSN=postgresql://...
# Its own Secret, not an entry of KEYS_SECRET: whoever rotates the database's password need not hold the API keys.
STORE_SECRET = "llmctl-gateway-store"
NAME = "llmctl-gateway"
# On the pods and on every gateway object: the Service's is what its ServiceMonitor selects (monitoring.py).
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "llmctl"}
SELECTOR = {"app.kubernetes.io/name": NAME}


def store_problem(desired: Desired, target: str) -> str | None:
    """Why the declared store cannot serve a gateway in this cluster, or None when it can (or none is declared)."""
    store = build.settings(desired).store
    if store is None or store.env is not None:
        return None
    if store.rds is not None:
        return (f"target '{target}': gateway.store.rds creates an RDS instance on aws targets only; on kubernetes "
                f"give the DSN of a PostgreSQL the cluster reaches as `store: {{env: {build.STORE_DSN_ENV}}}` and "
                f"create the Secret: kubectl -n {desired.targets[target].namespace} create secret generic "
                f"{STORE_SECRET} --from-literal={build.STORE_DSN_ENV}=postgresql://...")
    return (f"target '{target}': gateway.store.file is read on this machine, and the gateway pods cannot read it: "
            f"write `store: {{env: {build.STORE_DSN_ENV}}}` and put the DSN in a Secret: kubectl -n "
            f"{desired.targets[target].namespace} create secret generic {STORE_SECRET} "
            f"--from-literal={build.STORE_DSN_ENV}=\"$(cat {store.file})\"")


def declare(resolved: Resolved, target: str, namespace: str, upstreams: dict[str, build.Upstream],
            meta: k8s.meta.v1.ObjectMetaArgs, opts: pulumi.ResourceOptions) -> None:
    desired = resolved.desired
    settings = build.settings(desired)
    store = settings.store
    spec = build.build_spec(resolved, upstreams, Path(DATA_DIR), keys_from_env=True, dsn_from_env=True)
    owner = f"gateway.{desired.environment}"
    config = k8s.core.v1.ConfigMap(f"{owner}/spec", metadata=meta, data={"spec.json": spec.model_dump_json(indent=2)},
                                   opts=opts)
    if store is None:
        k8s.core.v1.PersistentVolumeClaim(
            f"{owner}/data", metadata=meta,
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": "1Gi"})),
            opts=opts)
        data = k8s.core.v1.VolumeArgs(name="data", persistent_volume_claim=(
            k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(claim_name=NAME)))
        replicas = 1
        strategy = k8s.apps.v1.DeploymentStrategyArgs(type="Recreate")
    else:
        data = k8s.core.v1.VolumeArgs(name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs())
        replicas = settings.replica_count
        # A new pod is ready before an old one goes: the declared count keeps serving through a rollout.
        strategy = k8s.apps.v1.DeploymentStrategyArgs(
            type="RollingUpdate",
            rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1))
    container = k8s.core.v1.ContainerArgs(
        name="gateway", image=GATEWAY_IMAGE,
        args=["python", "-m", "llmctl.gateway", "--spec", f"{SPEC_DIR}/spec.json", "--host", "0.0.0.0",
              "--port", str(GATEWAY_PORT)],
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=GATEWAY_PORT, protocol="TCP")],
        env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(name=KEYS_SECRET))],
        env=_store_env(store),
        readiness_probe=k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path="/health", port="http"),
                                              period_seconds=5),
        resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "500m", "memory": "512Mi"}),
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="spec", mount_path=SPEC_DIR, read_only=True),
                       k8s.core.v1.VolumeMountArgs(name="data", mount_path=DATA_DIR)])
    k8s.apps.v1.Deployment(
        f"{owner}/deployment", metadata=meta,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=replicas, strategy=strategy,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SELECTOR),
            template=k8s.core.v1.PodTemplateSpecArgs(
                # The spec's content in an annotation: a changed spec rolls the pod, as a new file must be read.
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=LABELS, annotations={
                    "llmctl.dev/spec-sha256": hashlib.sha256(spec.model_dump_json().encode()).hexdigest()}),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[container],
                    volumes=[k8s.core.v1.VolumeArgs(name="spec", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                 name=config.metadata.name)), data]))),
        opts=opts)
    if store is not None:
        # maxUnavailable 1 rather than minAvailable replicas-1: the same for the declared count, but counted
        # against the Deployment's scale at the time, so a `kubectl scale` down to one pod cannot leave a budget
        # that blocks every node drain; and with `replicas: 1` it still lets a drain proceed.
        k8s.policy.v1.PodDisruptionBudget(
            f"{owner}/pdb", metadata=meta,
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=SELECTOR), max_unavailable=1),
            opts=opts)
    k8s.core.v1.Service(
        f"{owner}/service", metadata=meta,
        spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector=SELECTOR,
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=GATEWAY_PORT, target_port="http", protocol="TCP")]),
        opts=opts)
    pulumi.export(f"{owner}.endpoints", [f"http://{NAME}.{namespace}.svc.cluster.local:{GATEWAY_PORT}/v1"])


def _store_env(store: GatewayStore | None) -> list[k8s.core.v1.EnvVarArgs] | None:
    """The DSN as a reference to the operator's Secret: the manifests, plans and state never hold it. Not optional,
    so a pod without the Secret stays unstarted (CreateContainerConfigError) rather than serving without a store."""
    if store is None:
        return None
    variable = build.store_dsn_env(store)
    return [k8s.core.v1.EnvVarArgs(name=variable, value_from=k8s.core.v1.EnvVarSourceArgs(
        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=STORE_SECRET, key=variable)))]
