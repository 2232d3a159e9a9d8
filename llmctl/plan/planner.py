"""The planner: state + desired config → Plan (changes, resource changes, checks, summary)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from llmctl.checks import Check
from llmctl.config.schema import SECTIONS
from llmctl.cost.estimate import plan_cost
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.lock import Lock
from llmctl.monitor.checks import checks as monitoring_checks
from llmctl.rollout.checks import checks as rollout_checks
from llmctl.rollout.engine import rolling
from llmctl.plan.diff import diff_object
from llmctl.plan.model import Change, Drift, Plan, Summary, touched
from llmctl.provider import Provider
from llmctl.resolve import Resolved
from llmctl.resource import Resource, ResourceChange
from llmctl.state import State
from llmctl.workspace import Workspace

# Plans list targets first, then the sections in the order the config declares them.
_KIND_ORDER = ["target", *SECTIONS.values(), "gateway"]


@dataclass
class TargetView:
    """One target as the planner saw it: what it wants, what exists, what is gone."""

    provider: Provider
    desired: list[Resource]
    current: list[Resource]
    gone: dict[str, str] = field(default_factory=dict)


def applied_desired(state: State, workspace: Workspace) -> Desired | None:
    """The config the state says is applied, as a Desired beside the one being planned; None when nothing is."""
    if state.desired is None:
        return None
    return Desired.from_parts(state.desired, workspace.config_dir)


def make_plan(resolved: Resolved, state: State, get_provider: Callable[[str], Provider]) -> Plan:
    desired = resolved.desired
    applied = applied_desired(state, resolved.workspace)
    before = _with_datasets(applied.objects(), state.lock) if applied else {}
    after = _with_datasets(desired.objects(), resolved.lock)
    changes = [change for address in before.keys() | after.keys()
               if (change := _change(address, before.get(address), after.get(address)))]

    checks: list[Check] = []
    resource_changes: list[ResourceChange] = []
    for target, view in _targets(resolved, state, get_provider, checks).items():
        checks += view.provider.check(resolved, target) if target in desired.targets else []
        target_changes, target_checks = view.provider.plan(resolved, target, view.desired, view.current, view.gone)
        resource_changes += target_changes
        checks += target_checks
    changes += _drift_changes(changes, resource_changes, after)
    evals = evals_to_run(desired, changes, resource_changes)
    checks += monitoring_checks(desired)
    rollouts = rolling(changes, resource_changes, desired)
    checks += rollout_checks(desired, rollouts, resource_changes, state.rollout)
    cost, cost_checks = plan_cost(resolved, applied, state.lock)
    checks += cost_checks

    return Plan(
        project=desired.project,
        environment=desired.environment,
        config_path=str(resolved.workspace.config_path),
        created_at=_now(),
        state_serial=state.serial,
        state_lineage=state.lineage,
        changes=sorted(changes, key=lambda c: _sort_key(c.address)),
        resource_changes=resource_changes,
        summary=_summary(changes),
        cost=cost,
        checks=checks,
        desired=desired.to_config(),
        lock=resolved.lock,
        evals=evals,
        rollouts=rollouts,
    )


def make_refresh_plan(resolved: Resolved, state: State, get_provider: Callable[[str], Provider]) -> Plan:
    """What changed outside llmctl since the last apply, as `terraform plan -refresh-only` shows it: the recorded
    resources refreshed against what exists, nothing planned."""
    checks: list[Check] = []
    drift: list[Drift] = []
    for target, view in _targets(resolved, state, get_provider, checks).items():
        recorded = {r.address: r for r in state.resources_of(target)}
        drift += [Drift(address=address, owner=recorded[address].owner, provider=recorded[address].provider,
                        target=target, kind="deleted", detail=why) for address, why in view.gone.items()]
        drift += [Drift(address=r.address, owner=r.owner, provider=r.provider, target=target, kind="changed",
                        detail=f"{', '.join(r.drift)} changed") for r in view.current if r.drift]
    return Plan(
        project=resolved.desired.project, environment=resolved.desired.environment,
        config_path=str(resolved.workspace.config_path), created_at=_now(), state_serial=state.serial,
        state_lineage=state.lineage, changes=[], resource_changes=[], summary=Summary(add=0, change=0, destroy=0),
        checks=checks, desired=resolved.desired.to_config(), lock=resolved.lock, refresh_only=True,
        drift=sorted(drift, key=lambda d: d.address))


def refreshed_targets(resolved: Resolved, state: State,
                      get_provider: Callable[[str], Provider]) -> dict[str, TargetView]:
    """Every target that is declared or still has resources in state, refreshed against what exists."""
    checks: list[Check] = []
    views = _targets(resolved, state, get_provider, checks)
    if checks:
        raise LlmctlError("\n".join(check.message for check in checks))
    return views


def _targets(resolved: Resolved, state: State, get_provider: Callable[[str], Provider],
             checks: list[Check]) -> dict[str, TargetView]:
    desired = resolved.desired
    providers = {name: target.provider for name, target in desired.targets.items()}
    providers.update({r.target: r.provider for r in state.resources if r.target not in providers})
    views = {}
    for target, provider_name in sorted(providers.items()):
        try:
            provider = get_provider(provider_name)
        except LlmctlError as exc:
            # Cost, fit and budgets can still be planned; apply refuses until the provider is installed.
            checks.append(Check(severity="warning", address=f"target.{target}",
                                message=f"{exc}; apply will refuse this target until it is"))
            continue
        try:
            wanted = provider.resources(resolved, target) if target in desired.targets else []
        except LlmctlError as exc:  # e.g. a GPU the price catalog cannot place: the rest of the plan still shows,
            # and this target's resources are not planned at all (never shown as deleted)
            checks.append(Check(severity="error", address=f"target.{target}", message=str(exc)))
            continue
        current, gone = provider.refresh(state.resources_of(target))
        views[target] = TargetView(provider, wanted, current, gone)
    return views


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _with_datasets(objects: dict[str, dict[str, Any]], lock: Lock | None) -> dict[str, dict[str, Any]]:
    """Each eval with a dataset carries the file's digest from the lock, so that new content in an unchanged file
    name is a change of the eval: the plan shows it and apply runs it."""
    digests = lock.datasets if lock else {}
    return {address: {**data, "dataset_sha256": digests.get(address.split(".", 1)[1])}
            if address.startswith("eval.") and data.get("dataset") else data for address, data in objects.items()}


def evals_to_run(desired: Desired, changes: list[Change], resource_changes: list[ResourceChange]) -> list[str]:
    """MODEL/EVAL for each eval apply will run: every eval of a model whose model, prompt or guardrails this plan
    creates or changes, and each changed eval for the models that name it."""
    changed = touched(changes, resource_changes)
    runs = []
    for name, model in desired.models.items():
        serving = {f"model.{name}", f"prompt.{model.prompt}", *(f"guardrail.{g}" for g in model.guardrails)}
        runs += [f"{name}/{evaluation}" for evaluation in model.evals
                 if changed & serving or f"eval.{evaluation}" in changed]
    return runs


def _change(address: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> Change | None:
    if before == after:
        return None
    if before is None:
        return Change(address=address, action="create", after=after)
    if after is None:
        return Change(address=address, action="delete", before=before)
    diff = diff_object(address.split(".", 1)[0], before, after)
    action = "replace" if any(entry.forces_replacement for entry in diff) else "update"
    return Change(address=address, action=action, before=before, after=after, diff=diff)


def _drift_changes(changes: list[Change], resource_changes: list[ResourceChange],
                   after: dict[str, dict[str, Any]]) -> list[Change]:
    """An object whose config is unchanged but whose resources drifted is updated, with the drift as reason."""
    changed = {change.address for change in changes}
    drift: dict[str, list[str]] = {}
    for rc in resource_changes:
        if rc.owner not in changed and rc.owner in after:
            drift.setdefault(rc.owner, []).append(f"{rc.address} {rc.reason or rc.action}")
    return [Change(address=owner, action="update", before=after[owner], after=after[owner], reason="; ".join(why))
            for owner, why in drift.items()]


def _summary(changes: list[Change]) -> Summary:
    count = {action: sum(1 for c in changes if c.action == action) for action in ("create", "update", "replace", "delete")}
    return Summary(add=count["create"] + count["replace"], change=count["update"],
                   destroy=count["delete"] + count["replace"])


def _sort_key(address: str) -> tuple[int, str]:
    kind, _, name = address.partition(".")
    return (_KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER), name)
