"""Gateway replicas on the local target, for real: with a store, `llmctl apply` runs two gateway processes on two
ports serving the same spec; a reloadable change reaches both by SIGHUP; the replica count goes down and up by
stopping and starting the processes past the first; a replica that exited is started again; destroy stops all.
The model is a hosted one, so no model server is needed; the store is the real PostgreSQL of `postgres`, its DSN
in the environment llmctl (and so each gateway it starts) runs in."""
from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from postgres_server import PostgresServer
from support import Run, edit

DSN_ENV = "REPLICAS_TEST_STORE_DSN"
ADDRESS = "local_gateway.test"
CONFIG = f"""\
version: 1
project: replicas
environment: test
targets:
  laptop: {{provider: local}}
models:
  - name: hosted
    source: api://openai/gpt-4o-mini
gateway:
  max_request_bytes: 1048576
  store: {{env: {DSN_ENV}}}
"""


def _state(config: Path) -> dict[str, Any]:
    return json.loads((config.parent / ".llmctl" / "state" / "replicas" / "test.json").read_text())


def _gateway(config: Path) -> dict[str, Any]:
    [gateway] = [r for r in _state(config)["resources"] if r["address"] == ADDRESS]
    return gateway


def _health(port: int) -> dict[str, Any]:
    response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()


