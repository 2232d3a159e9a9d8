"""The gateway on the local target: `gateway.replica_count` `python -m llmctl.gateway` processes in front of the model
servers, each on its own port, all serving the same spec file (and so, with `gateway.store`, the same database).

It is a resource like a replica (`local_gateway.ENV`), planned from the config, but its runtime spec also needs the
replicas' ports, so apply writes that spec once the servers answer. A changed spec reaches the running gateways by
SIGHUP, in place (no request under way is cut, no counter reset); only what they cannot take so (their port, ledger,
store, SLO thresholds, timeouts, cache settings) restarts them, each on the same port. A changed replica count starts
or stops the processes past the first, leaving the others serving.

The resource's `endpoint` is the first process's; a client may use any of `attrs["endpoints"]`. `attrs["processes"]`
records every process (pid, create_time, port, log, command), and the first one's stay in the top-level `pid`,
`create_time`, `port`, `log` and `command`, where a state written before replicas kept its only process.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from llmctl.desired import Desired
from llmctl.gateway import build
from llmctl.gateway.auth import hash_key
from llmctl.gateway.spec import GatewaySpec, TokenizerSpec
from llmctl.provider import ApplyContext, ProviderError
from llmctl.resolve import Resolved
from llmctl.resource import Resource, Version
from providers.local import process

GATEWAY_TYPE = "local_gateway"
RELOAD_TIMEOUT_S = 10.0  # a reload is a spec read and a few objects built: seconds means it was not taken
PROCESS_TYPE = "local_process"
_PROCESS_KEYS = ("pid", "create_time", "port", "log", "command")
_POLL_SECONDS = 0.25


def home(desired: Desired) -> str | None:
    """The local target the environment's gateway runs on: the first (by name) local target."""
    return min(local_targets(desired), default=None)


def local_targets(desired: Desired) -> set[str]:
    return {name for name, target in desired.targets.items() if target.provider == "local"}


def resource(resolved: Resolved, target: str) -> Resource | None:
    desired = resolved.desired
    if home(desired) != target:
        return None
    models = build.routed(desired, local_targets(desired))
    if not models:
        return None
    settings = build.settings(desired)
    # The replica count is a key of its own (the plan names it); without a store, the store's settings are left out
    # as before they existed, so a config that declares none keeps the digest an earlier llmctl recorded.
    unset = {"store", "store_failure"} if settings.store is None else set()
    # What the gateway enforces, without secrets: a change here restarts it.
    enforced = {"gateway": settings.model_dump(mode="json", exclude={"port", "replicas", *unset}),
                "models": {name: desired.models[name].model_dump(mode="json", include={
                    "source", "guardrails", "prompt", "budget", "api_base", "api_key_env"}) for name in models},
                "guardrails": {n: g.model_dump(mode="json") for n, g in desired.guardrails.items()},
                "prompts": {n: p.model_dump(mode="json") for n, p in desired.prompts.items()},
                "budgets": {n: b.model_dump(mode="json") for n, b in desired.budgets.items()},
                # A rollout's step: which new versions serve, and to what share of callers.
                "canaries": {n: [c.model.model_dump(mode="json", include={"source"}), c.weight,
                                 c.prompt.model_dump(mode="json") if c.prompt else None]
                             for n, c in sorted(desired.canaries.items())}}
    spec: dict[str, Any] = {"models": models, "port": settings.port,
                            "enforces": _sha(json.dumps(enforced, sort_keys=True))}
    if settings.replica_count != 1:  # absent at 1, as in a state written before replicas
        spec["replicas"] = settings.replica_count
    return Resource(address=f"{GATEWAY_TYPE}.{desired.environment}", type=GATEWAY_TYPE,
                    owner=f"gateway.{desired.environment}", provider="local", target=target, spec=spec)


def verify_key(run_dir: Path) -> str:
    """llmctl's own key for load tests through the gateway, created once; readable by this user only."""
    path = build.gateway_dir(run_dir) / build.VERIFY_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


# --- the processes a gateway resource records ----------------------------------------------------------------------


def processes(gateway: Resource) -> list[dict[str, Any]]:
    """Every gateway process `gateway` records, the first (the resource's endpoint) first. A state written before
    replicas records one, in the top-level keys."""
    recorded = gateway.attrs.get("processes")
    if recorded:
        return [dict(entry) for entry in recorded]
    return [{key: gateway.attrs[key] for key in _PROCESS_KEYS if key in gateway.attrs}]


