"""Apply a plan, or destroy everything in state, writing state after every step."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, TypeVar

from llmctl.config.schema import Config
from llmctl.desired import Desired
from llmctl.errors import BudgetExceeded, EvalsFailed, LlmctlError, RolloutAborted, VerificationFailed
from llmctl.evals.model import EvalReport, EvalResult
from llmctl.gateway.routing import CANARY, VERSION_HEADER
from llmctl.monitor.live import GatewaySource, metrics_url
from llmctl.plan.model import Change, Plan, Summary
from llmctl.plan.planner import TargetView, applied_desired, refreshed_targets
from llmctl.provider import ApplyContext, Operation, Provider, ProviderError
from llmctl.resolve import Resolved, resolve_applied
from llmctl.resource import Resource, ResourceChange
from llmctl.rollout import engine as rollout
from llmctl.rollout.model import RolloutRecord
from llmctl.state import STATUS_TEXT, LocalBackend, State
from llmctl.verify.model import ModelVerification, VerificationReport
from llmctl.verify.run import drive
from llmctl.workspace import Workspace

Progress = Callable[[str, str], None]
T = TypeVar("T", Resource, ResourceChange)


Verify = Callable[[Desired, dict[str, list[str]], list[str]], VerificationReport]
class Evaluate(Protocol):
    def __call__(self, resolved: Resolved, endpoints: dict[str, list[str]], runs: list[str],
                 baseline: dict[str, EvalResult], *, versions: dict[str, str] | None = None) -> EvalReport:
        """Run the MODEL/EVAL `runs` against `endpoints` (a model named in `versions` at that rollout version)."""


@dataclass
class ApplyOutcome:
    state: State
    report: VerificationReport | None = None
    evals: EvalReport | None = None
    rollout: RolloutRecord | None = None  # a rollout this apply ran (promoted, or paused for `rollout promote`)


def apply_plan(plan: Plan, resolved: Resolved, get_provider: Callable[[str], Provider], progress: Progress,
               ready_timeout: float = 300.0, verify: Verify | None = None,
               evaluate: Evaluate | None = None) -> ApplyOutcome:
    """Carry out `plan` (whose config and lock entries `resolved` holds), load-test the changed models against
    their SLOs, then record the new state, or roll back to the previous one and raise VerificationFailed. Every
    refusal that can be known beforehand comes before the first change. The caller holds the state lock."""
    if plan.refresh_only:
        raise LlmctlError("a --refresh-only plan reports drift and has nothing to apply: run `llmctl plan` to see "
                          "how apply would bring the drifted resources back, then `llmctl apply`")
    backend = resolved.workspace.backend()
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
            f"an apply after this plan was made did not finish ({STATUS_TEXT[state.status or 'applying']}), so the "
            "resources differ from what the plan saw: run `llmctl plan` again and apply the new plan")
    if plan.budget_blocked:
        raise BudgetExceeded(f"the plan exceeds budget {', '.join(plan.budget_blocked)} (on_exceed: block): lower "
                             "the cost, or plan again with --allow-over-budget")
    if plan.errors:
        raise LlmctlError("the plan has errors; fix them and plan again:\n" +
                          "\n".join(f"  {check.address or ''}: {check.message}" for check in plan.errors))
    if not plan.has_changes:
        return ApplyOutcome(state)

    changes = _by_target(plan.resource_changes)
    views = refreshed_targets(resolved, state, get_provider)
    _preflight(resolved, {target: views[target].provider for target in changes}, "apply")
    if plan.rollouts:
        [model] = plan.rollouts  # the plan refuses more than one at a time
        new = state.model_copy(deep=True, update={"serial": max(state.serial, 1), "status": "rolling_out",
                                                  "status_reason": None})
        new.rollout = rollout.start(plan, resolved, model, state.serial)
        backend.write(new)
        return carry_on(new, resolved, get_provider, progress, ready_timeout, evaluate)

    # Progress is written under the current serial (1 for a first apply): only a verified apply moves it, so a
    # rolled-back one leaves the serial where it was and saved plans made against it stay valid.
    new = state.model_copy(deep=True, update={"serial": max(state.serial, 1), "status": "applying",
                                              "status_reason": None})
    try:
        _apply_changes(resolved, new, changes, views, progress, ready_timeout)
    except ProviderError as exc:
        new.status, new.status_reason = "failed", str(exc)
        backend.write(new)
        raise LlmctlError(
            f"apply failed; state serial {new.serial} records what exists now, "
            f"and `llmctl plan` shows how to converge:\n{exc}"
        ) from None

    report, warned = None, None
    desired = resolved.desired
    models = _models_to_verify(plan, desired, new.endpoints)
    if verify and models:
        try:
            report = verify(desired, new.endpoints, models)
        except LlmctlError as exc:
            _roll_back(state, new, resolved, get_provider, progress, ready_timeout, f"load test did not run: {exc}")
            raise LlmctlError(f"{exc}\nThe SLOs could not be checked, so the change was rolled back.") from None
        new.verification = {**new.verification, **report.for_state()}
        missed = [r for r in report.results if not r.passed]
        blocking = [r for r in missed if desired.slos[r.slo].on_violation == "rollback"]
        if blocking:
            why = "; ".join(_missed(result) for result in blocking)
            _roll_back(state, new, resolved, get_provider, progress, ready_timeout, f"SLO missed: {why}")
            raise VerificationFailed(f"SLO missed, the change was rolled back (state serial {new.serial}): {why}",
                                     report)
        if missed:
            warned = "SLO missed (on_violation: warn): " + "; ".join(_missed(r) for r in missed)
    evals = None
    runs = [run for run in plan.evals if new.endpoints.get(run.split("/", 1)[0])]
    if evaluate and runs:
        try:
            evals = evaluate(resolved, new.endpoints, runs, state.eval_baseline)
        except LlmctlError as exc:
            _roll_back(state, new, resolved, get_provider, progress, ready_timeout, f"evals did not run: {exc}")
            raise LlmctlError(f"{exc}\nThe evals could not run, so the change was rolled back.") from None
        new.evals = {**new.evals, **evals.for_state()}
        failed = [result for result in evals.results if not result.passed]
        blocking = [result for result in failed if result.on_failure == "rollback"]
        if blocking:
            why = "; ".join(_failed(result) for result in blocking)
            _roll_back(state, new, resolved, get_provider, progress, ready_timeout, f"evals failed: {why}")
            raise EvalsFailed(f"evals failed, the change was rolled back (state serial {new.serial}): {why}", evals)
        if failed:
            warned = "; ".join(filter(None, [warned, "evals failed (on_failure: warn): "
                                              + "; ".join(_failed(result) for result in failed)]))
    if evals:
        new.eval_baseline = {**new.eval_baseline, **evals.for_state()}
    new.serial, new.desired, new.lock = state.serial + 1, plan.desired, resolved.lock
    new.status, new.status_reason = "applied", warned
    backend.write(new)
    return ApplyOutcome(new, report, evals)


def _failed(result: EvalResult) -> str:
    """`assistant/quality: 1 of 2 cases passed (50%, needs 90%); 1 regressed`."""
    passed = sum(case.passed for case in result.cases)
    regressed = f"; {len(result.regressions)} regressed" if result.baseline and result.regressions else ""
    return (f"{result.key}: {passed} of {len(result.cases)} cases passed ({result.pass_rate:.0%}, needs "
            f"{result.required:.0%}){regressed}")


def _preflight(resolved: Resolved, providers: dict[str, Provider], action: Operation) -> None:
    """Every target can proceed, or nothing changes anywhere: all the reasons at once, so one fix-and-retry
    round is enough."""
    problems = [f"  target '{target}': {problem}" for target, provider in providers.items()
                for problem in provider.preflight(resolved, target, action)]
    if problems:
        raise LlmctlError(f"{action} would fail, so nothing was changed:\n" + "\n".join(problems))


def _apply_changes(resolved: Resolved, new: State, changes: dict[str, list[ResourceChange]],
                   views: dict[str, TargetView], progress: Progress, ready_timeout: float) -> None:
    """Each target's provider carries out its changes; `new` is persisted after every step."""
    backend = resolved.workspace.backend()
    for target, target_changes in changes.items():
        view = views[target]
        ctx = ApplyContext(resolved=resolved, target=target, persist=_persister(backend, new, target),
                           progress=progress, ready_timeout=ready_timeout)
        ctx.persist(view.provider.apply(target_changes, view.desired, view.current, ctx))