def _runs(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


@pytest.fixture
def run(llmctl: Run, postgres: PostgresServer) -> Run:
    """llmctl with the store's DSN in its environment, as a user exports it before `llmctl apply`; `returncode` is
    what it must exit with."""
    def command(*args: str, returncode: int = 0) -> Any:
        done = llmctl(*args, env={DSN_ENV: postgres.dsn})
        assert done.returncode == returncode, done.stdout + done.stderr
        return done

    return command


@pytest.fixture
def config(llmctl: Run, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "llmops.yaml"
    path.write_text(CONFIG)
    seen: set[int] = set()
    yield path
    state = tmp_path / ".llmctl" / "state" / "replicas" / "test.json"
    if state.exists():
        seen |= {p["pid"] for r in _state(path)["resources"] for p in r["attrs"].get("processes", [r["attrs"]])}
    llmctl("destroy", "-f", str(path), "--auto-approve")
    for pid in seen:
        if _runs(pid):
            os.kill(pid, signal.SIGKILL)


def test_two_replicas_share_the_spec_reload_together_scale_and_are_destroyed_together(run: Run,
                                                                                        config: Path) -> None:
    applied = run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert f"{ADDRESS}: starting replica 1" in applied.stderr
    gateway = _gateway(config)
    assert gateway["spec"]["replicas"] == 2
    attrs = gateway["attrs"]
    first, second = attrs["processes"]
    assert first["port"] != second["port"] and first["pid"] != second["pid"]
    assert first["log"] != second["log"] and Path(second["log"]).name == "gateway-1.log"
    # The first process is the resource's endpoint, and stays where a state before replicas kept it.
    assert (attrs["pid"], attrs["port"]) == (first["pid"], first["port"])
    assert gateway["endpoint"] == attrs["endpoints"][0] == f"http://127.0.0.1:{first['port']}/v1"
    assert attrs["endpoints"][1] == f"http://127.0.0.1:{second['port']}/v1"
    assert [_health(p["port"])["spec_sha256"] for p in (first, second)] == [attrs["spec_sha"]] * 2

    status = json.loads(run("status", "-f", str(config), "--format", "json").stdout)
    assert [(g["address"], g["health"], g["pid"]) for g in status["gateways"]] == [(ADDRESS, "healthy", first["pid"])]
    assert status["gateways"][0]["endpoints"] == attrs["endpoints"]
    assert status["gateways"][0]["pids"] == [first["pid"], second["pid"]]
    assert f"gateway 2 replicas {attrs['endpoints'][0]}, {attrs['endpoints'][1]} (healthy)" in \
        run("status", "-f", str(config)).stdout

    # A reloadable change reaches both, in place.
    edit(config, "max_request_bytes: 1048576", "max_request_bytes: 2097152")
    reloaded = run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert reloaded.stderr.count(f"{ADDRESS}: reloaded") == 2, reloaded.stderr
    attrs = _gateway(config)["attrs"]
    assert [p["pid"] for p in attrs["processes"]] == [first["pid"], second["pid"]]
    assert attrs["spec_sha"] != gateway["attrs"]["spec_sha"]
    assert [_health(p["port"])["spec_sha256"] for p in (first, second)] == [attrs["spec_sha"]] * 2

    # 2 -> 1 stops the second, leaving the first serving.
    edit(config, "  store:", "  replicas: 1\n  store:")
    plan = run("plan", "-f", str(config), "--format", "json")
    [change] = [c for c in json.loads(plan.stdout)["resource_changes"] if c["address"] == ADDRESS]
    assert change["reason"] == "replicas changed"
    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert not _runs(second["pid"])
    attrs = _gateway(config)["attrs"]
    assert [p["pid"] for p in attrs["processes"]] == [first["pid"]] and len(attrs["endpoints"]) == 1
    assert _health(first["port"])["spec_sha256"] == attrs["spec_sha"]

    # 1 -> 2 starts one again, on the port the second had.
    edit(config, "  replicas: 1\n", "  replicas: 2\n")
    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    attrs = _gateway(config)["attrs"]
    again = attrs["processes"][1]
    assert attrs["processes"][0]["pid"] == first["pid"] and again["pid"] != second["pid"]
    assert again["port"] == second["port"]
    assert _health(again["port"])["spec_sha256"] == attrs["spec_sha"]

    destroyed = run("destroy", "-f", str(config), "--auto-approve")
    assert f"{ADDRESS}: stopped" in destroyed.stderr
    assert not _runs(first["pid"]) and not _runs(again["pid"])


def test_a_replica_that_exited_is_drift_that_apply_starts_again(run: Run, config: Path) -> None:
    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    first, second = _gateway(config)["attrs"]["processes"]
    os.kill(second["pid"], signal.SIGKILL)
    psutil.Process(second["pid"]).wait(10)

    status = json.loads(run("status", "-f", str(config), "--format", "json", returncode=1).stdout)  # unhealthy
    [health] = [g["health"] for g in status["gateways"]]
    assert health == f"gone: replica 1 pid {second['pid']} is no longer running"
    plan = run("plan", "-f", str(config), "--format", "json")
    [change] = [c for c in json.loads(plan.stdout)["resource_changes"] if c["address"] == ADDRESS]
    assert change["action"] == "update"
    assert change["reason"] == f"drift: replica 1 (pid {second['pid']}) is no longer running"

    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    attrs = _gateway(config)["attrs"]
    assert attrs["processes"][0]["pid"] == first["pid"]  # the one serving was left alone
    restarted = attrs["processes"][1]
    assert restarted["pid"] != second["pid"] and restarted["port"] == second["port"]
    assert _health(restarted["port"])["spec_sha256"] == attrs["spec_sha"]


def test_a_state_from_before_replicas_is_one_replica(run: Run, config: Path) -> None:
    """A gateway recorded by the previous llmctl (one pid and port, no `processes`) is read as one replica: status
    sees it, and adding a store stops it and starts two."""
    config.write_text(CONFIG.replace(f"  store: {{env: {DSN_ENV}}}\n", ""))
    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    path = config.parent / ".llmctl" / "state" / "replicas" / "test.json"
    state = _state(config)
    [gateway] = [r for r in state["resources"] if r["address"] == ADDRESS]
    assert "replicas" not in gateway["spec"] and len(gateway["attrs"]["processes"]) == 1
    for key in ("processes", "endpoints"):
        del gateway["attrs"][key]
    path.write_text(json.dumps(state))
    old = gateway["attrs"]

    status = json.loads(run("status", "-f", str(config), "--format", "json").stdout)
    assert [(g["health"], g["pid"]) for g in status["gateways"]] == [("healthy", old["pid"])]
    assert "no changes" in run("plan", "-f", str(config)).stdout.lower()

    config.write_text(CONFIG)
    run("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert not _runs(old["pid"])  # a store is not taken in place: both start anew
    processes = _gateway(config)["attrs"]["processes"]
    assert len(processes) == 2 and processes[0]["port"] == old["port"]
    assert all(_runs(p["pid"]) for p in processes)


def test_a_gateway_that_exits_at_start_fails_apply_with_its_log_before_the_others_start(
        config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a gateway that cannot reach its store does: it exits 1 saying why. The first process starts alone, so
    the others never start; what did start is in state, and the error carries the log's last lines."""
    from llmctl.config.load import load
    from llmctl.desired import Desired
    from llmctl.provider import ApplyContext, ProviderError
    from providers.local import gateway
    from support import context

    exits = tmp_path / "gateway-that-exits"
    exits.write_text("#!/bin/sh\necho 'llmctl gateway: the store cannot be reached: connection refused' >&2\nexit 1\n")
    exits.chmod(0o755)
    monkeypatch.setattr("sys.executable", str(exits))  # what converge runs `-m llmctl.gateway` with
    resolved = context(Desired.from_config(load(config)))
    want = gateway.resource(resolved, "laptop")
    assert want is not None and want.spec["replicas"] == 2
    persisted: list[list[Any]] = []
    ctx = ApplyContext(resolved=resolved, target="laptop", persist=persisted.append, ready_timeout=30)
    with pytest.raises(ProviderError) as failed:
        gateway.converge(want, [], ctx)
    assert "exited before it was ready" in str(failed.value)
    assert "the store cannot be reached: connection refused" in str(failed.value)
    [recorded] = persisted[-1]
    assert len(recorded.attrs["processes"]) == 1 and not _runs(recorded.attrs["pid"])
    assert not (Path(recorded.attrs["log"]).parent / "gateway-1.log").exists()


def test_apply_without_the_store_dsn_in_its_environment_refuses_before_starting_a_gateway(llmctl: Run,
                                                                                        config: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != DSN_ENV}
    done = llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify", env=env)
    assert done.returncode == 1
    assert f"gateway.store: the store's DSN is read from the environment variable {DSN_ENV}, which is not set" \
        in done.stderr
    assert not (config.parent / ".llmctl" / "state" / "replicas" / "test.json").exists() or \
        not [r for r in _state(config)["resources"] if r["address"] == ADDRESS]


def test_a_store_that_is_down_fails_apply_naming_it(run: Run, config: Path, postgres: PostgresServer) -> None:
    postgres.stop()
    done = run("apply", "-f", str(config), "--auto-approve", "--skip-verify", returncode=1)
    assert "not starting: the store postgresql://llmctl@127.0.0.1" in done.stderr
    assert "is unreachable" in done.stderr
