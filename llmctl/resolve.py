"""Resolve once: after loading, everything a command needs below the CLI, built a single time and passed down.

The planner, the providers, the cost estimate and the gateway's spec all take this context; none of them reads the
lock, loads the price catalog or finds the workspace again. A saved plan carries its lock entries, so applying it
resolves to exactly what was reviewed (`resolve_saved_plan`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from llmctl.checks import Check
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.workspace import Workspace

if TYPE_CHECKING:
    from llmctl.config.load import LoadedConfig
    from llmctl.config.schema import Model
    from llmctl.cost.catalog import Catalog
    from llmctl.cost.model import CostReport
    from llmctl.lock import Lock, ModelLock
    from llmctl.plan.model import Plan


@dataclass(frozen=True)
class Resolved:
    desired: Desired
    workspace: Workspace
    catalog: Catalog
    lock: Lock | None  # the entries this run deploys: llmops.lock's, or a saved plan's
    notes: list[Check] = field(default_factory=list)  # e.g. a pinned branch that moved upstream
    allow_over_budget: bool = False

    @cached_property
    def cost(self) -> tuple[CostReport, list[Check]]:
        """The cost estimate of `desired`, computed once however many parts (plan, gateway prices) ask."""
        from llmctl.cost.estimate import estimate

        return estimate(self.desired, self.catalog, self.lock)

    def locked(self, model: str) -> ModelLock | None:
        return self.lock.models.get(model) if self.lock else None

    def pinned_revision(self, model: Model) -> str | None:
        """The commit the lock pinned for an hf:// model, else the revision its source asks for, if any."""
        locked = self.locked(model.name)
        return (locked.sha if locked else None) or model.parsed_source.revision

    def revision(self, model: Model) -> str:
        """The hub revision an hf:// model is served at: `pinned_revision`, else the hub's default branch."""
        return self.pinned_revision(model) or "main"

    def with_desired(self, desired: Desired, lock: Lock | None) -> Resolved:
        """The same workspace and catalog for another config: the applied one, for rollback and destroy."""
        return Resolved(desired, self.workspace, self.catalog, lock)


def resolve(loaded: LoadedConfig, allow_over_budget: bool = False, update: bool = False) -> Resolved:
    """Lock what is missing or stale (never silently re-resolving what is pinned, unless `update`), and say when
    a pinned branch has moved upstream."""
    from llmctl.cost.catalog import load_catalog
    from llmctl.cost.hosted import pinned_library
    from llmctl.lock import lock_path, read_lock, stale, upstream_moved, write_lock
    from llmctl.lock import resolve as resolve_lock

    desired = Desired.from_config(loaded)
    catalog = load_catalog()
    api_prices = pinned_library(desired)
    path = lock_path(loaded.path)
    lock = read_lock(path)
    if lock is None or update or stale(lock, desired, catalog.version, api_prices):
        lock = resolve_lock(desired, catalog.version, previous=lock, update=update, api_prices=api_prices)
        write_lock(path, lock)
    notes = [Check(severity="info", address=f"model.{line.split(':', 1)[0].removeprefix('model ')}", message=line)
             for line in upstream_moved(lock)]
    return Resolved(desired, workspace_of(loaded), catalog, lock, notes, allow_over_budget)


def resolve_applied(workspace: Workspace, desired: Desired, lock: Lock | None) -> Resolved:
    """The context of a config already reviewed (a saved plan) or applied (state): its own lock entries, never
    re-resolved."""
    from llmctl.cost.catalog import load_catalog

    return Resolved(desired, workspace, load_catalog(), lock)


def resolve_saved_plan(plan: Plan) -> Resolved:
    """The context a saved plan was made with: its config and its lock entries, refused when llmops.lock or the
    prices (the catalog, the hosted-API price library) have changed since, because then the plan would deploy
    something other than what they say."""
    from pathlib import Path

    from llmctl.cost.hosted import pinned_library

    workspace = Workspace(Path(plan.config_path), plan.project, plan.environment)
    _check_lock_unchanged(workspace, plan.lock)
    desired = Desired.from_parts(plan.desired, workspace.config_dir)
    resolved = resolve_applied(workspace, desired, plan.lock)
    if plan.lock is not None:
        for what, now, then in (("price catalog", resolved.catalog.version, plan.lock.prices),
                                ("hosted-API price library", pinned_library(desired), plan.lock.api_prices)):
            if now != then:
                raise LlmctlError(f"the {what} is now {now}, but the plan was priced with {then}: run `llmctl plan` "
                                  "again and apply the new plan")
    return resolved


def _check_lock_unchanged(workspace: Workspace, pinned: Lock | None) -> None:
    """A saved plan deploys the entries it was made with; if llmops.lock now says otherwise, someone re-locked
    after the review, and applying the plan would deploy something nobody reviewed (or not what the lock says)."""
    from llmctl.lock import lock_path, read_lock

    path = lock_path(workspace.config_path)
    current = read_lock(path)
    if current == pinned:
        return
    differences = _lock_differences(pinned, current)
    raise LlmctlError(f"{path} changed since this plan was made ({'; '.join(differences)}): the plan would deploy "
                      "what it pinned, not what the lock says now; run `llmctl plan` again and apply the new plan")


def _lock_differences(pinned: Lock | None, current: Lock | None) -> list[str]:
    if pinned is None or current is None:
        return ["the lock was " + ("written" if pinned is None else "removed")]
    found = []
    for name in sorted(pinned.models.keys() | current.models.keys()):
        old, new = pinned.models.get(name), current.models.get(name)
        if old != new:
            found.append(f"model {name}: {_pin(old)} -> {_pin(new)}")
    found += [f"prompt {name} changed" for name in sorted(pinned.prompts.keys() | current.prompts.keys())
              if pinned.prompts.get(name) != current.prompts.get(name)]
    found += [f"dataset of eval {name} changed" for name in sorted(pinned.datasets.keys() | current.datasets.keys())
              if pinned.datasets.get(name) != current.datasets.get(name)]
    if pinned.prices != current.prices:
        found.append(f"prices {pinned.prices} -> {current.prices}")
    if pinned.api_prices != current.api_prices:
        found.append(f"hosted-API prices {pinned.api_prices} -> {current.api_prices}")
    return found or ["its entries differ"]


def _pin(entry: ModelLock | None) -> str:
    if entry is None:
        return "absent"
    pin = entry.sha or entry.file_sha256
    return f"{entry.source}@{pin[:12]}" if pin else entry.source


def workspace_of(loaded: LoadedConfig) -> Workspace:
    return Workspace(loaded.path, loaded.config.project, loaded.config.environment)
