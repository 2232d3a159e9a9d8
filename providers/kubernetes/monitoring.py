"""Monitoring in a cluster: the generated rules and scrape targets as prometheus-operator objects, and the dashboard
as a ConfigMap for Grafana's dashboard sidecar. Nothing runs here: the cluster's own Prometheus (e.g. from the
kube-prometheus-stack chart) and Grafana pick these objects up.

Which objects a Prometheus reads is install-specific: kube-prometheus-stack's default selectors want its
`release: <helm release>` label, which llmctl cannot know. Every object here carries `app.kubernetes.io/part-of:
llmctl` instead; select it with the chart values
    prometheus.prometheusSpec.ruleSelector.matchLabels:           {app.kubernetes.io/part-of: llmctl}
    prometheus.prometheusSpec.serviceMonitorSelector.matchLabels: {app.kubernetes.io/part-of: llmctl}
(or set ruleSelectorNilUsesHelmValues and serviceMonitorSelectorNilUsesHelmValues to false, to read every one).
The dashboard ConfigMap carries the sidecar's default label, `grafana_dashboard: "1"`; the chart's sidecar reads only
its own namespace unless `grafana.sidecar.dashboards.searchNamespace` is ALL (or names this one).
"""
from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_kubernetes as k8s

from llmctl.config.schema import duration_seconds
from llmctl.desired import Desired
from llmctl.gateway.metrics import ENGINE_JOB, GATEWAY_JOB
from llmctl.monitor.dashboard import dashboard_text
from llmctl.monitor.promql import duration
from llmctl.monitor.rules import rule_groups
from providers.kubernetes import gateway

API_VERSION = "monitoring.coreos.com/v1"
PART_OF = {"app.kubernetes.io/part-of": "llmctl"}
DASHBOARD_LABEL = {"grafana_dashboard": "1"}  # the label the Grafana chart's dashboard sidecar looks for by default
# Services are selected by the label program.py and gateway.py give each its own name under, and scraped on the
# port both name `http`: the gateway serves /metrics there, and so do vLLM and TGI.
NAME_LABEL = "app.kubernetes.io/name"
PORT_NAME = "http"
METRICS_PATH = "/metrics"
RULES = "llmctl-rules"
DASHBOARD = "llmctl-dashboard"

# Object metadata from a name and labels, as the rest of the program writes it (namespace, project, environment).
Meta = Callable[[str, dict[str, str]], k8s.meta.v1.ObjectMetaArgs]


def declare(desired: Desired, engines: dict[str, str], meta: Meta, opts: pulumi.ResourceOptions) -> None:
    """The rules, a ServiceMonitor for the gateway's Service and one for each engine's that exports metrics
    (`engines`: model name -> its Service's name), and the dashboard, all owned by `monitoring.<environment>`."""
    owner = f"monitoring.{desired.environment}"
    labels = {"app.kubernetes.io/managed-by": "llmctl", **PART_OF}
    k8s.apiextensions.CustomResource(
        f"{owner}/rules", api_version=API_VERSION, kind="PrometheusRule", metadata=meta(RULES, labels),
        spec={"groups": [group.model_dump(mode="json", by_alias=True, exclude_none=True)
                         for group in rule_groups(desired)]},
        opts=opts)
    interval = duration(duration_seconds(desired.monitoring.prometheus.scrape_interval))
    _service_monitor(f"{owner}/scrape-gateway", meta(gateway.NAME, labels), gateway.NAME, interval,
                     {"job": GATEWAY_JOB}, opts)
    for model, service in engines.items():
        _service_monitor(f"{owner}/scrape-{model}", meta(service, labels), service, interval,
                         {"job": ENGINE_JOB, "model": model}, opts)
    if desired.monitoring.dashboards:
        k8s.core.v1.ConfigMap(
            f"{owner}/dashboard", metadata=meta(DASHBOARD, {**labels, **DASHBOARD_LABEL}),
            data={_dashboard_key(desired): dashboard_text(desired)}, opts=opts)


def _dashboard_key(desired: Desired) -> str:
    """The file the sidecar writes the dashboard to: one per project and environment, as one Grafana may read
    several clusters' or namespaces' ConfigMaps into the same folder."""
    return f"{desired.project}-{desired.environment}.json"


def _service_monitor(name: str, meta: k8s.meta.v1.ObjectMetaArgs, service: str, interval: str,
                     target_labels: dict[str, str], opts: pulumi.ResourceOptions) -> None:
    """A ServiceMonitor on the Service named `service`, its targets labelled with `target_labels`.

    The labels are set by relabelings, which the operator applies after its own (those set `job` from the Service's
    name, or from the Service label `jobLabel` names; generateServiceMonitorConfig in prometheus-operator's
    pkg/prometheus/promcfg.go): so `job` is the rules' job whatever the Service is called, and `model` is the
    config's model name even where the Service's name had to be made DNS-safe.
    """
    k8s.apiextensions.CustomResource(
        name, api_version=API_VERSION, kind="ServiceMonitor", metadata=meta,
        spec={
            "selector": {"matchLabels": {NAME_LABEL: service}},
            "endpoints": [{
                "port": PORT_NAME,
                "path": METRICS_PATH,
                "interval": interval,
                "relabelings": [{"action": "replace", "targetLabel": label, "replacement": value}
                                for label, value in target_labels.items()],
            }],
        },
        opts=opts)