def _runs(entry: dict[str, Any]) -> bool:
    return process.find(entry["pid"], entry["create_time"]) is not None


def exited(gateway: Resource) -> dict[int, str]:
    """The processes of `gateway` that no longer run, by index, with why."""
    return {index: f"replica {index} (pid {entry['pid']}) is no longer running"
            for index, entry in enumerate(processes(gateway)) if not _runs(entry)}


def health(gateway: Resource) -> str:
    """healthy when every process answers /health; else what the first one that does not says."""
    for index, entry in enumerate(processes(gateway)):
        which = "" if index == 0 and len(processes(gateway)) == 1 else f"replica {index} "
        if not _runs(entry):
            return f"gone: {which}pid {entry['pid']} is no longer running"
        why = process.answers(entry["port"], path="/health")
        if why is not None:
            return f"unhealthy: {which}{why}"
    return "healthy"


def stop(gateway: Resource, ctx: ApplyContext | None = None) -> None:
    """Stop every process of `gateway`."""
    if ctx:
        ctx.progress(gateway.address, "stopping")
    for entry in processes(gateway):
        process.stop(entry["pid"], entry["create_time"])
    if ctx:
        ctx.progress(gateway.address, "stopped")


# --- converge ------------------------------------------------------------------------------------------------------


def converge(want: Resource | None, live: list[Resource], ctx: ApplyContext) -> list[Resource]:
    """Start, reload, restart or stop gateway processes so that `want`'s replica count of them serves `want` over
    the model replicas now running."""
    have = next((r for r in live if r.type == GATEWAY_TYPE), None)
    if want is None:
        if have is not None:
            stop(have, ctx)
            live = [r for r in live if r is not have]
        return live
    directory = build.gateway_dir(ctx.run_dir)
    spec = build.build_spec(ctx.resolved, _upstreams(live), directory, hash_key(verify_key(ctx.run_dir)),
                            canaries=_upstreams(live, "canary"))
    text = spec.model_dump_json(indent=2)  # what GatewaySpec.write writes
    count = want.spec.get("replicas", 1)
    recorded = processes(have) if have is not None else []
    alive = {index for index, entry in enumerate(recorded) if _runs(entry)}
    if have is not None and have.spec == want.spec and have.attrs.get("spec_sha") == _sha(text) and \
            len(recorded) == count and alive == set(range(count)):
        return live

    kept: dict[int, dict[str, Any]] = {}
    if have is not None and alive and _takes_in_place(have, want, spec):
        for index in sorted(i for i in alive if i >= count):
            ctx.progress(want.address, f"stopping replica {index} (pid {recorded[index]['pid']})")
            process.stop(recorded[index]["pid"], recorded[index]["create_time"])
        kept = {index: recorded[index] for index in alive if index < count}
        for index in set(range(len(recorded))) - alive:
            process.stop(recorded[index]["pid"], recorded[index]["create_time"])  # reaped, if ours
        if have.attrs.get("spec_sha") != _sha(text) and not _reloaded(list(kept.values()), want, spec,
                                                                      Path(have.attrs["spec_path"]), text, ctx):
            for entry in kept.values():
                process.stop(entry["pid"], entry["create_time"])
            kept = {}
    elif have is not None:
        stop(have, ctx)
    live = [r for r in live if r is not have]
    path = Path(have.attrs["spec_path"]) if kept and have is not None else directory / "spec.json"
    if not kept:
        spec.write(path)

    entries: list[dict[str, Any] | None] = [kept.get(index) for index in range(count)]
    # With nothing serving yet, one process starts alone first: it creates whatever the store needs before the
    # others open it.
    missing = [index for index in range(count) if entries[index] is None]
    batches = [missing[:1], missing[1:]] if not kept else [missing]
    for batch in [b for b in batches if b]:
        started = []
        for index in batch:
            entries[index] = _start(want, index, path, directory, ctx)
            started.append(entries[index])
        gateway = _recorded(want, path, text, [e for e in entries if e is not None])
        ctx.persist([*live, gateway])  # every process is in state before waiting on any
        _await_ready(want, started, ctx)
    return [*live, _recorded(want, path, text, [e for e in entries if e is not None])]


