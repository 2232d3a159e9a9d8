"""Apply's promises, through the CLI a user runs: a saved plan deploys exactly the lock entries it was reviewed with
(or is refused), and everything apply can know will fail is refused before anything changes."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import psutil
import pytest

from hub_server import HubServer
from llmctl.lock import read_lock
from llmctl.plan.model import Plan
from llmctl.resolve import resolve_saved_plan
from providers.kubernetes.program import program
from providers.pulumi_support.capture import capture
from support import REPO, Run, edit


def _state(config: Path, project: str, environment: str) -> Path:
    return config.parent / ".llmctl" / "state" / project / f"{environment}.json"


def _logs(config: Path) -> Path:
    """Where every process apply starts (model server or gateway) writes its log: none exists until one starts."""
    return config.parent / ".llmctl" / "run"


# --- every refusal before any change ---------------------------------------------------------------------------


def test_apply_without_the_key_variable_changes_nothing_and_names_it(llmctl: Run, quickstart: Path) -> None:
    result = llmctl("apply", "-f", str(quickstart), "--auto-approve", env={"QUICKSTART_API_KEY": ""})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "QUICKSTART_API_KEY" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not _state(quickstart, "quickstart", "dev").exists()  # no state: not even "apply in progress"
    assert not _logs(quickstart).exists()


def test_a_saved_plan_whose_model_file_changed_is_refused_before_any_change(llmctl: Run, tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF-looking bytes the plan pins\n" * 4)
    config = tmp_path / "llmops.yaml"
    config.write_text("version: 1\nproject: pins\nmodels:\n  - name: m\n    source: tiny.gguf\n"
                      "    engine: llama-cpp\n")
    saved = tmp_path / "saved.plan"
    assert llmctl("plan", "-f", str(config), "--out", str(saved)).returncode == 0
    pinned = read_lock(tmp_path / "llmops.lock").models["m"].file_sha256  # type: ignore[union-attr]

    # Same size, other bytes: the lock still reads as current, but the file is not the one reviewed.
    model.write_bytes(b"GGUF-looking bytes the plan PINS\n" * 4)
    refused = llmctl("apply", str(saved))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "nothing was changed" in refused.stderr and "is not the file the plan pinned" in refused.stderr
    assert pinned[:12] in refused.stderr  # type: ignore[index]
    assert not _state(config, "pins", "default").exists()
    assert not _logs(config).exists()


# --- saved plans pin the lock they were made with ---------------------------------------------------------------


def test_a_saved_plan_is_refused_once_llmops_lock_says_otherwise(llmctl: Run, quickstart: Path) -> None:
    saved = quickstart.parent / "saved.plan"
    assert llmctl("plan", "-f", str(quickstart), "--out", str(saved)).returncode == 0
    plan = Plan.model_validate_json(saved.read_text())
    assert plan.lock is not None and plan.lock == read_lock(quickstart.parent / "llmops.lock")
    assert plan.lock.models["assistant"].file_sha256 and plan.lock.prompts["support-answer"]

    # A reviewer's colleague edits the prompt and plans again: the lock moves on; the saved plan did not see it.
    edit(quickstart, "Answer the customer question", "Answer the customer's question")
    assert llmctl("plan", "-f", str(quickstart)).returncode == 0
    refused = llmctl("apply", str(saved))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "llmops.lock changed since this plan was made" in refused.stderr
    assert "prompt support-answer changed" in refused.stderr and "run `llmctl plan` again" in refused.stderr
    assert not _state(quickstart, "quickstart", "dev").exists()


@pytest.fixture
def kubernetes_example(hub: HubServer, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "llmops.yaml"
    shutil.copy(REPO / "examples" / "kubernetes" / "llmops.yaml", config)
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_ETAG_TIMEOUT": "120",
           "HF_HUB_DOWNLOAD_TIMEOUT": "120", "HF_TOKEN": "hf_test_token"}  # its model is gated
    return config, env


def test_a_saved_plan_deploys_the_shas_it_pinned_and_refuses_a_moved_pin(
        llmctl: Run, kubernetes_example: tuple[Path, dict[str, str]]) -> None:
    config, env = kubernetes_example
    saved = config.parent / "saved.plan"
    assert llmctl("plan", "-f", str(config), "--out", str(saved), env=env).returncode == 0
    plan = Plan.model_validate_json(saved.read_text())
    [(name, entry)] = plan.lock.models.items()  # type: ignore[union-attr]
    assert entry.sha and len(entry.sha) == 40

    # Applying it unchanged: the program runs with exactly the plan's pins.
    resolved = resolve_saved_plan(plan)
    assert resolved.lock == plan.lock
    [deployment] = [c for c in capture(program(resolved, "cluster"), plan.project, plan.environment)
                    if c.name == f"model.{name}/deployment"]
    args = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--revision") + 1] == entry.sha

    # `llmctl lock --update` after the branch moved upstream rewrites the pin: the reviewed plan is refused.
    lock_file = config.parent / "llmops.lock"
    data = json.loads(lock_file.read_text())
    data["models"][name]["sha"] = "f" * 40
    lock_file.write_text(json.dumps(data, indent=2))
    refused = llmctl("apply", str(saved), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"model {name}: {entry.source}@{entry.sha[:12]} -> {entry.source}@ffffffffffff" in refused.stderr


@pytest.mark.integration  # starts SmolLM2 on llama.cpp
def test_a_saved_plan_applied_unchanged_serves_the_pinned_file(llmctl: Run, quickstart: Path) -> None:
    saved = quickstart.parent / "saved.plan"
    assert llmctl("plan", "-f", str(quickstart), "--out", str(saved)).returncode == 0
    plan = Plan.model_validate_json(saved.read_text())
    pinned = plan.lock.models["assistant"].file_sha256  # type: ignore[union-attr]
    try:
        applied = llmctl("apply", str(saved), "--skip-verify")
        assert applied.returncode == 0, applied.stderr
        state = json.loads(_state(quickstart, "quickstart", "dev").read_text())
        assert state["lock"] == plan.lock.model_dump(mode="json")  # type: ignore[union-attr]
        assert state["status"] == "applied"
        replicas = [r for r in state["resources"] if r["type"] == "local_process"]
        assert replicas and all(r["spec"]["sha256"] == pinned for r in replicas)
        for replica in replicas:
            cmdline = psutil.Process(replica["attrs"]["pid"]).cmdline()
            assert cmdline[cmdline.index("--model") + 1] == replica["spec"]["model"]
    finally:
        llmctl("destroy", "-f", str(quickstart), "--auto-approve")


def test_destroy_needs_no_gateway_key(llmctl: Run, quickstart: Path) -> None:
    """Stopping what runs needs none of what starting it did: a destroy without the key variable still destroys."""
    from llmctl.config.load import load
    from llmctl.providers import get_provider
    from llmctl.resolve import resolve
    from llmctl.state import State

    exited = psutil.Popen([sys.executable, "-c", "pass"])
    gone = (exited.pid, exited.create_time())
    exited.wait()
    resolved = resolve(load(quickstart))
    resources = [r.model_copy(update={"attrs": {"pid": gone[0], "create_time": gone[1]}})
                 for r in get_provider("local").resources(resolved, "laptop")]
    backend = resolved.workspace.backend()
    backend.write(State(project="quickstart", environment="dev", serial=1, lineage="l", status="applied",
                        desired=resolved.desired.to_config(), lock=resolved.lock, resources=resources))

    result = llmctl("destroy", "-f", str(quickstart), "--auto-approve", env={"QUICKSTART_API_KEY": ""})
    assert result.returncode == 0, result.stderr
    state = backend.read()
    assert (state.serial, state.status, state.resources) == (2, "destroyed", [])
