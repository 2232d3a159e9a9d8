"""Carry a model's change out as a rollout: its new version runs beside the stable one, the gateway moves a share
of callers to it step by step, and each step is decided on both versions' figures over the same window; then the
new version is promoted or the rollout aborted.

The state's applied config stays the stable one until promotion, so an interrupted rollout is always abortable
(converge to what state says is applied) and resumable (the record keeps the config being rolled out). The engine
talks to the world through `Seams`: apply's convergence, the gateway's /metrics, the load generator and the evals.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Literal

from llmctl.config.schema import Rollout, RolloutStep, duration_seconds
from llmctl.desired import Canary, Desired
from llmctl.evals.model import EvalReport, EvalResult
from llmctl.gateway.routing import CANARY, STABLE
from llmctl.lock import Lock
from llmctl.monitor.live import Scrape
from llmctl.plan.model import Change, Plan
from llmctl.resolve import Resolved
from llmctl.resource import Resource, ResourceChange
from llmctl.rollout.analysis import compare, figures, short
from llmctl.rollout.model import Comparison, RolloutRecord, StepRecord

Outcome = Literal["passed", "paused", "failed"]
# How often a waiting step tells the progress display how long is left.
_TICK_S = 5.0


@dataclass(frozen=True)
class Seams:
    converge: Callable[[Resolved], None]  # make the resources and the gateway match; state is written as it goes
    save: Callable[[RolloutRecord], None]  # write the record into state
    scrape: Callable[[], Scrape]  # the gateway's /metrics now
    drive: Callable[[Desired, str, str, int], None]  # (config, model, version, requests): send load to a version
    evaluate: Callable[[Resolved, list[str]], EvalReport] | None  # MODEL/EVAL runs, against the new version
    progress: Callable[[str, str], None]
    sleep: Callable[[float], None] = time.sleep


def rolling(changes: list[Change], resource_changes: list[ResourceChange], desired: Desired) -> dict[str, str]:
    """The models a plan rolls out (model name -> rollout name): those whose rollout is not all_at_once and whose
    servers it replaces or whose prompt it changes. A model created or deleted changes at once."""
    replaced = _replaced(resource_changes)
    updated = {change.address: change for change in changes if change.action == "update"}
    found = {}
    for name, model in desired.models.items():
        if not model.rollout or desired.rollouts[model.rollout].strategy == "all_at_once":
            continue
        change = updated.get(f"model.{name}")
        prompt_changed = f"prompt.{model.prompt}" in updated or (
            change is not None and any(entry.path == "prompt" for entry in change.diff))
        if (change is not None and f"model.{name}" in replaced) or (prompt_changed and model.prompt):
            found[name] = model.rollout
    return found


def _replaced(resource_changes: list[ResourceChange]) -> set[str]:
    """The owners whose stable servers a plan replaces."""
    return {change.owner for change in resource_changes
            if change.action in ("replace", "update") and change.version == STABLE and not change.deposed}


def start(plan: Plan, target: Resolved, model: str, from_serial: int) -> RolloutRecord:
    name = target.desired.models[model].rollout or ""
    rollout = target.desired.rollouts[name]
    kind = "model" if f"model.{model}" in _replaced(plan.resource_changes) else "prompt"
    return RolloutRecord(model=model, rollout=name, strategy=rollout.strategy, kind=kind,  # type: ignore[arg-type]
                         status="running", weight=0, step=0, weights=[s.weight for s in rollout.effective_steps()],
                         started_at=_now(), from_serial=from_serial, target=plan.desired, target_lock=target.lock)


def staged(target: Resolved, applied: Desired, applied_lock: Lock | None, record: RolloutRecord,
           weight: int) -> Resolved:
    """The config a step runs: everything as `target` asks, except that the rolled model keeps its applied
    (stable) definition, lock entry and prompt, and serves `weight`% of callers from its new version beside it:
    new servers (a model rollout), and the new prompt where it changed."""
    desired, model = target.desired, record.model
    stable = applied.models[model]
    new_prompt = desired.prompts.get(desired.models[model].prompt or "")
    old_prompt = applied.prompts.get(stable.prompt or "")
    canary = Canary(model=desired.models[model], lock=target.locked(model), weight=weight,
                    prompt=new_prompt if new_prompt != old_prompt else None, servers=record.kind == "model")
    prompts = {**desired.prompts, **({old_prompt.name: old_prompt} if old_prompt else {})}
    lock = target.lock
    if lock is not None:
        pinned = {**lock.models}
        pinned_before = applied_lock.models.get(model) if applied_lock else None
        if pinned_before is not None:
            pinned[model] = pinned_before
        else:
            pinned.pop(model, None)
        lock = lock.model_copy(update={"models": pinned})
    return target.with_desired(replace(desired, models={**desired.models, model: stable}, prompts=prompts,
                                       canaries={model: canary}), lock)


def advance(record: RolloutRecord, target: Resolved, applied: Desired, applied_lock: Lock | None,
            seams: Seams) -> Outcome:
    """Run the steps from the record's: a step decided already (passed, then paused) is not run again."""
    rollout = target.desired.rollouts[record.rollout]
    steps = rollout.effective_steps()
    first = record.step + 1 if record.steps and record.steps[-1].verdict == "passed" else record.step
    for index in range(first, len(steps)):
        step = steps[index]
        record.status, record.step, record.weight, record.reason = "running", index, step.weight, None
        step_config = staged(target, applied, applied_lock, record, step.weight)
        seams.converge(step_config)
        entry = StepRecord(index=index, weight=step.weight, started_at=_now())
        record.steps = [s for s in record.steps if s.index != index] + [entry]
        seams.save(record)
        # The new version's evals do not depend on its share of callers: they run once, at the first step.
        _analyse(entry, record, step_config, step, rollout, index == 0, seams)
        seams.save(record)
        if entry.verdict == "failed":
            return "failed"
        if step.pause and index < len(steps) - 1:
            record.status = "paused"
            record.reason = (f"paused after step {index + 1} ({step.weight}%): `llmctl rollout promote` goes on, "
                             "`llmctl rollout abort` goes back")
            seams.save(record)
            return "paused"
    return "passed"


