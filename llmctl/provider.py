"""The one small interface every provider implements, owned by the engine as Terraform's core owns its provider
protocol: providers import these types; the engine never imports a provider (llmctl/providers.py finds them
through the entry-point group `llmctl.providers`, so a third party can add one).

A provider gets the Resolved context (the Desired config, the lock entries pinned for this run, the price catalog,
the workspace) and the name of one of its targets; it never reads YAML, the lock or the catalog itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from llmctl.checks import Check
from llmctl.plan.diff import diff_object
from llmctl.resource import Resource, ResourceChange

if TYPE_CHECKING:
    from llmctl.resolve import Resolved

Operation = Literal["apply", "destroy"]


@dataclass
class ApplyContext:
    """What a provider needs from the engine while it applies or destroys one target."""

    resolved: Resolved  # the config being applied (for destroy and rollback: the one last applied)
    target: str
    # Called after every step with every resource that now exists for this target, so a crash mid-apply
    # leaves a state that says which resources exist.
    persist: Callable[[list[Resource]], None]
    # (address, status text) for the progress display; status "ready", "stopped", "failed: ..." end a line.
    progress: Callable[[str, str], None] = lambda address, status: None
    ready_timeout: float = 300.0

    @property
    def run_dir(self) -> Path:
        """This (project, environment)'s directory under .llmctl/: logs and provider files go here."""
        return self.resolved.workspace.run_dir


class ProviderError(Exception):
    """A provider could not do what was asked; the message names the resource and what to do."""


@runtime_checkable
class Provider(Protocol):
    name: str

    def check(self, resolved: Resolved, target: str) -> list[Check]:
        """Problems planning would hit for the models on `target` (engine not installed, file missing...)."""

    def resources(self, resolved: Resolved, target: str) -> list[Resource]:
        """The resources the models on `target` need."""

    def refresh(self, resources: list[Resource]) -> tuple[list[Resource], dict[str, str]]:
        """The recorded resources that still exist, with what is observed now, and {address: why} for gone ones."""

    def plan(self, resolved: Resolved, target: str, desired: list[Resource], current: list[Resource],
             gone: dict[str, str]) -> tuple[list[ResourceChange], list[Check]]:
        """What apply would do to turn `current` (refreshed) into `desired`; `gone` is drift to repair. The checks
        say how the plan was made when that matters to a reviewer (e.g. offline, without drift detection)."""

    def preflight(self, resolved: Resolved, target: str, action: Operation) -> list[str]:
        """Every reason `action` on `target` would fail here (a missing CLI; for apply also an engine not installed,
        a model file missing or changed, a key variable not set), found before anything changes on any target."""

    def apply(self, changes: list[ResourceChange], desired: list[Resource], current: list[Resource],
              ctx: ApplyContext) -> list[Resource]:
        """Carry out `changes`; returns every resource that now exists on the target."""

    def destroy(self, resources: list[Resource], ctx: ApplyContext) -> None:
        """Remove every resource given; nothing may be left running."""

    def health(self, resource: Resource) -> str:
        """'healthy', 'unhealthy: why' or 'gone'."""


def diff_resources(desired: list[Resource], current: list[Resource], gone: dict[str, str],
                   replaces: Callable[[str, list[str]], list[str]] | None = None) -> list[ResourceChange]:
    """Create what is missing, change what differs in spec, delete what is no longer wanted.

    `gone` holds resources recorded in state that no longer exist (drift): they are re-created with that reason.
    Without `replaces`, any change replaces (a process cannot be reconfigured); with it, a change is an update in
    place unless `replaces(type, changed paths)` names the paths that force a replacement.
    """
    have = {(r.address, r.version): r for r in current if not r.deposed}
    changes: list[ResourceChange] = []
    for want in desired:
        old = have.get((want.address, want.version))
        common = dict(address=want.address, owner=want.owner, provider=want.provider, target=want.target,
                      version=want.version)
        if old is None:
            reason = f"drift: {gone[want.address]}" if want.address in gone else None
            changes.append(ResourceChange(**common, action="create", reason=reason, after=want.spec))
        elif old.spec != want.spec and replaces is None:
            changed = sorted(k for k in set(old.spec) | set(want.spec) if old.spec.get(k) != want.spec.get(k))
            changes.append(ResourceChange(**common, action="replace", reason=f"{', '.join(changed)} changed",
                                          before=old.spec, after=want.spec))
        elif old.spec != want.spec:
            paths = [entry.path for entry in diff_object("resource", old.spec, want.spec)]
            forced = replaces(want.type, paths)
            reason = (f"{', '.join(forced)} changed (forces replacement)" if forced else
                      f"{', '.join(paths)} changed")
            changes.append(ResourceChange(**common, action="replace" if forced else "update", reason=reason,
                                          before=old.spec, after=want.spec))
    wanted = {(r.address, r.version) for r in desired}
    changes += [
        ResourceChange(address=r.address, owner=r.owner, provider=r.provider, target=r.target, action="delete",
                       before=r.spec, deposed=r.deposed, version=r.version,
                       reason="left behind by an interrupted replace" if r.deposed else None)
        for r in current
        if r.deposed or (r.address, r.version) not in wanted
    ]
    return changes
