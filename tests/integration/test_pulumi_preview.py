"""Plans through a real `pulumi preview` (the Automation API driving the CLI), when this machine can run one.

They need the pulumi CLI and credentials for the cloud: AWS credentials for the aws example, a reachable cluster in
the kubeconfig for the kubernetes one. Each is skipped, with the reason, where those are missing. The same plans
made offline under mocks are tested in tests/providers/{aws,kubernetes}; these check that both roads name the same
resources and that the CLI road is not labelled offline.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import REPO, Run, without_pulumi_cli

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("pulumi") is None,
                                 reason="the pulumi CLI is not installed (https://www.pulumi.com/docs/install/)")]


def _aws_credentials() -> bool:
    return bool(os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
                or (Path.home() / ".aws" / "credentials").exists())


def _cluster_reachable() -> bool:
    kubectl = shutil.which("kubectl")
    return kubectl is not None and subprocess.run([kubectl, "version", "--request-timeout=5s"],
                                                  capture_output=True).returncode == 0


@pytest.mark.parametrize("example, ready, why", [
    ("aws-gpu", _aws_credentials, "no AWS credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE or ~/.aws/credentials)"),
    ("kubernetes", _cluster_reachable, "no reachable Kubernetes cluster (kubectl version fails)"),
])
def test_a_real_preview_names_the_same_resources_as_the_offline_plan(
        example: str, ready, why: str, hub_llmctl: Run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not ready():
        pytest.skip(why)
    config = tmp_path / "llmops.yaml"
    shutil.copy(REPO / "examples" / example / "llmops.yaml", config)
    env = {"HF_TOKEN": os.environ.get("HF_TOKEN", "hf_test_token"),
           "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", "llmctl-test")}
    assert hub_llmctl("lock", "-f", str(config), env=env).returncode == 0

    previewed = hub_llmctl("plan", "-f", str(config), "--format", "json", env=env)
    assert previewed.returncode == 0, previewed.stderr
    plan = json.loads(previewed.stdout)
    assert not [c for c in plan["checks"] if "planned offline" in c["message"]], plan["checks"]

    offline = hub_llmctl("plan", "-f", str(config), "--format", "json", env={**env, **without_pulumi_cli()})
    expected = {rc["address"] for rc in json.loads(offline.stdout)["resource_changes"]}
    assert {rc["address"] for rc in plan["resource_changes"] if rc["action"] == "create"} == expected
