"""The local provider: every replica of a model is a real server process on this machine."""
from __future__ import annotations

import hashlib
import time
from functools import partial
from pathlib import Path
from typing import Any

from llmctl.checks import Check
from llmctl.config.schema import Model
from llmctl.config.sources import SourceNotFound, local_path
from llmctl.gateway import build
from llmctl.provider import ApplyContext, Operation, ProviderError, diff_resources
from llmctl.resolve import Resolved
from llmctl.lock import ModelLock
from llmctl.resource import Resource, ResourceChange, Version
from providers.local import gateway, monitoring, process
from providers.local.engines import command, missing

RESOURCE_TYPE = gateway.PROCESS_TYPE
# The gateway answers /v1/models only to a key holder; /health to anyone.
_READY_PATH = {RESOURCE_TYPE: "/v1/models", gateway.GATEWAY_TYPE: "/health",
               **{kind: monitoring.READY_PATH for kind in monitoring.TYPES}}
_POLL_SECONDS = 0.25


class LocalProvider:
    name = "local"

    def check(self, resolved: Resolved, target: str) -> list[Check]:
        desired = resolved.desired
        checks = []
        for model in desired.models_on(target):
            address = f"model.{model.name}"
            problem = missing(model.engine or "")
            if problem:
                checks.append(Check(severity="error", address=address, message=problem))
            source = model.parsed_source
            if model.engine == "llama-cpp":
                if source.scheme == "hf":
                    checks.append(Check(severity="error", address=address, message=(
                        "llama-cpp on a local target serves a GGUF file: use pkg://, file:// or a path as source")))
                else:
                    try:
                        local_path(source, desired.config_dir)
                    except SourceNotFound as exc:
                        checks.append(Check(severity="error", address=address, message=str(exc)))
            if model.gpu or model.instance_type:
                checks.append(Check(severity="warning", address=address,
                                    message="gpu and instance_type are ignored on a local target"))
        if gateway.home(desired) == target:
            checks += build.checks(resolved, gateway.local_targets(desired))
        return checks

    def resources(self, resolved: Resolved, target: str) -> list[Resource]:
        desired = resolved.desired
        resources = []
        for model in desired.models_on(target):
            resources += self._replicas(model, _spec(model, resolved.locked(model.name), resolved), target)
            canary = desired.canaries.get(model.name)
            if canary is not None and canary.servers:
                resources += self._replicas(canary.model, _spec(canary.model, canary.lock, resolved), target,
                                            "canary")
        front = gateway.resource(resolved, target)
        return resources + ([front] if front else []) + monitoring.resources(resolved, target)

    def _replicas(self, model: Model, spec: dict[str, Any], target: str, version: Version = "stable") -> list[Resource]:
        count = model.replicas if isinstance(model.replicas, int) else model.replicas.min
        return [Resource(address=f"{RESOURCE_TYPE}.{model.name}[{index}]", type=RESOURCE_TYPE,
                         owner=f"model.{model.name}", provider=self.name, target=target, spec=spec, version=version)
                for index in range(count)]

    def refresh(self, resources: list[Resource]) -> tuple[list[Resource], dict[str, str]]:
        current, gone = [], {}
        for resource in resources:
            if resource.type == gateway.GATEWAY_TYPE:
                # Gone when none of its processes runs; while one does, the others that exited are its drift
                # (apply starts them again beside it).
                exited = gateway.exited(resource)
                if len(exited) < len(gateway.processes(resource)):
                    current.append(resource.model_copy(update={"drift": [f"processes[{i}]" for i in exited]}))
                    continue
            elif process.find(resource.attrs["pid"], resource.attrs["create_time"]):
                current.append(resource)
                continue
            if not resource.deposed:
                gone[resource.address] = f"pid {resource.attrs['pid']} is no longer running"
        return current, gone

    def plan(self, resolved: Resolved, target: str, desired: list[Resource], current: list[Resource],
             gone: dict[str, str]) -> tuple[list[ResourceChange], list[Check]]:
        changes = diff_resources(desired, current, gone)
        changed = {(c.address, c.version) for c in changes}
        for have in current:  # a gateway replica that exited, while the others serve: started again
            key = (have.address, have.version)
            want = next((r for r in desired if (r.address, r.version) == key), None)
            if have.type == gateway.GATEWAY_TYPE and have.drift and want and key not in changed:
                why = "; ".join(gateway.exited(have).values()) or ", ".join(have.drift) + " exited"
                changes.append(ResourceChange(address=want.address, owner=want.owner, provider=want.provider,
                                              target=want.target, version=want.version, action="update",
                                              reason=f"drift: {why}", before=have.spec, after=want.spec))
        return changes, []

    def preflight(self, resolved: Resolved, target: str, action: Operation) -> list[str]:
        """What the plan checked may no longer hold where and when apply runs (a saved plan applied later, or on
        another machine): engines, the pinned model files, and the gateway's keys. Stopping processes needs none
        of them."""
        if action == "destroy":
            return []
        desired = resolved.desired
        problems = []
        for model in desired.models_on(target):
            problem = missing(model.engine or "")
            if problem:
                problems.append(f"model {model.name}: {problem}")
            source = model.parsed_source
            if source.scheme in ("pkg", "file"):
                problems += [f"model {model.name}: {why}" for why in _pinned_file_problems(model, resolved)]
        if gateway.home(desired) == target:
            problems += build.key_problems(desired) + build.dsn_problems(desired) + monitoring.preflight(desired)
        return problems

    def apply(self, changes: list[ResourceChange], desired: list[Resource], current: list[Resource],
              ctx: ApplyContext) -> list[Resource]:
        wanted = {(resource.address, resource.version): resource for resource in desired}
        live = list(current)
        # The gateway follows the replicas (it needs their ports), and monitoring follows the gateway (it scrapes it),
        # whatever their own changes were.
        changes = [c for c in changes if c.address.split(".")[0] not in (gateway.GATEWAY_TYPE, *monitoring.TYPES)]

        # New processes start beside the ones they replace; the old ones stop only once the new ones answer.
        starting: list[Resource] = []
        for change in changes:
            if change.action not in ("create", "replace"):
                continue
            if change.action == "replace":
                live = [_deposed(r) if (r.address, r.version) == (change.address, change.version) else r
                        for r in live]
            new = self._start(wanted[(change.address, change.version)], ctx)
            starting.append(new)
            live.append(new)
            ctx.persist(live)

        failed = self._await_ready(starting, ctx)
        for resource in failed:
            process.stop(resource.attrs["pid"], resource.attrs["create_time"])
            # A replacement that failed leaves the old process serving.
            live = [_kept(r) if (r.address, r.version) == (resource.address, resource.version) else r
                    for r in live if r is not resource]
        ctx.persist(live)

        ready = {(r.address, r.version) for r in starting if r not in failed}
        deletes = {(c.address, c.version, c.deposed) for c in changes if c.action == "delete"}
        for resource in [r for r in live if _stops(r, ready, deletes)]:
            ctx.progress(resource.label, "stopping" + (" (replaced)" if resource.deposed else ""))
            process.stop(resource.attrs["pid"], resource.attrs["create_time"])
            live.remove(resource)
            ctx.persist(live)
            ctx.progress(resource.label, "stopped")

        if failed:
            raise ProviderError("\n\n".join(resource.attrs["failure"] for resource in failed))
        front = next((r for r in desired if r.type == gateway.GATEWAY_TYPE), None)
        for converge in (partial(gateway.converge, front), partial(monitoring.converge, desired)):
            before = {id(r) for r in live}
            live = converge(live, ctx)
            ctx.persist(live)
            self._ready_or_raise([r for r in live if id(r) not in before], ctx)
        return live

    def _ready_or_raise(self, started: list[Resource], ctx: ApplyContext) -> None:
        failed = self._await_ready(started, ctx)
        if failed:
            raise ProviderError("\n\n".join(resource.attrs["failure"] for resource in failed))

    def destroy(self, resources: list[Resource], ctx: ApplyContext) -> None:
        remaining = list(resources)
        for resource in resources:
            ctx.progress(resource.label, "stopping")
            if resource.type == gateway.GATEWAY_TYPE:
                gateway.stop(resource)  # every replica
            else:
                process.stop(resource.attrs["pid"], resource.attrs["create_time"])
            remaining.remove(resource)
            ctx.persist(remaining)
            ctx.progress(resource.label, "stopped")

    def health(self, resource: Resource) -> str:
        if resource.type == gateway.GATEWAY_TYPE:
            return gateway.health(resource)  # every replica
        if not process.find(resource.attrs["pid"], resource.attrs["create_time"]):
            return f"gone: pid {resource.attrs['pid']} is no longer running"
        why = process.answers(resource.attrs["port"], path=_READY_PATH[resource.type])
        return "healthy" if why is None else f"unhealthy: {why}"

    def _start(self, resource: Resource, ctx: ApplyContext) -> Resource:
        port = process.free_port()
        name = resource.address.removeprefix(RESOURCE_TYPE + '.').replace('[', '-').rstrip(']')
        log = ctx.run_dir / "logs" / f"{name}{'' if resource.version == 'stable' else '-' + resource.version}.log"
        cmd = command(resource.spec, port)
        started = process.start(cmd, port, log)
        ctx.progress(resource.label, f"starting (pid {started.pid}, port {port})")
        attrs: dict[str, Any] = {"pid": started.pid, "create_time": started.create_time, "port": port,
                                 "log": str(log), "command": cmd}
        return resource.model_copy(update={"attrs": attrs, "endpoint": f"http://{process.HOST}:{port}/v1"})

    def _await_ready(self, starting: list[Resource], ctx: ApplyContext) -> list[Resource]:
        """Wait until each new process answers GET /v1/models; returns those that died or timed out."""
        pending, failed = list(starting), []
        deadline = time.monotonic() + ctx.ready_timeout
        while pending:
            for resource in list(pending):
                attrs = resource.attrs
                why = None
                if not process.find(attrs["pid"], attrs["create_time"]):
                    why = f"{resource.label} exited before it was ready"
                elif process.answers(attrs["port"], timeout=1.0, path=_READY_PATH[resource.type]) is None:
                    pending.remove(resource)
                    ctx.progress(resource.label, "ready")
                    continue
                elif time.monotonic() > deadline:
                    why = f"{resource.label} did not answer on port {attrs['port']} within {ctx.ready_timeout:.0f}s"
                if why:
                    attrs["failure"] = f"{why}; last lines of {attrs['log']}:\n{process.log_tail(Path(attrs['log']))}"
                    pending.remove(resource)
                    failed.append(resource)
                    ctx.progress(resource.label, f"failed: {why}")
            if pending:
                time.sleep(_POLL_SECONDS)
        return failed