def _takes_in_place(have: Resource, want: Resource, spec: GatewaySpec) -> bool:
    """Whether the running processes can go on: same first port, and a spec they can take by SIGHUP."""
    try:
        served = GatewaySpec.read(Path(have.attrs["spec_path"]))
    except (OSError, ValueError, KeyError):
        return False
    return want.spec["port"] in (None, processes(have)[0]["port"]) and served.reloadable_to(spec)


def _reloaded(running: list[dict[str, Any]], want: Resource, spec: GatewaySpec, path: Path, text: str,
              ctx: ApplyContext) -> bool:
    """Hand every running process its new spec by SIGHUP and see each take it (its /health names the file's
    sha256); False when one has not within RELOAD_TIMEOUT_S."""
    spec.write(path)  # what `text` is
    for entry in running:
        os.kill(entry["pid"], signal.SIGHUP)
    pending = list(running)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for entry in list(pending):
            try:
                health = httpx.get(f"http://{process.HOST}:{entry['port']}/health", timeout=RELOAD_TIMEOUT_S,
                                   trust_env=False)
                if health.json().get("spec_sha256") == _sha(text):
                    pending.remove(entry)
                    ctx.progress(want.address, f"reloaded (pid {entry['pid']})")
            except (httpx.HTTPError, ValueError):
                pass
        if pending:
            time.sleep(0.1)
    return not pending


def _start(want: Resource, index: int, path: Path, directory: Path, ctx: ApplyContext) -> dict[str, Any]:
    """Process `index` of the gateway, on the port it had before while that is free (the first: `gateway.port`
    when set)."""
    port = (want.spec["port"] if index == 0 else None) or \
        process.kept_port(directory / ("port" if index == 0 else f"port-{index}"))
    log = ctx.run_dir / "logs" / ("gateway.log" if index == 0 else f"gateway-{index}.log")
    cmd = [sys.executable, "-m", "llmctl.gateway", "--spec", str(path), "--host", process.HOST, "--port", str(port)]
    started = process.start(cmd, port, log)
    which = "" if index == 0 else f"replica {index} "
    ctx.progress(want.address, f"starting {which}(pid {started.pid}, port {port})")
    return {"pid": started.pid, "create_time": started.create_time, "port": port, "log": str(log), "command": cmd}


def _await_ready(want: Resource, started: list[dict[str, Any]], ctx: ApplyContext) -> None:
    """Wait until each started process answers /health; raise, with its log's last lines, if one exits or does
    not answer within the ready timeout (a gateway that cannot reach its store exits, saying so)."""
    pending = list(started)
    deadline = time.monotonic() + ctx.ready_timeout
    while pending:
        for entry in list(pending):
            why = None
            if not _runs(entry):
                why = f"the gateway process on port {entry['port']} exited before it was ready"
            elif process.answers(entry["port"], timeout=1.0, path="/health") is None:
                pending.remove(entry)
                continue
            elif time.monotonic() > deadline:
                why = f"the gateway process did not answer on port {entry['port']} within {ctx.ready_timeout:.0f}s"
            if why:
                ctx.progress(want.address, f"failed: {why}")
                raise ProviderError(f"{want.address}: {why}; last lines of {entry['log']}:\n"
                                    f"{process.log_tail(Path(entry['log']))}")
        if pending:
            time.sleep(_POLL_SECONDS)


def _recorded(want: Resource, path: Path, text: str, entries: list[dict[str, Any]]) -> Resource:
    first = entries[0]
    attrs: dict[str, Any] = {**{key: first[key] for key in _PROCESS_KEYS if key in first}, "processes": entries,
                             "endpoints": [f"http://{process.HOST}:{e['port']}/v1" for e in entries],
                             "spec_sha": _sha(text), "spec_path": str(path)}
    return want.model_copy(update={"attrs": attrs, "endpoint": attrs["endpoints"][0], "serves": want.spec["models"]})


def _upstreams(live: list[Resource], version: Version = "stable") -> dict[str, build.Upstream]:
    """Each model's running replicas of `version`."""
    found: dict[str, build.Upstream] = {}
    for replica in live:
        if replica.type != PROCESS_TYPE or replica.deposed or replica.endpoint is None or replica.version != version:
            continue
        name = replica.model
        tokenizer = (TokenizerSpec(kind="gguf", path=replica.spec["model"])
                     if replica.spec["engine"] == "llama-cpp" else None)
        previous = found.get(name)
        urls = (previous.urls if previous else []) + [replica.endpoint]
        found[name] = build.Upstream(urls=urls, served_name=replica.spec["served_name"], tokenizer=tokenizer)
    return found


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
