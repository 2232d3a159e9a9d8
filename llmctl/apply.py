"""Apply a plan, or destroy everything in state, writing state after every step."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from llmctl.desired import Desired
from llmctl.errors import BudgetExceeded, LlmctlError, VerificationFailed
from llmctl.plan.model import Change, Plan, ResourceChange, Summary
from llmctl.plan.planner import refreshed_targets
from llmctl.state import LocalBackend, State
from llmctl.verify.model import ModelVerification, VerificationReport
from llmctl.workspace import Workspace
from providers.base import ApplyContext, Provider, ProviderError, Resource

Progress = Callable[[str, str], None]
T = TypeVar("T", Resource, ResourceChange)


Verify = Callable[[Desired, dict[str, list[str]], list[str]], VerificationReport]


@dataclass
class ApplyOutcome:
    state: State
    report: VerificationReport | None = None


def apply_plan(plan: Plan, workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress,
               ready_timeout: float = 300.0, verify: Verify | None = None) -> ApplyOutcome:
    """Carry out `plan`, load-test the changed models against their SLOs, then record the new state, or roll
    back to the previous one and raise VerificationFailed. The caller holds the state lock."""
    if plan.refresh_only:
        raise LlmctlError("a --refresh-only plan reports drift and has nothing to apply: run `llmctl plan` to see "
                          "how apply would bring the drifted resources back, then `llmctl apply`")
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
    if _interrupted_since(state, plan):
        raise LlmctlError(
            f"an apply after this plan was made did not finish ({state.history_note.split(':')[0]}), so the "
            "resources differ from what the plan saw: run `llmctl plan` again and apply the new plan")
    if plan.budget_blocked:
        raise BudgetExceeded(f"the plan exceeds budget {', '.join(plan.budget_blocked)} (on_exceed: block): lower "
                             "the cost, or plan again with --allow-over-budget")
    if plan.errors:
        raise LlmctlError("the plan has errors; fix them and plan again:\n" +
                          "\n".join(f"  {check.address or ''}: {check.message}" for check in plan.errors))
    if not plan.has_changes:
        return ApplyOutcome(state)

    desired = Desired.from_json(plan.desired)
    # Progress is written under the current serial (1 for a first apply): only a verified apply moves it, so a
    # rolled-back one leaves the serial where it was and saved plans made against it stay valid.
    new = state.model_copy(deep=True, update={"serial": max(state.serial, 1), "history_note": "apply in progress"})
    try:
        _apply_changes(desired, new, _by_target(plan.resource_changes), workspace, get_provider, progress,
                       ready_timeout)
    except ProviderError as exc:
        new.history_note = f"apply failed: {exc}"
        backend.write(new)
        raise LlmctlError(
            f"apply failed; state serial {new.serial} records what exists now, "
            f"and `llmctl plan` shows how to converge:\n{exc}"
        ) from None

    report, note = None, "apply"
    models = _models_to_verify(plan, desired, new.endpoints)
    if verify and models:
        try:
            report = verify(desired, new.endpoints, models)
        except LlmctlError as exc:
            _roll_back(state, new, workspace, get_provider, progress, ready_timeout, f"load test did not run: {exc}")
            raise LlmctlError(f"{exc}\nThe SLOs could not be checked, so the change was rolled back.") from None
        new.verification = {**new.verification, **report.for_state()}
        missed = [r for r in report.results if not r.passed]
        blocking = [r for r in missed if desired.slos[r.slo].on_violation == "rollback"]
        if blocking:
            why = "; ".join(_missed(result) for result in blocking)
            _roll_back(state, new, workspace, get_provider, progress, ready_timeout, f"SLO missed: {why}")
            raise VerificationFailed(f"SLO missed, the change was rolled back (state serial {new.serial}): {why}",
                                     report)
        if missed:
            note = "apply; SLO missed (on_violation: warn): " + "; ".join(_missed(r) for r in missed)
    new.serial, new.desired, new.history_note = state.serial + 1, plan.desired, note
    backend.write(new)
    return ApplyOutcome(new, report)


def _apply_changes(desired: Desired, new: State, changes: dict[str, list[ResourceChange]], workspace: Workspace,
                   get_provider: Callable[[str], Provider], progress: Progress, ready_timeout: float) -> None:
    """Each target's provider carries out its changes; `new` is persisted after every step."""
    views = refreshed_targets(desired, new, get_provider)
    backend = workspace.backend()
    for target in changes:  # every target can proceed, or nothing changes anywhere
        views[target].provider.preflight(target)
    for target, target_changes in changes.items():
        view = views[target]
        ctx = ApplyContext(run_dir=workspace.run_dir, persist=_persister(backend, new, target), progress=progress,
                           ready_timeout=ready_timeout, extra={"desired": desired, "target": target})
        ctx.persist(view.provider.apply(target_changes, view.desired, view.current, ctx))