def _spec(model: Model, locked: ModelLock | None, resolved: Resolved) -> dict[str, Any]:
    """What a replica runs, with `locked` its pinned entry; the pinned file hash or commit is part of it, so a
    model that changed under its name is a replacement the plan shows."""
    source = model.parsed_source
    try:
        ref = (str(local_path(source, resolved.desired.config_dir)) if source.scheme in ("pkg", "file")
               else source.location)
    except SourceNotFound:
        ref = model.source  # check() reports it; the plan still shows the model
    spec: dict[str, Any] = {"engine": model.engine, "model": ref, "served_name": model.name,
                            "context_length": model.context_length, "engine_args": model.engine_args}
    if locked and locked.file_sha256:
        spec["sha256"] = locked.file_sha256
    revision = (locked.sha if locked else None) or source.revision
    if revision:
        spec["revision"] = revision
    return spec


def _pinned_file_problems(model: Model, resolved: Resolved) -> list[str]:
    try:
        path = local_path(model.parsed_source, resolved.desired.config_dir)
    except SourceNotFound as exc:
        return [str(exc)]
    locked = resolved.locked(model.name)
    if locked is None or locked.file_sha256 is None:
        return []
    with path.open("rb") as f:
        found = hashlib.file_digest(f, "sha256").hexdigest()
    if found != locked.file_sha256:
        return [f"{path} is not the file the plan pinned (sha256 {locked.file_sha256[:12]}, now {found[:12]}): "
                "run `llmctl plan` again to review what it would serve now"]
    return []


def _stops(resource: Resource, ready: set[tuple[str, str]], deletes: set[tuple[str, str, bool]]) -> bool:
    """Deleted, or deposed by a replacement that is now ready."""
    return ((resource.address, resource.version, resource.deposed) in deletes
            or (resource.deposed and (resource.address, resource.version) in ready))


def _deposed(resource: Resource) -> Resource:
    return resource.model_copy(update={"deposed": True})


def _kept(resource: Resource) -> Resource:
    return resource.model_copy(update={"deposed": False})
