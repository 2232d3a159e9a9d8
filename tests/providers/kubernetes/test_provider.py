"""The kubernetes provider as a user meets it: offline resource plans, replace vs update, GitOps manifests that
pass the upstream schemas, and an apply that stops cleanly without the pulumi CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hub_server import TOKEN
from jsonschema import Draft7Validator

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.monitor.dashboard import dashboard
from llmctl.monitor.promql import le
from llmctl.monitor.rules import RuleGroup, rule_groups
from support import REPO, Run, edit, record_apply, without_pulumi_cli

EXAMPLE = REPO / "examples" / "kubernetes" / "llmops.yaml"
# The openAPIV3Schema of the prometheus-operator's CRDs (see its README): kubernetes-validate knows core kinds only.
CRDS = REPO / "tests" / "data" / "crds"
OPERATOR_API = "monitoring.coreos.com/v1"
RULE_ADDRESS = "kubernetes_monitoring_prometheus_rule.prod/rules"


@pytest.fixture
def example(tmp_path: Path, hub_llmctl: Run) -> tuple[Path, Run]:
    config = tmp_path / "llmops.yaml"
    shutil.copy(EXAMPLE, config)
    # Llama is gated: whoever has access locks it once (and commits llmops.lock); every plan after that,
    # like the ones in these tests, needs no credentials.
    assert hub_llmctl("lock", "-f", str(config), env={"HF_TOKEN": TOKEN}).returncode == 0

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return hub_llmctl(*args, env=without_pulumi_cli())

    return config, run


def test_plan_lists_every_kubernetes_resource_offline(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    result = run("plan", "-f", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    for address in ("kubernetes_core_namespace.cluster/namespace", "kubernetes_apps_deployment.llama-k8s/deployment",
                    "kubernetes_core_service.llama-k8s/service",
                    "kubernetes_autoscaling_horizontal_pod_autoscaler.llama-k8s/hpa",
                    "kubernetes_policy_pod_disruption_budget.llama-k8s/pdb",
                    "kubernetes_core_resource_quota.cluster/quota", "kubernetes_core_config_map.cluster/config",
                    RULE_ADDRESS, "kubernetes_monitoring_service_monitor.prod/scrape-gateway",
                    "kubernetes_monitoring_service_monitor.prod/scrape-llama-k8s",
                    "kubernetes_core_config_map.prod/dashboard"):
        assert f"+ {address}" in result.stdout
    assert TOKEN not in result.stdout


def test_replicas_update_in_place_and_a_namespace_change_replaces(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    record_apply(config)
    edit(config, "replicas: {min: 2, max: 4}", "replicas: {min: 2, max: 6}")
    scaled = json.loads(run("plan", "-f", str(config), "--format", "json").stdout)
    actions = {rc["address"]: rc["action"] for rc in scaled["resource_changes"]}
    assert actions["kubernetes_autoscaling_horizontal_pod_autoscaler.llama-k8s/hpa"] == "update"
    assert "replace" not in actions.values()

    edit(config, "namespace: llm", "namespace: llm-v2")
    moved = run("plan", "-f", str(config))
    assert "-/+ kubernetes_apps_deployment.llama-k8s/deployment  # metadata.namespace changed (forces replacement)" \
        in moved.stdout


def test_render_writes_manifests_that_pass_the_kubernetes_schemas(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    objects = _render(run, config, tmp_path / "manifests")
    assert set(objects) >= {"deployment-llama-k8s.yaml", "service-llama-k8s.yaml", "resourcequota-llmctl-gpu.yaml",
                            "prometheusrule-llmctl-rules.yaml", "servicemonitor-llmctl-gateway.yaml",
                            "servicemonitor-llama-k8s.yaml", "configmap-llmctl-dashboard.yaml"}
    for name, obj in objects.items():
        if obj["apiVersion"] == OPERATOR_API:
            assert _crd_errors(obj) == [], name
        else:
            kubernetes_validate.validate(obj, "1.30", strict=True)
    wrong = run("render", "-f", str(config), "--target", "clustr", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 1 and "did you mean 'cluster'" in wrong.stderr


def test_rendered_monitoring_is_what_the_config_generates(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    objects = _render(run, config, tmp_path / "manifests")
    desired = Desired.from_config(load(config))
    groups = objects["prometheusrule-llmctl-rules.yaml"]["spec"]["groups"]
    assert [RuleGroup.model_validate(group) for group in groups] == rule_groups(desired)
    # The CRD declares groups a list map keyed by name (x-kubernetes-list-map-keys), which jsonschema cannot check.
    assert len({group["name"] for group in groups}) == len(groups)
    data = objects["configmap-llmctl-dashboard.yaml"]["data"]
    assert json.loads(data["support-bot-prod.json"]) == dashboard(desired)


def test_a_broken_prometheus_rule_fails_the_crd_schema(example, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    rule = _render(run, config, tmp_path / "manifests")["prometheusrule-llmctl-rules.yaml"]
    assert _crd_errors(rule) == []
    first = rule["spec"]["groups"][0]
    first["rules"][0]["for"] = "5 minutes"  # not a Prometheus duration
    del first["rules"][1]["expr"]
    first["interval_seconds"] = 30  # no such field: the API server's strict field validation refuses it
    errors = _crd_errors(rule)
    assert any(e.startswith("spec.groups.0.rules.0.for: '5 minutes' does not match") for e in errors), errors
    assert "spec.groups.0.rules.1: 'expr' is a required property" in errors
    assert any(e.startswith("spec.groups.0: Additional properties") and "interval_seconds" in e for e in errors)


def test_an_slo_threshold_change_updates_the_prometheus_rule_in_place(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    edit(config, "    budget: team-monthly\n    traffic:", "    budget: team-monthly\n    slo: chat\n    traffic:")
    config.write_text(config.read_text() + "\nslos:\n  - name: chat\n    ttft_p95_ms: 1500\n")
    record_apply(config)
    edit(config, "ttft_p95_ms: 1500", "ttft_p95_ms: 2000")
    result = run("plan", "-f", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    changes = {rc["address"]: rc for rc in json.loads(result.stdout)["resource_changes"]}
    rule = changes[RULE_ADDRESS]
    assert rule["action"] == "update" and rule["owner"] == "monitoring.prod"
    assert rule["reason"] == "spec.groups changed"
    # The TTFT ratio now counts requests over the 2 s bucket boundary, not the 1.5 s one.
    before, after = (_exprs(rule[side]) for side in ("before", "after"))
    assert f'le="{le(1.5)}"' in before and f'le="{le(2.0)}"' not in before
    assert f'le="{le(2.0)}"' in after and f'le="{le(1.5)}"' not in after
    assert changes["kubernetes_core_config_map.prod/dashboard"]["action"] == "update"  # its threshold lines move
    assert "replace" not in {rc["action"] for rc in changes.values()}
    # The offline diff shows a changed list whole (llmctl/plan/diff.py): the rule groups, under their owner.
    assert f"~ {RULE_ADDRESS}  # spec.groups changed" in run("plan", "-f", str(config)).stdout


def test_apply_and_destroy_without_the_cli_stop_cleanly(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    applied = run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert applied.returncode == 1 and "the pulumi CLI is not installed" in applied.stderr
    assert not (config.parent / ".llmctl" / "state" / "support-bot" / "prod.json").exists()
    record_apply(config)
    destroyed = run("destroy", "-f", str(config), "--auto-approve")
    assert destroyed.returncode == 1 and "the pulumi CLI is not installed" in destroyed.stderr


def _render(run: Run, config: Path, directory: Path) -> dict[str, Any]:
    """`llmctl render` of the cluster target: each file's one object by file name."""
    result = run("render", "-f", str(config), "--target", "cluster", "--out", str(directory))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(directory.glob("*.yaml"))}


def _exprs(rule: dict[str, Any]) -> str:
    return "\n".join(item["expr"] for group in rule["spec"]["groups"] for item in group["rules"])


def _crd_errors(obj: dict[str, Any]) -> list[str]:
    """Where `obj` breaks its kind's CRD schema, as `path: message` lines."""
    schema = _strict(yaml.safe_load((CRDS / f"{obj['kind'].lower()}.v1.yaml").read_text()))
    return sorted(f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
                  for error in Draft7Validator(schema).iter_errors(obj))


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the API server applies it under strict field validation (kubectl's default): an object with
    declared properties refuses others, unless it preserves unknown fields. Plain JSON Schema would accept them."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict(sub) for sub in schema[key]]
    return schema