def _roll_back(previous: State, new: State, workspace: Workspace, get_provider: Callable[[str], Provider],
               progress: Progress, ready_timeout: float, why: str) -> None:
    """Converge the resources back to the previously applied config and record why, under the old serial."""
    before = (Desired.from_json(previous.desired) if previous.desired else
              Desired.empty(previous.project, previous.environment, workspace.config_path.resolve().parent))
    views = refreshed_targets(before, new, get_provider)
    changes = {target: view.provider.plan(before, target, view.desired, view.current, view.gone)[0]
               for target, view in views.items()}
    _apply_changes(before, new, {t: c for t, c in changes.items() if c}, workspace, get_provider, progress,
                   ready_timeout)
    new.desired = previous.desired
    new.history_note = f"apply rolled back: {why}"
    workspace.backend().write(new)


def _interrupted_since(state: State, plan: Plan) -> bool:
    """A failed or interrupted apply rewrote the resources under the same serial after `plan` was made."""
    unfinished = (state.history_note or "").startswith(("apply failed", "apply in progress"))
    return unfinished and state.updated_at is not None and (
        datetime.fromisoformat(state.updated_at) >= datetime.fromisoformat(plan.created_at))


def _models_to_verify(plan: Plan, desired: Desired, endpoints: dict[str, list[str]]) -> list[str]:
    """Models with an SLO and an endpoint that this plan created or changed, or whose SLO or prompt it changed."""
    touched = {c.address for c in plan.changes if c.action != "delete"}
    touched |= {rc.owner for rc in plan.resource_changes if rc.action != "delete"}
    return [name for name, model in desired.models.items()
            if model.slo and endpoints.get(name) and touched & {f"model.{name}", f"slo.{model.slo}",
                                                                 f"prompt.{model.prompt}"}]


def _missed(result: ModelVerification) -> str:
    failed = [f"{c.target} {'n/a' if c.measured is None else round(c.measured, 3)} (limit {c.comparison} {c.limit:g})"
              for c in result.checks if not c.passed]
    return f"model {result.model}: " + ", ".join(failed)


def destroy_plan(state: State, workspace: Workspace) -> Plan:
    """A plan that deletes every object and resource in state."""
    objects = (state.desired or {}).get("objects", {})
    changes = [Change(address=address, action="delete", before=before) for address, before in objects.items()]
    return Plan(
        project=state.project, environment=state.environment, config_path=str(workspace.config_path),
        created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
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
    applied = (Desired.from_json(state.desired) if state.desired else
               Desired.empty(state.project, state.environment, workspace.config_path.resolve().parent))
    targets = {target: (get_provider(resources[0].provider), resources)
               for target, resources in _by_target(state.resources).items()}
    for target, (provider, _) in targets.items():  # every target can proceed, or nothing is removed anywhere
        provider.preflight(target)
    for target, (provider, resources) in targets.items():
        ctx = ApplyContext(run_dir=workspace.run_dir, persist=_persister(backend, new, target), progress=progress,
                           extra={"desired": applied, "target": target})
        provider.destroy(resources, ctx)
    new.desired, new.resources, new.endpoints, new.history_note = None, [], {}, "destroy"
    backend.write(new)
    return new


def endpoints(resources: list[Resource]) -> dict[str, list[str]]:
    """Where each model is served: through its gateway when one fronts it (clients and the SLO load test go
    there, so guardrails and keys are in the measured path), else its replicas."""
    found: dict[str, list[str]] = {}
    for resource in resources:
        if "endpoint" in resource.attrs and not resource.attrs.get("deposed"):
            found.setdefault(resource.owner.split(".", 1)[1], []).append(resource.attrs["endpoint"])
    for resource in resources:
        for model in resource.attrs.get("serves", []):
            found[model] = [resource.attrs["url"]]
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