def _roll_back(previous: State, new: State, resolved: Resolved, get_provider: Callable[[str], Provider],
               progress: Progress, ready_timeout: float, why: str) -> None:
    """Converge the resources back to the previously applied config and record why, under the old serial."""
    _converge(resolved.with_desired(_applied(previous, resolved.workspace), previous.lock), new, get_provider,
              progress, ready_timeout)
    new.desired, new.lock = previous.desired, previous.lock
    new.status, new.status_reason = "rolled_back", why
    resolved.workspace.backend().write(new)


def _converge(resolved: Resolved, new: State, get_provider: Callable[[str], Provider], progress: Progress,
              ready_timeout: float) -> None:
    """Make the resources in `new` match `resolved`, whatever they are now."""
    views = refreshed_targets(resolved, new, get_provider)
    changes = {target: view.provider.plan(resolved, target, view.desired, view.current, view.gone)[0]
               for target, view in views.items()}
    _apply_changes(resolved, new, {t: c for t, c in changes.items() if c}, views, progress, ready_timeout)


# --- rollouts ------------------------------------------------------------------------------------------------------


def carry_on(new: State, target: Resolved, get_provider: Callable[[str], Provider], progress: Progress,
             ready_timeout: float = 300.0, evaluate: Evaluate | None = None) -> ApplyOutcome:
    """Run the rollout in `new` from where its record stands to promotion, a pause, or an abort (RolloutAborted).
    `target` is the config being rolled out. The caller holds the state lock."""
    record = new.rollout
    assert record is not None and record.in_progress
    backend = target.workspace.backend()
    applied = _applied(new, target.workspace)
    endpoint = new.endpoints[record.model][0]  # the gateway's: it serves both versions under the model's name

    def save(updated: RolloutRecord) -> None:
        updated.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        new.rollout = updated
        backend.write(new)

    def grade(_step: Resolved, runs: list[str]) -> EvalReport:
        assert evaluate is not None
        # Asked as the target config: its model identity keys the answer cache, so the new version's answers are
        # never mistaken for the stable one's.
        report = evaluate(target, new.endpoints, runs, new.eval_baseline, versions={record.model: CANARY})
        new.evals = {**new.evals, **report.for_state()}
        return report

    seams = rollout.Seams(
        converge=lambda resolved: _converge(resolved, new, get_provider, progress, ready_timeout), save=save,
        scrape=GatewaySource([metrics_url(endpoint)], 0).scrape,
        drive=lambda desired, model, version, requests: drive(desired, [endpoint], model, {VERSION_HEADER: version},
                                                             requests),
        evaluate=grade if evaluate is not None else None, progress=progress)
    try:
        outcome = rollout.advance(record, target, applied, new.lock, seams)
    except ProviderError as exc:
        # The new version did not start (or a step could not be set): it is a failed step, and goes back like one.
        record.reason = f"step {record.step + 1} ({record.weight}%): {exc}"
        try:
            abort(new, target, get_provider, progress, ready_timeout, record.reason)
        except ProviderError as again:
            new.status, new.status_reason = "failed", str(again)
            backend.write(new)
            raise LlmctlError(f"the rollout of model {record.model} failed ({exc}) and going back failed too: "
                              f"{again}\n`llmctl rollout abort` tries again") from None
        raise LlmctlError(f"rollout of model {record.model} aborted, only the stable version serves (state serial "
                          f"{new.serial}):\n{exc}") from None
    except LlmctlError as exc:  # the analysis could not be made (the load worker died, an eval could not run)
        raise LlmctlError(f"{exc}\nThe rollout of model {record.model} stays at step {record.step + 1} "
                          f"({record.weight}%): `llmctl rollout promote` tries the step again, `llmctl rollout "
                          "abort` goes back to the stable version") from None
    if outcome == "paused":
        return ApplyOutcome(new, rollout=record)
    if outcome == "failed":
        abort(new, target, get_provider, progress, ready_timeout, record.reason or "a step failed")
        raise RolloutAborted(f"rollout of model {record.model} aborted at {record.reason}; only the stable version "
                             f"serves (state serial {new.serial})", record, record.eval_failed)
    if record.kind == "model":
        new.resources = rollout.promoted(new.resources, record.model)
        new.endpoints = endpoints(new.resources)
        backend.write(new)
    _converge(target, new, get_provider, progress, ready_timeout)
    record.status, record.weight, record.reason = "promoted", 100, None
    new.serial, new.desired, new.lock = new.serial + 1, record.target, record.target_lock
    new.status, new.status_reason = "applied", None
    save(record)
    return ApplyOutcome(new, rollout=record)