def as_served(desired: Desired, model: str, version: str) -> Desired:
    """The config as `version` of the rolled `model` serves it: for the new version, its definition and prompt
    (so load sent to it is rendered with the prompt it serves)."""
    canary = desired.canaries.get(model)
    if version != CANARY or canary is None:
        return desired
    prompts = {**desired.prompts, **({canary.prompt.name: canary.prompt} if canary.prompt else {})}
    return replace(desired, models={**desired.models, model: canary.model}, prompts=prompts)


def promoted(resources: list[Resource], model: str) -> list[Resource]:
    """The new version's replicas become the stable ones; the old are deposed, for apply to stop (as after a
    replace) once the gateway no longer sends them anyone."""
    found = []
    for resource in resources:
        if resource.owner == f"model.{model}" and not resource.deposed:
            resource = resource.model_copy(update={"version": STABLE} if resource.version == CANARY
                                           else {"deposed": True})
        found.append(resource)
    return found


def _analyse(entry: StepRecord, record: RolloutRecord, resolved: Resolved, step: RolloutStep, rollout: Rollout,
             with_evals: bool, seams: Seams) -> None:
    desired, model = resolved.desired, record.model
    analysis = rollout.analysis
    slo_name = analysis.slo or desired.canaries[model].model.slo
    slo = desired.slos.get(slo_name) if slo_name else None
    before = seams.scrape()
    _wait(step, record, seams)
    after = seams.scrape()
    driven = {STABLE: 0, CANARY: 0}
    # Never decide on too little data: a version short of requests is sent them, then the whole window is read.
    for version, serves in ((CANARY, True), (STABLE, step.weight < 100)):
        if not serves:
            continue
        lacking = short(figures(before, after, model, version), slo, analysis)
        if lacking:
            seams.progress(f"rollout.{record.rollout}", f"{version} is short of data: sending {lacking} requests")
            seams.drive(as_served(resolved.desired, model, version), model, version, lacking)
            driven[version] += lacking
    if any(driven.values()):
        after = seams.scrape()
    canary = figures(before, after, model, CANARY, driven[CANARY])
    stable = figures(before, after, model, STABLE, driven[STABLE]) if step.weight < 100 else None
    entry.canary, entry.stable = canary, stable
    entry.comparisons = compare(canary, stable, slo, analysis)
    if with_evals and seams.evaluate is not None:
        named = analysis.evals
        runs = [f"{model}/{name}" for name in (named if named is not None else desired.canaries[model].model.evals)]
        if runs:
            seams.progress(f"rollout.{record.rollout}", f"running {len(runs)} eval(s) against the new version")
            report = seams.evaluate(resolved, runs)
            entry.comparisons += [_eval_held(result, named is not None) for result in report.results]
    failed = [c for c in entry.comparisons if not c.passed]
    entry.verdict = "failed" if failed else "passed"
    entry.reason = "; ".join(_missed(c) for c in failed) or None
    entry.ended_at = _now()
    if failed:
        record.eval_failed = any(c.name.startswith("eval.") for c in failed)
        record.reason = f"step {entry.index + 1} ({entry.weight}%): {entry.reason}"


def _eval_held(result: EvalResult, named: bool) -> Comparison:
    """An eval the analysis names gates the step; one it takes from the model gates it as apply would (an eval
    with on_failure: warn only warns)."""
    warned = not result.passed and not named and result.on_failure == "warn"
    return Comparison(name=f"eval.{result.eval}", canary=result.pass_rate, limit=result.required, comparison=">=",
                      passed=result.passed or warned,
                      note=f"{sum(c.passed for c in result.cases)} of {len(result.cases)} cases passed"
                           + (" (on_failure: warn)" if warned else ""))


def _wait(step: RolloutStep, record: RolloutRecord, seams: Seams) -> None:
    left = duration_seconds(step.duration) if step.duration else 0.0
    while left > 0:
        seams.progress(f"rollout.{record.rollout}", f"step {record.step + 1} at {step.weight}%: {left:.0f}s left")
        pause = min(left, _TICK_S)
        seams.sleep(pause)
        left -= pause


def _missed(comparison: Comparison) -> str:
    figure = "not measured" if comparison.canary is None else f"{comparison.canary:.6g}"
    return f"{comparison.name} {figure} (limit {comparison.comparison} {comparison.limit:.6g})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

