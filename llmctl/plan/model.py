"""The Plan: the one object every plan output is rendered from, and what a saved plan file holds.

`schemas/plan.schema.json` is generated from `Plan`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["create", "update", "replace", "delete"]
Severity = Literal["error", "warning", "info"]


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


class ResourceChange(BaseModel):
    """A provider resource (a process, a cloud resource) that will change."""

    address: str = Field(description="TYPE.NAME[INDEX], e.g. local_process.assistant[0]")
    owner: str = Field(description="The object it serves, e.g. model.assistant")
    provider: str
    target: str
    action: Action
    reason: str | None = None
    deposed: bool = Field(False, description="The old object of a replace that an interrupted apply left behind.")
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class Drift(BaseModel):
    """A resource that changed outside llmctl, found by a refresh (`llmctl plan --refresh-only`)."""

    address: str
    owner: str
    provider: str
    target: str
    kind: Literal["deleted", "changed"]
    detail: str = Field(description="What was observed: why it is gone, or which attributes changed.")


class Check(BaseModel):
    severity: Severity
    address: str | None = None
    message: str


class Summary(BaseModel):
    add: int
    change: int
    destroy: int


class Plan(BaseModel):
    model_config = ConfigDict(title="llmctl plan")

    format_version: Literal[1] = 1
    project: str
    environment: str
    config_path: str
    created_at: str
    state_serial: int = Field(description="The serial of the state this plan was made against; apply refuses a moved one.")
    state_lineage: str
    changes: list[Change]
    resource_changes: list[ResourceChange]
    summary: Summary
    cost: dict[str, Any] | None = Field(
        None, description="The cost estimate and budget verdict (llmctl.cost.model.PlanCost); absent without pricing.")
    checks: list[Check]
    desired: dict[str, Any] = Field(description="The desired configuration this plan applies.")
    refresh_only: bool = Field(False, description="Made by --refresh-only: reports drift and changes nothing.")
    drift: list[Drift] = Field(default_factory=list, description="Resources changed outside llmctl.")

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.resource_changes or self.drift)

    @property
    def budget_blocked(self) -> list[str]:
        """Budgets with on_exceed: block that this plan exceeds, unless --allow-over-budget was given."""
        if not self.cost or self.cost.get("allow_over_budget"):
            return []
        return list(self.cost.get("blocked_by", []))

    @property
    def errors(self) -> list[Check]:
        return [check for check in self.checks if check.severity == "error"]

    def resource_changes_of(self, owner: str) -> list[ResourceChange]:
        return [rc for rc in self.resource_changes if rc.owner == owner]