def abort(new: State, target: Resolved, get_provider: Callable[[str], Provider], progress: Progress,
          ready_timeout: float, why: str) -> None:
    """Weight back to 0 first, so no caller is sent to a version being stopped; then back to the applied config:
    the new version stops and only the stable one serves. `target` is the config being rolled out."""
    record = new.rollout
    assert record is not None
    applied = _applied(new, target.workspace)
    if record.kind == "prompt" or any(r.version == CANARY for r in new.resources):
        try:
            _converge(rollout.staged(target, applied, new.lock, record, 0), new, get_provider, progress,
                      ready_timeout)
        except ProviderError:
            pass  # the new version cannot be kept up even at weight 0: going back stops it all the same
    record.status, record.weight, record.reason = "aborted", 0, why
    new.rollout = record
    _roll_back(new, new, target, get_provider, progress, ready_timeout,
               f"rollout of model {record.model} aborted: {why}")


def _applied(state: State, workspace: Workspace) -> Desired:
    """The config `state` says is applied; an empty one when nothing is (rollback of a first apply, destroy)."""
    return applied_desired(state, workspace) or Desired.empty(state.project, state.environment, workspace.config_dir)


def _interrupted_since(state: State, plan: Plan) -> bool:
    """A failed or interrupted apply rewrote the resources under the same serial after `plan` was made."""
    return state.status in ("failed", "applying") and state.updated_at is not None and (
        datetime.fromisoformat(state.updated_at) >= datetime.fromisoformat(plan.created_at))


