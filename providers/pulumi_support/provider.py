"""What the Pulumi-backed providers (aws, kubernetes) share: resources from the program run under mocks, plans that
tell update from replace, and apply/destroy through the Automation API when the pulumi CLI is installed."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.plan.model import Check, ResourceChange
from providers.base import ApplyContext, Resource, diff_resources
from providers.pulumi_support.capture import Calls, Captured, capture

KNOWN_AFTER_APPLY = "(known after apply)"
INSTALL_HELP = (
    "the pulumi CLI is not installed, so {provider} resources cannot be applied (plans work without it). "
    "Install it (curl -fsSL https://get.pulumi.com | sh, or see https://www.pulumi.com/docs/install/), choose a "
    "backend (pulumi login --local, or a backend URL), provide the cloud credentials, then run llmctl apply again"
)

Program = Callable[[Desired, str, dict[str, dict[str, Any]] | None], Callable[[], None]]


class PulumiProvider:
    """Subclasses set `name`, `program`, `calls`, and `replace_on`: per resource type, the inputs whose change
    makes the cloud replace the resource rather than update it."""

    name: str
    program: Program
    calls: Calls = staticmethod(lambda token, args: {})  # type: ignore[assignment]
    replace_on: dict[str, frozenset[str]] = {}

    def check(self, desired: Desired, target: str) -> list[Check]:
        if cli_available():
            return []
        return [Check(severity="info", address=f"target.{target}", message=(
            "planned offline: the Pulumi program ran under Pulumi's mocks (no pulumi CLI), so there is no drift "
            "detection and values the cloud assigns are shown as (known after apply)"))]

    def resources(self, desired: Desired, target: str) -> list[Resource]:
        lock = desired_lock(desired)
        try:
            captured = capture(self.program(desired, target, lock), project=desired.project,
                               stack=f"{desired.environment}-{target}", calls=type(self).calls)
        except ValueError as exc:  # the program refuses a config it cannot build (e.g. a pkg:// model on aws)
            raise LlmctlError(f"target '{target}': {exc}") from None
        ids = {f"{item.name}-id" for item in captured}  # what the mocks answered as ids: not known before apply
        return [self._resource(item, target, ids) for item in captured]

    def refresh(self, resources: list[Resource]) -> tuple[list[Resource], dict[str, str]]:
        # Offline there is nothing to observe: what the last apply recorded is taken as what exists.
        return list(resources), {}

    def plan(self, desired: list[Resource], current: list[Resource], gone: dict[str, str]) -> list[ResourceChange]:
        return diff_resources(desired, current, gone, replaces=self._forced)

    def preflight(self, target: str) -> None:
        if not cli_available():
            raise LlmctlError(INSTALL_HELP.format(provider=self.name) + f" (target '{target}')")

    def apply(self, changes: list[ResourceChange], desired: list[Resource], current: list[Resource],
              ctx: ApplyContext) -> list[Resource]:
        """`pulumi up` of the same program through the Automation API; what it declared is what now exists."""
        config: Desired = ctx.extra["desired"]
        target = ctx.extra["target"]
        self.preflight(target)
        stack = self._stack(config, target, ctx)
        stack.up(on_output=lambda line: ctx.progress(f"target.{target}", line.strip()))
        return [resource.model_copy(update={"attrs": {"stack": stack.name}}) for resource in desired]

    def destroy(self, resources: list[Resource], ctx: ApplyContext) -> None:
        if not resources:
            return
        target = resources[0].target
        self.preflight(target)
        stack = self._stack(ctx.extra["desired"], target, ctx)
        stack.destroy(on_output=lambda line: ctx.progress(f"target.{target}", line.strip()))
        ctx.persist([])

    def _stack(self, config: Desired, target: str, ctx: ApplyContext) -> Any:
        from pulumi import automation as auto  # the Automation API drives the CLI, so only load it when there is one

        backend = os.environ.get("PULUMI_BACKEND_URL") or f"file://{ctx.run_dir / 'pulumi'}"
        if backend.startswith("file://"):
            Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        settings = auto.ProjectSettings(name=config.project, runtime="python", backend=auto.ProjectBackend(url=backend))
        return auto.create_or_select_stack(
            stack_name=f"{config.environment}-{target}", project_name=config.project,
            program=self.program(config, target, desired_lock(config)),
            opts=auto.LocalWorkspaceOptions(project_settings=settings))

    def health(self, resource: Resource) -> str:
        return "unknown: cloud resources are read with the pulumi CLI (llmctl plan shows what is recorded)"

    def _forced(self, resource_type: str, changed: list[str]) -> list[str]:
        forcing = self.replace_on.get(resource_type, frozenset())
        return [path for path in changed if any(path == f or path.startswith(f + ".") for f in forcing)]

    def _resource(self, item: Captured, target: str, ids: set[str]) -> Resource:
        owner, _, suffix = item.name.partition("/")
        return Resource(address=f"{address_type(item.type)}.{owner.split('.', 1)[-1]}/{suffix}", type=item.type,
                        owner=owner, provider=self.name, target=target, spec=normalise(item.inputs, ids))


def cli_available() -> bool:
    return shutil.which("pulumi") is not None


def desired_lock(desired: Desired) -> dict[str, dict[str, Any]] | None:
    """The lock entries of the config's models, read from llmops.lock beside it, when there is one."""
    from llmctl.lock import lock_path, read_lock  # the lock module pulls in the hub client only when used

    lock = read_lock(lock_path(desired.config_dir / "llmops.yaml"))
    return {name: entry.model_dump() for name, entry in lock.models.items()} if lock else None


def address_type(pulumi_type: str) -> str:
    """aws:autoscaling/group:Group -> aws_autoscaling_group; kubernetes:apps/v1:Deployment ->
    kubernetes_apps_deployment: package, module and kind, as Terraform-style addresses read."""
    package, module, kind = (pulumi_type.split(":") + ["", ""])[:3]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    return "_".join(part for part in (package, module.split("/")[0], snake) if part)


def normalise(value: Any, ids: set[str]) -> Any:
    """Whole floats back to ints (the mock wire format has only floats) and ids of resources not created yet as
    (known after apply)."""
    if isinstance(value, dict):
        return {key: normalise(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise(item, ids) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value in ids:
        return KNOWN_AFTER_APPLY
    return value
