"""The kubernetes provider as a user meets it: offline resource plans, replace vs update, GitOps manifests that
pass the upstream schemas, and an apply that stops cleanly without the pulumi CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hub_server import TOKEN

from support import REPO, Run, edit, record_apply, without_pulumi_cli

EXAMPLE = REPO / "examples" / "kubernetes" / "llmops.yaml"


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
                    "kubernetes_core_resource_quota.cluster/quota", "kubernetes_core_config_map.cluster/config"):
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
    result = run("render", "-f", str(config), "--target", "cluster", "--out", str(tmp_path / "manifests"))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    assert {f.name for f in files} >= {"deployment-llama-k8s.yaml", "service-llama-k8s.yaml",
                                       "resourcequota-llmctl-gpu.yaml"}
    for file in files:
        kubernetes_validate.validate(yaml.safe_load(file.read_text()), "1.30", strict=True)
    wrong = run("render", "-f", str(config), "--target", "clustr", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 1 and "did you mean 'cluster'" in wrong.stderr


def test_apply_and_destroy_without_the_cli_stop_cleanly(example) -> None:  # type: ignore[no-untyped-def]
    config, run = example
    applied = run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert applied.returncode == 1 and "the pulumi CLI is not installed" in applied.stderr
    assert not (config.parent / ".llmctl" / "state" / "support-bot" / "prod.json").exists()
    record_apply(config)
    destroyed = run("destroy", "-f", str(config), "--auto-approve")
    assert destroyed.returncode == 1 and "the pulumi CLI is not installed" in destroyed.stderr