def _models_to_verify(plan: Plan, desired: Desired, endpoints: dict[str, list[str]]) -> list[str]:
    """Models with an SLO and an endpoint that this plan created or changed, or whose SLO or prompt it changed."""
    touched = plan.touched
    return [name for name, model in desired.models.items()
            if model.slo and endpoints.get(name) and touched & {f"model.{name}", f"slo.{model.slo}",
                                                                 f"prompt.{model.prompt}"}]


def _missed(result: ModelVerification) -> str:
    failed = [f"{c.target} {'n/a' if c.measured is None else round(c.measured, 3)} (limit {c.comparison} {c.limit:g})"
              for c in result.checks if not c.passed]
    return f"model {result.model}: " + ", ".join(failed)


def destroy_plan(state: State, workspace: Workspace) -> Plan:
    """A plan that deletes every object and resource in state."""
    changes = [Change(address=address, action="delete", before=before)
               for address, before in _applied(state, workspace).objects().items()]
    return Plan(
        project=state.project, environment=state.environment, config_path=str(workspace.config_path),
        created_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        state_serial=state.serial, state_lineage=state.lineage, changes=changes,
        resource_changes=[
            ResourceChange(address=r.address, owner=r.owner, provider=r.provider, target=r.target, action="delete",
                           before=r.spec, deposed=r.deposed)
            for r in state.resources
        ],
        summary=Summary(add=0, change=0, destroy=len(changes)), checks=[],
        desired=Config(version=1, project=state.project, environment=state.environment),
    )


def destroy(workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress) -> State:
    """Stop and remove every resource in state. The caller holds the state lock."""
    backend = workspace.backend()
    state = backend.read()
    if state.serial == 0:
        return state
    resolved = resolve_applied(workspace, _applied(state, workspace), state.lock)
    targets = {target: (get_provider(resources[0].provider), resources)
               for target, resources in _by_target(state.resources).items()}
    _preflight(resolved, {target: provider for target, (provider, _) in targets.items()}, "destroy")
    new = state.model_copy(deep=True, update={"serial": state.serial + 1, "status": "destroying",
                                              "status_reason": None})
    for target, (provider, resources) in targets.items():
        ctx = ApplyContext(resolved=resolved, target=target, persist=_persister(backend, new, target),
                           progress=progress)
        provider.destroy(resources, ctx)
    new.desired, new.lock, new.resources, new.endpoints = None, None, [], {}
    new.status = "destroyed"
    backend.write(new)
    return new


def endpoints(resources: list[Resource]) -> dict[str, list[str]]:
    """Where each model is served: through its gateway when one fronts it (clients and the SLO load test go
    there, so guardrails and keys are in the measured path), else its replicas."""
    found: dict[str, list[str]] = {}
    for resource in resources:
        # Only a model's own resources serve it: a monitoring process has an endpoint too, and serves no model.
        if resource.endpoint and resource.owner.startswith("model.") and not resource.serves and not resource.deposed:
            found.setdefault(resource.model, []).append(resource.endpoint)
    for resource in resources:
        for model in resource.serves:
            if resource.endpoint:
                found[model] = [resource.endpoint]
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


def rollout_in_progress(state: State) -> RolloutRecord:
    if state.rollout is None or not state.rollout.in_progress:
        last = f" (the last one, of model {state.rollout.model}, was {state.rollout.status})" if state.rollout else ""
        raise LlmctlError(f"no rollout is in progress in {state.project}/{state.environment}{last}: `llmctl apply` "
                          "starts one when a model with a canary or blue_green rollout changes")
    return state.rollout


def rolled_out(state: State, workspace: Workspace) -> Resolved:
    """The config the rollout in `state` is carrying out, as it was planned (its own lock entries)."""
    record = rollout_in_progress(state)
    return resolve_applied(workspace, Desired.from_parts(record.target, workspace.config_dir), record.target_lock)


def promote(workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress,
            evaluate: Evaluate | None = None) -> ApplyOutcome:
    """Go on with the rollout in progress (paused, or interrupted by Ctrl-C or a crash) from its next undecided
    step. The caller holds the state lock."""
    new = workspace.backend().read()
    return carry_on(new, rolled_out(new, workspace), get_provider, progress, evaluate=evaluate)


def abort_rollout(workspace: Workspace, get_provider: Callable[[str], Provider], progress: Progress) -> State:
    """Go back to the stable version: only it serves afterwards. The caller holds the state lock."""
    new = workspace.backend().read()
    abort(new, rolled_out(new, workspace), get_provider, progress, 300.0, "aborted by `llmctl rollout abort`")
    return new
