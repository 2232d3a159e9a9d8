"""A kubernetes gateway on a shared store (gateway.store): replicas rolled one at a time under a disruption budget,
the DSN only as a reference to the operator's Secret, and the store sources a cluster cannot use refused."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hub_server import TOKEN

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from providers.kubernetes import gateway, monitoring
from providers.kubernetes.program import program
from providers.pulumi_support.capture import Captured, capture
from support import REPO, Run, context, without_pulumi_cli

EXAMPLE = REPO / "examples" / "kubernetes" / "llmops.yaml"
# What an operator would put in the Secret: it is in the environment of the render, and must reach no file.
DSN = "postgresql://llmctl:dsn-password-0123@db.internal:5432/llmctl"
SECRET_TEXT = "dsn-password-0123"


@pytest.fixture
def rendered(tmp_path: Path, hub_llmctl: Run) -> dict[str, str]:
    """`llmctl render` of the example's cluster target, as a user runs it: file name -> text."""
    config = tmp_path / "llmops.yaml"
    shutil.copy(EXAMPLE, config)
    assert hub_llmctl("lock", "-f", str(config), env={"HF_TOKEN": TOKEN}).returncode == 0
    out = tmp_path / "manifests"
    result: subprocess.CompletedProcess[str] = hub_llmctl(
        "render", "-f", str(config), "--target", "cluster", "--out", str(out),
        env={**without_pulumi_cli(), "LLMCTL_STORE_DSN": DSN})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert SECRET_TEXT not in result.stdout
    return {path.name: path.read_text() for path in sorted(out.glob("*.yaml"))}


def test_the_rendered_gateway_runs_two_replicas_on_the_store(rendered: dict[str, str]) -> None:
    objects = {name: yaml.safe_load(text) for name, text in rendered.items()}
    for name, obj in objects.items():
        if obj["apiVersion"] != monitoring.API_VERSION:  # the operator's kinds: test_provider.py checks them
            kubernetes_validate.validate(obj, desired_version="1.30", strict=True)
    deployment = objects["deployment-llmctl-gateway.yaml"]["spec"]
    assert deployment["replicas"] == 2  # the example declares a store and no count: the default
    assert deployment["strategy"] == {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["template"]
    assert deployment["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    pdb = objects["poddisruptionbudget-llmctl-gateway.yaml"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"] == deployment["selector"]  # the same pods the Deployment runs
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    # ...and not the model's pods, whose own budget covers them
    model_labels = objects["deployment-llama-k8s.yaml"]["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= model_labels.items()

    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["env"] == [{"name": "LLMCTL_STORE_DSN", "valueFrom": {"secretKeyRef": {
        "name": gateway.STORE_SECRET, "key": "LLMCTL_STORE_DSN"}}}]
    assert container["envFrom"] == [{"secretRef": {"name": gateway.KEYS_SECRET}}]

    # No claim: a ReadWriteOnce volume would pin both replicas to one node. The data directory is the pod's own.
    assert not [name for name in objects if name.startswith("persistentvolumeclaim-")]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    spec = json.loads(objects["configmap-llmctl-gateway.yaml"]["data"]["spec.json"])
    assert spec["store"] == {"kind": "postgres", "dsn_env": "LLMCTL_STORE_DSN", "dsn_file": None, "pool_size": 4,
                             "failure": "closed"}
    assert spec["spool_dir"] == f"{gateway.DATA_DIR}/spool" and mounts["data"] == gateway.DATA_DIR


def test_no_dsn_text_is_rendered(rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        assert SECRET_TEXT not in text and "postgresql://" not in text, name
    # no Secret object either: the operator creates it, so its value is never in a manifest or in state
    assert not [name for name in rendered if name.startswith("secret-")]


# --- the program under mocks -----------------------------------------------------------------------------------


def _captured(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> dict[str, Captured]:
    data = yaml.safe_load(EXAMPLE.read_text())
    edit(data)
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    desired = Desired.from_config(load(path))
    return {r.name: r for r in capture(program(context(desired), "cluster"), desired.project, desired.environment)}


def _gateway(found: dict[str, Captured]) -> dict[str, Any]:
    return found["gateway.prod/deployment"].inputs["spec"]


def test_declared_replicas_and_variable_reach_the_deployment(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["gateway"] = {"store": {"env": "PG_DSN", "pool_size": 8}, "replicas": 3, "store_failure": "open"}

    found = _captured(tmp_path, edit)
    deployment = _gateway(found)
    assert deployment["replicas"] == 3
    (container,) = deployment["template"]["spec"]["containers"]
    # the config's variable names both the pod's variable and the Secret's key
    assert container["env"] == [{"name": "PG_DSN", "valueFrom": {"secretKeyRef": {
        "name": gateway.STORE_SECRET, "key": "PG_DSN"}}}]
    spec = json.loads(found["gateway.prod/spec"].inputs["data"]["spec.json"])
    assert spec["store"]["dsn_env"] == "PG_DSN" and spec["store"]["pool_size"] == 8
    assert spec["store"]["failure"] == "open"
    assert found["gateway.prod/pdb"].inputs["spec"]["maxUnavailable"] == 1


def test_one_replica_on_a_store_still_rolls_without_downtime(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["gateway"] = {"store": {"env": "LLMCTL_STORE_DSN"}, "replicas": 1}

    deployment = _gateway(_captured(tmp_path, edit))
    # the surge pod shares the store with the old one, which a SQLite ledger on a volume could not
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "RollingUpdate"


def test_without_a_store_the_gateway_stays_one_recreated_pod_on_a_claim(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        del data["gateway"]

    found = _captured(tmp_path, edit)
    deployment = _gateway(found)
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    assert "gateway.prod/pdb" not in found and "gateway.prod/data" in found
    spec = json.loads(found["gateway.prod/spec"].inputs["data"]["spec.json"])
    assert spec["store"] is None and spec["spool_dir"] is None


@pytest.mark.parametrize(("store", "words"), [
    ({"file": "secrets/dsn"}, ["gateway.store.file is read on this machine", "store: {env: LLMCTL_STORE_DSN}",
                               "kubectl -n llm create secret generic llmctl-gateway-store", "$(cat secrets/dsn)"]),
    ({"rds": {"password_env": "DB_PASSWORD"}}, ["gateway.store.rds creates an RDS instance on aws targets only",
                                                "kubectl -n llm create secret generic llmctl-gateway-store"]),
])
def test_a_store_the_pods_cannot_reach_is_refused(tmp_path: Path, store: dict[str, Any], words: list[str]) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["gateway"] = {"store": store}

    with pytest.raises(LlmctlError) as refused:
        _captured(tmp_path, edit)
    message = str(refused.value)
    assert message.startswith("target 'cluster': ")
    for part in words:
        assert part in message, part
