"""The gateway on the local target: one `python -m llmctl.gateway` process in front of the model servers.

It is a resource like a replica (`local_gateway.ENV`), planned from the config, but its runtime spec also needs the
replicas' ports, so apply writes that spec once the servers answer. A changed spec reaches the running gateway by
SIGHUP, in place (no request under way is cut, no counter reset); only what it cannot take so (its port, ledger,
SLO thresholds, timeouts, cache settings) restarts it, on the same port.
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
from llmctl.provider import ApplyContext
from llmctl.resolve import Resolved
from llmctl.resource import Resource, Version
from providers.local import process

GATEWAY_TYPE = "local_gateway"
RELOAD_TIMEOUT_S = 10.0  # a reload is a spec read and a few objects built: seconds means it was not taken
PROCESS_TYPE = "local_process"


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
    # What the gateway enforces, without secrets: a change here restarts it.
    enforced = {"gateway": settings.model_dump(mode="json", exclude={"port"}),
                "models": {name: desired.models[name].model_dump(mode="json", include={
                    "source", "guardrails", "prompt", "budget", "api_base", "api_key_env"}) for name in models},
                "guardrails": {n: g.model_dump(mode="json") for n, g in desired.guardrails.items()},
                "prompts": {n: p.model_dump(mode="json") for n, p in desired.prompts.items()},
                "budgets": {n: b.model_dump(mode="json") for n, b in desired.budgets.items()},
                # A rollout's step: which new versions serve, and to what share of callers.
                "canaries": {n: [c.model.model_dump(mode="json", include={"source"}), c.weight,
                                 c.prompt.model_dump(mode="json") if c.prompt else None]
                             for n, c in sorted(desired.canaries.items())}}
    return Resource(address=f"{GATEWAY_TYPE}.{desired.environment}", type=GATEWAY_TYPE,
                    owner=f"gateway.{desired.environment}", provider="local", target=target,
                    spec={"models": models, "port": settings.port, "enforces": _sha(json.dumps(enforced, sort_keys=True))})


def verify_key(run_dir: Path) -> str:
    """llmctl's own key for load tests through the gateway, created once; readable by this user only."""
    path = build.gateway_dir(run_dir) / build.VERIFY_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def converge(want: Resource | None, live: list[Resource], ctx: ApplyContext) -> list[Resource]:
    """Start, restart or stop the gateway so that it serves `want` over the replicas now running."""
    have = next((r for r in live if r.type == GATEWAY_TYPE), None)
    if want is None:
        if have is not None:
            _stop(have, ctx)
            live = [r for r in live if r is not have]
        return live
    directory = build.gateway_dir(ctx.run_dir)
    spec = build.build_spec(ctx.resolved, _upstreams(live), directory, hash_key(verify_key(ctx.run_dir)),
                            canaries=_upstreams(live, "canary"))
    text = spec.model_dump_json(indent=2)  # what GatewaySpec.write writes
    running = have is not None and process.find(have.attrs["pid"], have.attrs["create_time"]) is not None
    if running and have is not None and have.spec == want.spec and have.attrs.get("spec_sha") == _sha(text):
        return live
    if running and have is not None and _reloaded(have, want, spec, text, ctx):
        attrs = {**have.attrs, "spec_sha": _sha(text)}
        kept = want.model_copy(update={"attrs": attrs, "endpoint": have.endpoint, "serves": want.spec["models"]})
        return [kept if r is have else r for r in live]
    if have is not None:
        _stop(have, ctx)
        live = [r for r in live if r is not have]
    port = want.spec["port"] or process.kept_port(directory / "port")
    path = directory / "spec.json"
    spec.write(path)
    log = ctx.run_dir / "logs" / "gateway.log"
    cmd = [sys.executable, "-m", "llmctl.gateway", "--spec", str(path), "--host", process.HOST, "--port", str(port)]
    started = process.start(cmd, port, log)
    ctx.progress(want.address, f"starting (pid {started.pid}, port {port})")
    attrs: dict[str, Any] = {"pid": started.pid, "create_time": started.create_time, "port": port, "log": str(log),
                             "spec_sha": _sha(text), "spec_path": str(path), "command": cmd}
    return [*live, want.model_copy(update={"attrs": attrs, "endpoint": f"http://{process.HOST}:{port}/v1",
                                           "serves": want.spec["models"]})]


def _reloaded(have: Resource, want: Resource, spec: GatewaySpec, text: str, ctx: ApplyContext) -> bool:
    """Hand the running gateway its new spec by SIGHUP and see it taken (its /health names the file's sha256);
    False, having changed nothing it serves, when it cannot take it in place."""
    path = Path(have.attrs["spec_path"])
    try:
        served = GatewaySpec.read(path)
    except (OSError, ValueError):
        return False
    if want.spec["port"] not in (None, have.attrs["port"]) or not served.reloadable_to(spec):
        return False
    spec.write(path)  # what `text` is
    os.kill(have.attrs["pid"], signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{have.endpoint.removesuffix('/v1')}/health", timeout=RELOAD_TIMEOUT_S, trust_env=False)
            if health.json().get("spec_sha256") == _sha(text):
                ctx.progress(want.address, f"reloaded (pid {have.attrs['pid']})")
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.1)
    return False


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


def _stop(gateway: Resource, ctx: ApplyContext) -> None:
    ctx.progress(gateway.address, "stopping")
    process.stop(gateway.attrs["pid"], gateway.attrs["create_time"])
    ctx.progress(gateway.address, "stopped")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
