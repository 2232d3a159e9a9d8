"""Pulumi engine events → llmctl's resource changes, drift and recorded outputs.

The Automation API hands every engine event to `on_event` as an `auto.EngineEvent` parsed from the CLI's JSON
event stream (the shapes in pulumi's sdk/go/common/apitype/events.go). A preview emits one `resourcePreEvent` per
step; a replacement is one `replace` step flanked by `create-replacement` and `delete-replaced`, which say nothing
more. An update emits `resOutputsEvent` with what the cloud returned; a refresh preview emits `refresh` steps whose
old/new outputs differ when something changed outside llmctl.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pulumi.automation import EngineEvent, OpType, StepEventMetadata

from llmctl.resource import ResourceChange
from providers.pulumi_support.capture import plain
from providers.pulumi_support.naming import address_of, as_declared, declared_path

# Engine bookkeeping, not cloud resources.
_INTERNAL_TYPES = ("pulumi:pulumi:Stack",)
_INTERNAL_PREFIXES = ("pulumi:providers:",)
_ACTIONS = {OpType.CREATE: "create", OpType.UPDATE: "update", OpType.REPLACE: "replace", OpType.DELETE: "delete",
            OpType.IMPORT: "create"}


@dataclass
class Drift:
    """What a refresh observed: resources deleted outside llmctl and the outputs that changed on the others."""

    gone: dict[str, str] = field(default_factory=dict)  # resource name -> why
    changed: dict[str, list[str]] = field(default_factory=dict)  # resource name -> changed output keys


def urn_name(urn: str) -> str:
    """urn:pulumi:STACK::PROJECT::[PARENT$]TYPE::NAME -> NAME."""
    return urn.rsplit("::", 1)[-1]


def _cloud(step: StepEventMetadata) -> bool:
    return not (step.type in _INTERNAL_TYPES or step.type.startswith(_INTERNAL_PREFIXES))


def _steps(events: Iterable[EngineEvent]) -> Iterable[StepEventMetadata]:
    for event in events:
        if event.resource_pre_event is not None and _cloud(event.resource_pre_event.metadata):
            yield event.resource_pre_event.metadata


def preview_changes(events: Iterable[EngineEvent], addresses: dict[str, tuple[str, str]], provider: str,
                    target: str) -> list[ResourceChange]:
    """The changes a `stack.preview(diff=True)` reported. `addresses` maps a resource name to (address, owner),
    as the offline plan names them, so both plans read the same."""
    changes = []
    for step in _steps(events):
        action = _ACTIONS.get(step.op)
        if action is None:  # same, read, refresh and the halves of a replacement
            continue
        name = urn_name(step.urn)
        address, owner = addresses.get(name) or address_of(step.type, name)
        changes.append(ResourceChange(
            address=address, owner=owner, provider=provider, target=target, action=action,
            reason=_reason(step, action),
            before=as_declared(plain(step.old.inputs)) if step.old and step.old.inputs is not None else None,
            after=as_declared(plain(step.new.inputs)) if step.new and step.new.inputs is not None else None))
    return changes


def _reason(step: StepEventMetadata, action: str) -> str | None:
    if action == "replace":
        return f"{_paths(step.keys or sorted(step.detailed_diff or {}))} changed (forces replacement)"
    if action == "update":
        return f"{_paths(sorted(step.detailed_diff or {}) or step.diffs or [])} changed"
    if step.op == OpType.IMPORT:
        return "imported"
    return None


def _paths(paths: list[str]) -> str:
    return ", ".join(declared_path(path) for path in paths)


def refresh_drift(events: Iterable[EngineEvent]) -> Drift:
    """What a `stack.preview_refresh()` found changed outside llmctl."""
    drift = Drift()
    for step in _steps(events):
        name = urn_name(step.urn)
        if step.op == OpType.DELETE or (step.op == OpType.REFRESH and step.new is None):
            drift.gone[name] = "deleted outside llmctl (found by pulumi refresh)"
        elif step.op in (OpType.REFRESH, OpType.UPDATE):
            old = as_declared(plain(step.old.outputs or {})) if step.old else {}
            new = as_declared(plain(step.new.outputs or {})) if step.new else {}
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if keys or step.diffs:
                drift.changed[name] = keys or [declared_path(path) for path in step.diffs or []]
    return drift


def applied_outputs(events: Iterable[EngineEvent]) -> dict[str, dict[str, Any]]:
    """resource name -> {urn, id} of every resource an update created or kept, from its outputs events."""
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.res_outputs_event is None:
            continue
        step = event.res_outputs_event.metadata
        if not _cloud(step) or step.new is None:
            continue
        found[urn_name(step.urn)] = {"urn": step.urn, "id": step.new.id}
    return found

