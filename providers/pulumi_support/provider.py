"""What the Pulumi-backed providers (aws, kubernetes) share: resources from the program run under mocks, plans
from `pulumi preview` when the CLI is installed (offline diffs of the mock capture otherwise), and apply, destroy
and refresh through the Automation API."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmctl.checks import Check
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.provider import ApplyContext, Operation, diff_resources
from llmctl.resolve import Resolved
from llmctl.resource import Resource, ResourceChange
from providers.pulumi_support import events
from providers.pulumi_support.capture import SENSITIVE, Calls, capture, plain
from providers.pulumi_support.naming import address_of, as_declared

INSTALL_HELP = (
    "the pulumi CLI is not installed, so {provider} resources cannot be applied (plans work without it). "
    "Install it (curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/), choose a "
    "backend (pulumi login --local, or a backend URL), provide the cloud credentials, then run llmctl apply again"
)
OFFLINE = ("planned offline: the Pulumi program ran under Pulumi's mocks{why}, so there is no drift detection and "
           "values the cloud assigns are shown as (known after apply)")

Program = Callable[[Resolved, str], Callable[[], None]]


class PulumiProvider:
    """Subclasses set `name`, `program`, `calls`, `replace_on` (per resource type, the inputs whose change makes
    the cloud replace the resource rather than update it) and `serving_type` (the resource whose attributes carry
    a model's endpoints)."""

    name: str
    program: Program
    calls: Calls = staticmethod(lambda token, args: {})  # type: ignore[assignment]
    replace_on: dict[str, frozenset[str]] = {}
    serving_type: str

    def check(self, resolved: Resolved, target: str) -> list[Check]:
        return []

    def resources(self, resolved: Resolved, target: str) -> list[Resource]:
        desired = resolved.desired
        try:
            captured = capture(self.program(resolved, target), project=desired.project,
                               stack=stack_name(desired, target), calls=type(self).calls)
        except ValueError as exc:  # the program refuses a config it cannot build (e.g. a pkg:// model on aws)
            raise LlmctlError(f"target '{target}': {exc}") from None
        ids = frozenset(f"{item.name}-id" for item in captured)  # what the mocks answered: not known before apply
        resources = []
        for item in captured:
            address, owner = address_of(item.type, item.name)
            resources.append(Resource(address=address, type=item.type, owner=owner, provider=self.name,
                                      target=target, spec=as_declared(plain(item.inputs, ids)), attrs={"name": item.name}))
        return resources

    def refresh(self, resources: list[Resource]) -> tuple[list[Resource], dict[str, str]]:
        """With the CLI, `pulumi refresh --preview-only` on the stack the last apply recorded: resources deleted
        outside llmctl are gone, changed ones carry the changed outputs as their drift. Offline there is
        nothing to observe, so what the last apply recorded is taken as what exists."""
        recorded = [r for r in resources if r.attrs.get("stack")]
        if not recorded or not cli_available():
            return list(resources), {}
        stack = self._select(recorded[0].attrs)
        seen: list[events.EngineEvent] = []
        _run(stack.preview_refresh, f"target '{recorded[0].target}': pulumi refresh", on_event=seen.append)
        drift = events.refresh_drift(seen)
        current, gone = [], {}
        for resource in resources:
            name = resource.attrs.get("name", "")
            if name in drift.gone:
                gone[resource.address] = drift.gone[name]
                continue
            current.append(resource.model_copy(update={"drift": drift.changed.get(name, [])}))
        return current, gone

    def plan(self, resolved: Resolved, target: str, desired: list[Resource], current: list[Resource],
             gone: dict[str, str]) -> tuple[list[ResourceChange], list[Check]]:
        if target not in resolved.desired.targets or not desired:  # a removed target: everything recorded goes
            return diff_resources(desired, current, gone, replaces=self._forced), []
        if not cli_available():
            return (diff_resources(desired, current, gone, replaces=self._forced),
                    [self._offline(target, " (no pulumi CLI)")])
        try:
            return self._preview(resolved, target, desired), []
        except LlmctlError as exc:  # no credentials, as in CI on pull requests: the mock plan still reviews
            return (diff_resources(desired, current, gone, replaces=self._forced),
                    [self._offline(target, f" because pulumi preview failed ({exc})")])

    def preflight(self, resolved: Resolved, target: str, action: Operation) -> list[str]:
        return [] if cli_available() else [INSTALL_HELP.format(provider=self.name)]

    def apply(self, changes: list[ResourceChange], desired: list[Resource], current: list[Resource],
              ctx: ApplyContext) -> list[Resource]:
        """`pulumi up` of the same program; every declared resource is recorded with its urn and id, and the
        serving resource of each model with the endpoints and instances the program exports."""
        config, target = ctx.resolved.desired, ctx.target
        stack, backend = self._stack(ctx.resolved, target)
        seen: list[events.EngineEvent] = []
        result = _run(stack.up, f"target '{target}': pulumi up", on_event=seen.append,
                      on_output=lambda line: ctx.progress(f"target.{target}", line.strip()))
        applied = events.applied_outputs(seen)
        outputs = {key: SENSITIVE if value.secret else value.value for key, value in result.outputs.items()}
        return [self._recorded(resource, stack.name, backend, config.project, applied, outputs)
                for resource in desired]

    def destroy(self, resources: list[Resource], ctx: ApplyContext) -> None:
        if not resources:
            return
        target = ctx.target
        stack, _ = self._stack(ctx.resolved, target)
        _run(stack.destroy, f"target '{target}': pulumi destroy",
             on_output=lambda line: ctx.progress(f"target.{target}", line.strip()))
        ctx.persist([])

    def health(self, resource: Resource) -> str:
        return "unknown: cloud resources are read with the pulumi CLI (llmctl plan shows what is recorded)"

    def _preview(self, resolved: Resolved, target: str, desired: list[Resource]) -> list[ResourceChange]:
        stack, _ = self._stack(resolved, target)
        seen: list[events.EngineEvent] = []
        # refresh=True: drift is read from the cloud first, so the preview also repairs what changed outside llmctl
        _run(stack.preview, f"target '{target}': pulumi preview", diff=True, refresh=True, on_event=seen.append)
        addresses = {r.attrs["name"]: (r.address, r.owner) for r in desired}
        return events.preview_changes(seen, addresses, self.name, target)

    def _stack(self, resolved: Resolved, target: str) -> tuple[Any, str]:
        from pulumi import automation as auto  # the Automation API drives the CLI, so only load it when there is one

        config = resolved.desired
        backend = os.environ.get("PULUMI_BACKEND_URL") or f"file://{resolved.workspace.run_dir / 'pulumi'}"
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        settings = auto.ProjectSettings(name=config.project, runtime="python", backend=auto.ProjectBackend(url=backend))
        stack = _run(auto.create_or_select_stack, f"target '{target}': pulumi stack",
                     stack_name=stack_name(config, target), project_name=config.project,
                     program=self.program(resolved, target),
                     opts=auto.LocalWorkspaceOptions(project_settings=settings))
        return stack, backend

    def _select(self, attrs: dict[str, Any]) -> Any:
        from pulumi import automation as auto

        settings = auto.ProjectSettings(name=attrs["project"], runtime="python",
                                        backend=auto.ProjectBackend(url=attrs["backend"]))
        return _run(auto.select_stack, f"stack '{attrs['stack']}'", stack_name=attrs["stack"],
                    project_name=attrs["project"], program=lambda: None,
                    opts=auto.LocalWorkspaceOptions(project_settings=settings))

    def _recorded(self, resource: Resource, stack: str, backend: str, project: str,
                  applied: dict[str, dict[str, Any]], outputs: dict[str, Any]) -> Resource:
        name = resource.attrs["name"]
        attrs: dict[str, Any] = {"name": name, "stack": stack, "backend": backend, "project": project,
                                 **applied.get(name, {})}
        if resource.type == self.serving_type:
            # Not the resource's `endpoint`, which the SLO verifier load-tests: these answer only inside the VPC or
            # cluster.
            attrs.update(endpoints=outputs.get(f"{resource.owner}.endpoints") or [],
                         instances=outputs.get(f"{resource.owner}.instances") or [])
        return resource.model_copy(update={"attrs": attrs})

    def _offline(self, target: str, why: str) -> Check:
        return Check(severity="info", address=f"target.{target}", message=OFFLINE.format(why=why))

    def _forced(self, resource_type: str, changed: list[str]) -> list[str]:
        forcing = self.replace_on.get(resource_type, frozenset())
        return [path for path in changed if any(path == f or path.startswith(f + ".") for f in forcing)]


def _run(operation: Callable[..., Any], what: str, **kwargs: Any) -> Any:
    """An Automation API call whose failure (no credentials, a cloud error) becomes the engine's own message."""
    from pulumi import automation as auto

    try:
        return operation(**kwargs)
    except auto.CommandError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
        raise LlmctlError(f"{what} failed: {' '.join(lines[-3:]) or exc}") from None


def stack_name(desired: Desired, target: str) -> str:
    return f"{desired.environment}-{target}"


def cli_available() -> bool:
    return shutil.which("pulumi") is not None
