"""Prometheus and Alertmanager on the local target: real processes, planned like the model servers.

`monitoring.prometheus.run` makes `local_prometheus.ENV` part of the plan; its spec carries every generated rule, so a
changed SLO threshold shows in the plan as the rule expressions it changes, and replaces the process. Prometheus
finds the gateway and the engines through target files rewritten at every apply, so a gateway that moved to another
port is scraped without a restart. `monitoring.alertmanager.run` adds `local_alertmanager.ENV`, whose secrets are
read from the environment at apply into 0600 files, never into the spec.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from llmctl.atomic import write_atomic
from llmctl.desired import Desired
from llmctl.monitor import alertmanager, bundle, prometheus, tools
from llmctl.monitor.engines import saturation
from llmctl.monitor.rules import Rule, rule_files
from llmctl.provider import ApplyContext
from llmctl.resolve import Resolved
from llmctl.resource import Resource
from providers.local import process
from providers.local.gateway import GATEWAY_TYPE, PROCESS_TYPE, home, processes

PROMETHEUS_TYPE = "local_prometheus"
ALERTMANAGER_TYPE = "local_alertmanager"
TYPES = (PROMETHEUS_TYPE, ALERTMANAGER_TYPE)
READY_PATH = "/-/ready"


def resources(resolved: Resolved, target: str) -> list[Resource]:
    desired = resolved.desired
    settings = desired.monitoring
    if home(desired) != target or not settings.prometheus.run:
        return []
    owner = f"monitoring.{desired.environment}"
    found = []
    if settings.alertmanager.run:
        found.append(Resource(
            address=f"{ALERTMANAGER_TYPE}.{desired.environment}", type=ALERTMANAGER_TYPE, owner=owner,
            provider="local", target=target,
            spec={"port": settings.alertmanager.port,
                  "receivers": [r.model_dump(mode="json", exclude_none=True) for r in settings.receivers],
                  "routes": [r.model_dump(mode="json") for r in settings.routes]}))
    found.append(Resource(
        address=f"{PROMETHEUS_TYPE}.{desired.environment}", type=PROMETHEUS_TYPE, owner=owner, provider="local",
        target=target,
        spec={**settings.prometheus.model_dump(mode="json", exclude={"run"}),
              "alertmanager": settings.alertmanager.run, "rules": _rules_spec(desired)}))
    return found


def preflight(desired: Desired) -> list[str]:
    settings = desired.monitoring
    if not settings.prometheus.run:
        return []
    wanted = ["prometheus"] + (["alertmanager"] if settings.alertmanager.run else [])
    problems = [f"monitoring: {why}" for tool in wanted if (why := tools.problem(tool))]
    if settings.alertmanager.run:
        problems += alertmanager.secret_problems(desired, os.environ)
    return problems


def converge(desired: list[Resource], live: list[Resource], ctx: ApplyContext) -> list[Resource]:
    """Start, replace or stop Prometheus and Alertmanager so that they run what `desired` says, and point Prometheus
    at the gateway and engines now running."""
    directory = ctx.run_dir / "monitoring"
    wanted = {r.type: r for r in desired if r.type in TYPES}
    manager = wanted.get(ALERTMANAGER_TYPE)
    live = _converge_one(ALERTMANAGER_TYPE, manager, live, ctx,
                         lambda want: _start_alertmanager(want, ctx, directory))
    running_manager = next((r for r in live if r.type == ALERTMANAGER_TYPE), None)
    if PROMETHEUS_TYPE in wanted:
        _write_targets(live, directory)
    return _converge_one(PROMETHEUS_TYPE, wanted.get(PROMETHEUS_TYPE), live, ctx,
                         lambda want: _start_prometheus(want, ctx, directory, running_manager))


def _converge_one(kind: str, want: Resource | None, live: list[Resource], ctx: ApplyContext,
                  start: Callable[[Resource], Resource]) -> list[Resource]:
    have = next((r for r in live if r.type == kind), None)
    if have is not None and want is not None and have.spec == want.spec and \
            process.find(have.attrs["pid"], have.attrs["create_time"]):
        return live
    if have is not None:
        ctx.progress(have.address, "stopping")
        process.stop(have.attrs["pid"], have.attrs["create_time"])
        ctx.progress(have.address, "stopped")
        live = [r for r in live if r is not have]
    return live if want is None else [*live, start(want)]


def _start_prometheus(want: Resource, ctx: ApplyContext, directory: Path, manager: Resource | None) -> Resource:
    desired = ctx.resolved.desired
    rules_dir = directory / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    for stale in rules_dir.glob("*.yml"):
        stale.unlink()
    for name, text in bundle.rule_texts(desired).items():  # each with its promtool test file, as render writes them
        _write(rules_dir / name, text)
    address = f"{process.HOST}:{manager.attrs['port']}" if manager else None
    config = directory / "prometheus.yml"
    _write(config, prometheus.config_text(desired, directory, address))
    port = want.spec["port"] or process.kept_port(_port_file(directory, "prometheus"))
    settings = desired.monitoring.prometheus
    cmd = [str(tools.require("prometheus")), f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
           f"--storage.tsdb.retention.time={settings.retention}", f"--web.listen-address={process.HOST}:{port}"]
    return _started(want, cmd, port, ctx)


def _start_alertmanager(want: Resource, ctx: ApplyContext, directory: Path) -> Resource:
    desired = ctx.resolved.desired
    secrets = directory / "secrets"
    alertmanager.write_secrets(desired, secrets)
    binary = tools.require("alertmanager")
    config = secrets / "alertmanager.yml"
    alertmanager.write_private(config, alertmanager.runtime_config(desired, secrets, alertmanager.version(binary)))
    port = want.spec["port"] or process.kept_port(_port_file(directory, "alertmanager"))
    # No cluster: a single local Alertmanager; left on, it would also bind the gossip port 9094.
    cmd = [str(binary), f"--config.file={config}", f"--storage.path={directory / 'alertmanager'}",
           f"--web.listen-address={process.HOST}:{port}", "--cluster.listen-address="]
    return _started(want, cmd, port, ctx)


def _started(want: Resource, cmd: list[str], port: int, ctx: ApplyContext) -> Resource:
    log = ctx.run_dir / "logs" / f"{want.type.removeprefix('local_')}.log"
    started = process.start(cmd, port, log)
    ctx.progress(want.address, f"starting (pid {started.pid}, port {port})")
    attrs = {"pid": started.pid, "create_time": started.create_time, "port": port, "log": str(log), "command": cmd}
    return want.model_copy(update={"attrs": attrs, "endpoint": f"http://{process.HOST}:{port}"})


def _write_targets(live: list[Resource], directory: Path) -> None:
    """The gateway and the engines that export metrics, as Prometheus's file-discovery target lists."""
    gateways = [{"targets": [f"{process.HOST}:{p['port']}" for p in processes(r)], "labels": {}}
                for r in live if r.type == GATEWAY_TYPE]  # every replica: each counts only what it served
    engines = [{"targets": [f"{process.HOST}:{r.attrs['port']}"], "labels": {"model": r.model or ""}}
               for r in live if r.type == PROCESS_TYPE and not r.deposed and saturation(r.spec["engine"])]
    (directory / "targets").mkdir(parents=True, exist_ok=True)
    _write(directory / prometheus.GATEWAY_TARGETS, json.dumps(gateways, indent=2))
    _write(directory / prometheus.ENGINE_TARGETS, json.dumps(engines, indent=2))


def _rules_spec(desired: Desired) -> dict[str, dict[str, str]]:
    """Every rule by file and a readable key, with its expression (and `for`): what a plan diff shows."""
    return {f"{name}.rules.yml": {_rule_key(rule): rule.expr + (f" for {rule.for_}" if rule.for_ else "")
                                  for group in groups for rule in group.rules}
            for name, groups in rule_files(desired).items()}


def _rule_key(rule: Rule) -> str:
    about = ",".join(f"{k}={v}" for k, v in sorted(rule.labels.items())
                     if k in ("model", "slo", "sli", "severity", "budget", "threshold"))
    return f"{rule.alert or rule.record}{{{about}}}"


def _port_file(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.port"


def _write(path: Path, text: str) -> None:
    write_atomic(path, text.encode(), mode=0o644)  # Prometheus watches the target files: never half of one
