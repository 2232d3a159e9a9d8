"""The Kubernetes Pulumi program: the resources one `kubernetes` target declares for its models.

Every resource's logical name starts with the address of the llmctl object that owns it and a slash
(`model.llama-k8s/deployment`, `target.cluster/quota`), so a plan can show each resource under its owner.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from llmctl.config.schema import Budget, KubernetesTarget, Model, ReplicaRange
from llmctl.cost.model import HOURS, MONTH_HOURS
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.gateway import build
from llmctl.monitor.engines import saturation
from llmctl.resolve import Resolved
from providers.kubernetes import gateway, monitoring
from providers.pulumi_support.images import ENGINE_IMAGES

PORT = 8000
CACHE_DIR = "/root/.cache/huggingface"
HF_SECRET = "hf-token"  # a Secret the cluster operator creates: kubectl create secret generic hf-token --from-literal=token=hf_...
HF_SECRET_KEY = "token"
# A budget's limit per month, from its period's share of the 730-hour month the cost estimate uses.
MONTHLY = {period: MONTH_HOURS / hours for period, hours in HOURS.items()}

IMAGES = ENGINE_IMAGES
READY_PATHS = {"vllm": "/v1/models", "tgi": "/health"}
# The per-pod gauge of requests in flight, which an HPA scales on through a custom-metrics adapter.
CONCURRENCY_METRICS = {"vllm": "vllm:num_requests_running", "tgi": "tgi_batch_current_size"}
CPU_UTILISATION = 80


def program(resolved: Resolved, target: str) -> Callable[[], None]:
    """A Pulumi program declaring `target`'s namespace, quota, config and each of its models' workloads."""
    desired = resolved.desired
    spec = desired.targets[target]
    if not isinstance(spec, KubernetesTarget):
        raise ValueError(f"target '{target}' is not a kubernetes target")
    models = desired.models_on(target)
    for model in models:
        if model.engine not in IMAGES:
            raise ValueError(f"model '{model.name}': engine '{model.engine}' cannot run on kubernetes target "
                             f"'{target}': use vllm or tgi")
        if model.parsed_source.scheme != "hf":
            raise ValueError(f"model '{model.name}': a kubernetes target pulls weights from the Hugging Face Hub: "
                             f"use an hf:// source")
    problem = gateway.store_problem(desired, target) if models else None  # no models: no gateway here
    if problem:
        # LlmctlError, not ValueError: `llmctl render` runs this program without the plan's ValueError wrapping.
        raise LlmctlError(problem)

    def run() -> None:
        namespace = spec.namespace
        provider = k8s.Provider(f"target.{target}/provider", context=spec.context, namespace=namespace)
        ns = k8s.core.v1.Namespace(
            f"target.{target}/namespace",
            metadata=_meta(namespace, desired, None),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        opts = pulumi.ResourceOptions(provider=provider, depends_on=[ns])
        k8s.core.v1.ConfigMap(
            f"target.{target}/config",
            metadata=_meta("llmctl-config", desired, namespace),
            data={
                "prompts.json": _json({name: desired.prompts[name] for name in sorted(desired.prompts)}),
                "guardrails.json": _json({name: desired.guardrails[name] for name in sorted(desired.guardrails)}),
            },
            opts=opts,
        )
        k8s.core.v1.ResourceQuota(
            f"target.{target}/quota",
            metadata=_meta("llmctl-gpu", desired, namespace),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(
                hard={"requests.nvidia.com/gpu": str(gpu_quota(desired, target))}),
            opts=opts,
        )
        for model in models:
            _model(desired, model, namespace, resolved.revision(model), opts)
        if models:
            upstreams = {m.name: build.Upstream(urls=[service_url(m, namespace)], served_name=m.name) for m in models}
            gateway.declare(resolved, target, namespace, upstreams,
                            _meta(gateway.NAME, desired, namespace, gateway.LABELS), opts)
            # Beside the gateway whose series the rules read; engines without metrics get no scrape target.
            engines = {m.name: k8s_name(m.name) for m in models if saturation(m.engine) is not None}
            monitoring.declare(desired, engines, lambda name, labels: _meta(name, desired, namespace, labels), opts)

    return run


def gpu_quota(desired: Desired, target: str) -> int:
    """The GPUs the namespace may request: every model at its max replicas, capped by what its budgets pay for."""
    models = desired.models_on(target)
    total = sum(replica_range(m)[1] * gpu_count(m) for m in models)
    rate = desired.targets[target].gpu_hour_usd
    if rate:
        for budget in _budgets_of(desired, models):
            monthly = budget.limit_usd * MONTHLY[budget.period]
            total = min(total, math.floor(monthly / (rate * MONTH_HOURS)))
    return total


def replica_range(model: Model) -> tuple[int, int]:
    replicas = model.replicas
    if isinstance(replicas, ReplicaRange):
        return replicas.min, replicas.max
    return replicas, replicas


def gpu_count(model: Model) -> int:
    return model.gpu.count if model.gpu else 0


def k8s_name(name: str) -> str:
    """A DNS-1123 label from an llmctl name (which may hold '.', '_' and capitals)."""
    return re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63] or "model"


def service_url(model: Model, namespace: str) -> str:
    return f"http://{k8s_name(model.name)}.{namespace}.svc.cluster.local:{PORT}/v1"


def engine_args(model: Model, sha: str) -> list[str]:
    source = model.parsed_source
    served = model.name
    if model.engine == "vllm":
        args = ["--model", source.location, "--revision", sha, "--served-model-name", served,
                "--host", "0.0.0.0", "--port", str(PORT)]
        if model.context_length:
            args += ["--max-model-len", str(model.context_length)]
        if gpu_count(model) > 1:
            args += ["--tensor-parallel-size", str(gpu_count(model))]
    else:  # tgi
        args = ["--model-id", source.location, "--revision", sha, "--hostname", "0.0.0.0", "--port", str(PORT)]
        if model.context_length:
            args += ["--max-input-length", str(model.context_length - 1),
                     "--max-total-tokens", str(model.context_length)]
        if gpu_count(model) > 1:
            args += ["--num-shard", str(gpu_count(model))]
    for key, value in model.engine_args.items():
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [] if value is False else [flag, str(value)]
    return args


# --- per model -----------------------------------------------------------------------------------------------------


def _model(desired: Desired, model: Model, namespace: str, sha: str, opts: pulumi.ResourceOptions) -> None:
    name = k8s_name(model.name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "llmctl"}
    selector = {"app.kubernetes.io/name": name}
    low, high = replica_range(model)
    gpus = gpu_count(model)
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    requests = {"cpu": "2", **limits}
    env = [
        k8s.core.v1.EnvVarArgs(name="HF_HOME", value=CACHE_DIR),
        *[
            k8s.core.v1.EnvVarArgs(
                name=var,
                value_from=k8s.core.v1.EnvVarSourceArgs(
                    secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=HF_SECRET, key=HF_SECRET_KEY,
                                                                      optional=True)),
            )
            for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
        ],
    ]
    container = k8s.core.v1.ContainerArgs(
        name=model.engine,
        image=IMAGES[model.engine],
        args=engine_args(model, sha),
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT, protocol="TCP")],
        env=env,
        resources=k8s.core.v1.ResourceRequirementsArgs(limits=limits or None, requests=requests),
        readiness_probe=k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=READY_PATHS[model.engine], port="http"),
            initial_delay_seconds=30, period_seconds=10, failure_threshold=60,
        ),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="model-cache", mount_path=CACHE_DIR),
            k8s.core.v1.VolumeMountArgs(name="dshm", mount_path="/dev/shm"),
        ],
    )
    meta = _meta(name, desired, namespace, labels)
    k8s.apps.v1.Deployment(
        f"model.{model.name}/deployment",
        metadata=meta,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=low,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=k8s.core.v1.PodSpecArgs(
                    containers=[container],
                    volumes=[
                        k8s.core.v1.VolumeArgs(name="model-cache", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                        k8s.core.v1.VolumeArgs(name="dshm",
                                               empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory")),
                    ],
                ),
            ),
        ),
        opts=opts,
    )
    k8s.core.v1.Service(
        f"model.{model.name}/service",
        metadata=meta,
        spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP",
            selector=selector,
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=PORT, target_port="http", protocol="TCP")],
        ),
        opts=opts,
    )
    # In-cluster address; llmctl records it in state as the model's endpoint.
    pulumi.export(f"model.{model.name}.endpoints", [service_url(model, namespace)])
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        f"model.{model.name}/hpa",
        metadata=meta,
        spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=name),
            min_replicas=low,
            max_replicas=high,
            metrics=[_metric(model)],
        ),
        opts=opts,
    )
    disruption = {"min_available": 1} if low >= 2 else {"max_unavailable": 1}
    k8s.policy.v1.PodDisruptionBudget(
        f"model.{model.name}/pdb",
        metadata=meta,
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector), **disruption),
        opts=opts,
    )


def _metric(model: Model) -> k8s.autoscaling.v2.MetricSpecArgs:
    if model.autoscale is not None and model.autoscale.metric == "concurrency":
        return k8s.autoscaling.v2.MetricSpecArgs(
            type="Pods",
            pods=k8s.autoscaling.v2.PodsMetricSourceArgs(
                metric=k8s.autoscaling.v2.MetricIdentifierArgs(name=CONCURRENCY_METRICS[model.engine]),
                target=k8s.autoscaling.v2.MetricTargetArgs(type="AverageValue",
                                                           average_value=_quantity(model.autoscale.target)),
            ),
        )
    return k8s.autoscaling.v2.MetricSpecArgs(
        type="Resource",
        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
            name="cpu",
            target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=CPU_UTILISATION),
        ),
    )


# --- helpers -------------------------------------------------------------------------------------------------------


def _budgets_of(desired: Desired, models: list[Model]) -> list[Budget]:
    names = {name for m in models for name in desired.budgets_of(m.name)}
    return [budget for name, budget in desired.budgets.items() if name in names]


def _meta(name: str, desired: Desired, namespace: str | None,
          labels: dict[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
    return k8s.meta.v1.ObjectMetaArgs(
        name=name,
        namespace=namespace,
        labels={**(labels or {"app.kubernetes.io/managed-by": "llmctl"}),
                "llmctl.dev/project": k8s_name(desired.project),
                "llmctl.dev/environment": k8s_name(desired.environment)},
    )


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{int(round(value * 1000))}m"


def _json(entries: dict[str, Any]) -> str:
    return json.dumps({name: entry.model_dump(mode="json", exclude_none=True) for name, entry in entries.items()},
                      indent=2, sort_keys=True) + "\n"
