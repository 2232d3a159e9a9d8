"""The Plan: the one object every plan output is rendered from, and what a saved plan file holds.

`schemas/plan.schema.json` is generated from `Plan`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmctl.checks import Check
from llmctl.config.schema import Config
from llmctl.cost.model import PlanCost
from llmctl.lock import Lock
from llmctl.resource import Action, ResourceChange


class DiffEntry(BaseModel):
    """One changed value inside an object; `path` is dotted with [i] for list items (`engine_args.dtype`)."""

    path: str
    op: Literal["add", "remove", "change"]
    before: Any = None
    after: Any = None
    lines: list[str] | None = Field(None, description="Line diff ('- old', '+ new', '  same') for prompt text.")
    forces_replacement: bool = False


class Change(BaseModel):
    """A declared object (model, prompt, target, ...) that will change."""

    address: str = Field(description="KIND.NAME, e.g. model.assistant or prompt.support-answer")
    action: Action
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diff: list[DiffEntry] = Field(default_factory=list)
    reason: str | None = Field(None, description="Why, when the config diff alone does not say (drift).")


class Drift(BaseModel):
    """A resource that changed outside llmctl, found by a refresh (`llmctl plan --refresh-only`)."""

    address: str
    owner: str
    provider: str
    target: str
    kind: Literal["deleted", "changed"]
    detail: str = Field(description="What was observed: why it is gone, or which attributes changed.")


def touched(changes: list[Change], resource_changes: list[ResourceChange]) -> set[str]:
    """The objects (`model.NAME`, `prompt.NAME`, ...) created or changed, in their config or their resources."""
    return ({c.address for c in changes if c.action != "delete"}
            | {rc.owner for rc in resource_changes if rc.action != "delete"})


class Summary(BaseModel):
    add: int
    change: int
    destroy: int


class Plan(BaseModel):
    model_config = ConfigDict(title="llmctl plan")

    format_version: Literal[2] = 2
    project: str
    environment: str
    config_path: str
    created_at: str
    state_serial: int = Field(description="The serial of the state this plan was made against; apply refuses a moved one.")
    state_lineage: str
    changes: list[Change]
    resource_changes: list[ResourceChange]
    summary: Summary
    cost: PlanCost | None = Field(None, description="The cost estimate and budget verdict; absent for a "
                                  "destroy or refresh-only plan.")
    checks: list[Check]
    desired: Config = Field(description="The desired configuration this plan applies (normalised).")
    lock: Lock | None = Field(None, description="The lock entries this plan was made with: apply deploys exactly "
                              "these, and refuses when llmops.lock says otherwise.")
    refresh_only: bool = Field(False, description="Made by --refresh-only: reports drift and changes nothing.")
    drift: list[Drift] = Field(default_factory=list, description="Resources changed outside llmctl.")
    evals: list[str] = Field(default_factory=list, description="MODEL/EVAL: the evals apply runs after the SLO "
                             "check, for the models whose model, prompt, guardrails or evals this plan changes.")
    rollouts: dict[str, str] = Field(default_factory=dict, description="Models whose change apply rolls out "
                                     "(model -> the rollout in `rollouts:`) instead of changing them at once.")

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.resource_changes or self.drift)

    @property
    def touched(self) -> set[str]:
        return touched(self.changes, self.resource_changes)

    @property
    def budget_blocked(self) -> list[str]:
        """Budgets with on_exceed: block that this plan exceeds, unless --allow-over-budget was given."""
        if not self.cost or self.cost.allow_over_budget:
            return []
        return list(self.cost.blocked_by)

    @property
    def errors(self) -> list[Check]:
        return [check for check in self.checks if check.severity == "error"]

    def resource_changes_of(self, owner: str) -> list[ResourceChange]:
        return [rc for rc in self.resource_changes if rc.owner == owner]
