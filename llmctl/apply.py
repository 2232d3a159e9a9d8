"""Apply a plan, or destroy everything in state, writing state after every step."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.plan.model import Change, Plan, ResourceChange, Summary
from llmctl.plan.planner import refreshed_targets
from llmctl.state import LocalBackend, State
from llmctl.workspace import Workspace
from providers.base import ApplyContext, Provider, ProviderError, Resource

Progress = Callable[[str, str], None]
T = TypeVar("T", Resource, ResourceChange)


def apply_plan(plan: Plan, workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress,
               ready_timeout: float = 300.0) -> State:
    """Carry out `plan`. The caller holds the state lock."""
    backend = workspace.backend()
    state = backend.read()
    if state.serial == plan.state_serial == 0:
        # Nothing was ever written: the lineage read() invented is nobody's yet; keep the plan's.
        state.lineage = plan.state_lineage
    if (state.lineage, state.serial) != (plan.state_lineage, plan.state_serial):
        raise LlmctlError(
            f"the plan was made against state serial {plan.state_serial}, but the state is now at serial "
            f"{state.serial}{'' if state.lineage == plan.state_lineage else ' of another lineage'}: "
            "run `llmctl plan` again and apply the new plan"
        )
    if plan.errors:
        raise LlmctlError("the plan has errors; fix them and plan again:\n" +
                          "\n".join(f"  {check.address or ''}: {check.message}" for check in plan.errors))
    if not plan.has_changes:
        return state

    desired = Desired.from_json(plan.desired)
    views = refreshed_targets(desired, state, get_provider)
    new = state.model_copy(deep=True, update={"serial": state.serial + 1, "history_note": "apply in progress"})
    try:
        for target, changes in _by_target(plan.resource_changes).items():
            view = views[target]
            ctx = ApplyContext(run_dir=workspace.run_dir, persist=_persister(backend, new, target), progress=progress,
                               ready_timeout=ready_timeout)
            ctx.persist(view.provider.apply(changes, view.desired, view.current, ctx))
    except ProviderError as exc:
        new.history_note = f"apply failed: {exc}"
        backend.write(new)
        raise LlmctlError(
            f"apply failed; state serial {new.serial} records what exists now, "
            f"and `llmctl plan` shows how to converge:\n{exc}"
        ) from None
    new.desired = plan.desired
    new.history_note = "apply"
    backend.write(new)
    return new


def destroy_plan(state: State, workspace: Workspace) -> Plan:
    """A plan that deletes every object and resource in state."""
    objects = (state.desired or {}).get("objects", {})
    changes = [Change(address=address, action="delete", before=before) for address, before in objects.items()]
    return Plan(
        project=state.project, environment=state.environment, config_path=str(workspace.config_path),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        state_serial=state.serial, state_lineage=state.lineage, changes=changes,
        resource_changes=[
            ResourceChange(address=r.address, owner=r.owner, provider=r.provider, target=r.target, action="delete",
                           before=r.spec, deposed=bool(r.attrs.get("deposed")))
            for r in state.resources
        ],
        summary=Summary(add=0, change=0, destroy=len(changes)), checks=[],
        desired={"project": state.project, "environment": state.environment,
                 "config_dir": str(workspace.config_path.resolve().parent), "objects": {}},
    )


def destroy(workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress) -> State:
    """Stop and remove every resource in state. The caller holds the state lock."""
    backend = workspace.backend()
    state = backend.read()
    if state.serial == 0:
        return state
    new = state.model_copy(deep=True, update={"serial": state.serial + 1, "history_note": "destroy in progress"})
    for target, resources in _by_target(state.resources).items():
        provider = get_provider(resources[0].provider)
        ctx = ApplyContext(run_dir=workspace.run_dir, persist=_persister(backend, new, target), progress=progress)
        provider.destroy(resources, ctx)
    new.desired, new.resources, new.endpoints, new.history_note = None, [], {}, "destroy"
    backend.write(new)
    return new


def endpoints(resources: list[Resource]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for resource in resources:
        if "endpoint" in resource.attrs and not resource.attrs.get("deposed"):
            found.setdefault(resource.owner.split(".", 1)[1], []).append(resource.attrs["endpoint"])
    return found


def _persister(backend: LocalBackend, state: State, target: str) -> Callable[[list[Resource]], None]:
    def persist(resources: list[Resource]) -> None:
        state.resources = [r for r in state.resources if r.target != target] + list(resources)
        state.endpoints = endpoints(state.resources)
        backend.write(state)

    return persist


def _by_target(items: list[T]) -> dict[str, list[T]]:
    grouped: dict[str, list[T]] = {}
    for item in items:
        grouped.setdefault(item.target, []).append(item)
    return grouped
