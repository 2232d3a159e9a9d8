"""The SLO gate for real: Locust against llama.cpp servers started by llmctl; rollback when an SLO is missed."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from integration.chat import answers
from llmctl.state import LocalBackend
from support import Run, edit

pytestmark = pytest.mark.integration

SHORT_TEST = "loadtest: {users: 2, spawn_rate: 2, duration: 20s, max_tokens: 32}"
QUICKSTART_TARGETS = "    ttft_p95_ms: 3000\n    latency_p95_ms: 15000\n    error_rate: 0.01\n"
# Targets no run can miss, however loaded the machine and whatever the model answers: waits longer than the load
# test's 2-minute request timeout (a request that slow has failed instead), and any share of failed requests (over
# a 1-day window, where an error budget of 100% can still page: 0.48 x 1 < 1).
UNMISSABLE = "    ttft_p95_ms: 600000\n    latency_p95_ms: 600000\n    error_rate: 1\n    window: 1d\n"
# A target no run can meet: a billion completed requests a second.
IMPOSSIBLE = UNMISSABLE + "    min_rps: 1000000000\n"


@pytest.fixture
def config(llmctl: Run, quickstart: Path):
    """The quickstart with a 6-second load test against targets it cannot miss (the verdict is the test's to
    choose: the quickstart's own targets would make it depend on this machine's speed); destroyed afterwards,
    whatever the test left running."""
    edit(quickstart, SHORT_TEST, SHORT_TEST.replace("20s", "6s"))
    edit(quickstart, QUICKSTART_TARGETS, UNMISSABLE)
    yield quickstart
    replicas = json.loads(llmctl("status", "-f", str(quickstart), "--format", "json").stdout)["replicas"]
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in [r["pid"] for r in replicas]:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def _status(llmctl: Run, config: Path) -> dict:
    return json.loads(llmctl("status", "-f", str(config), "--format", "json").stdout)


def test_apply_verifies_and_loadtest_reports(llmctl: Run, config: Path, tmp_path: Path) -> None:
    applied = llmctl("apply", "-f", str(config), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    assert "SLO interactive: PASS" in applied.stdout and "ttft_p95_ms" in applied.stdout
    status = _status(llmctl, config)
    assert status["serial"] == 1
    result = status["verification"]["assistant"]
    assert result["passed"] and result["summary"]["requests"] > 0 and result["summary"]["ttft_ms"]["p95"] > 0

    tested = llmctl("loadtest", "-f", str(config), "--duration", "4s", "--format", "json", "--report",
                    str(tmp_path / "report"))
    assert tested.returncode == 0, tested.stderr
    report = json.loads(tested.stdout)
    [model] = report["results"]
    assert model["model"] == "assistant" and model["passed"]
    assert {check["target"] for check in model["checks"]} == {"ttft_p95_ms", "latency_p95_ms", "error_rate"}
    assert (tmp_path / "report" / "assistant.png").read_bytes().startswith(b"\x89PNG")
    assert _status(llmctl, config)["verification"]["assistant"]["at"] == model["at"]


def test_an_impossible_slo_rolls_back_and_keeps_the_previous_server(llmctl: Run, config: Path) -> None:
    assert llmctl("apply", "-f", str(config), "--auto-approve").returncode == 0
    [before] = _status(llmctl, config)["replicas"]
    serial = _status(llmctl, config)["serial"]

    edit(config, UNMISSABLE, IMPOSSIBLE)
    edit(config, "    replicas: 1\n", "    replicas: 2\n")
    failed = llmctl("apply", "-f", str(config), "--auto-approve")
    assert failed.returncode == 4, failed.stderr
    assert "SLO verification FAILED" in failed.stdout and "rolled back" in failed.stderr
    assert "Traceback" not in failed.stderr

    status = _status(llmctl, config)
    assert status["serial"] == serial
    [after] = status["replicas"]
    assert after["pid"] == before["pid"] and after["health"] == "healthy"
    assert answers(after["endpoint"])
    assert status["last_change"].startswith("apply rolled back: SLO missed: model assistant: min_rps")
    assert status["verification"]["assistant"]["passed"] is False

    # History keeps what was tried: a version recorded mid-apply with the second replica running.
    history = LocalBackend(config.parent / ".llmctl", "quickstart", "dev").history()
    assert any(v.serial == serial and v.status == "applying" and len(v.resources) == 2
               for v in history)
    # Nothing was accepted: the plan still wants both changes, and the loadtest command fails the same SLO.
    replan = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert replan.returncode == 2 and "~ replicas = 1 -> 2" in replan.stdout and "min_rps" in replan.stdout


def test_on_violation_warn_keeps_the_change(llmctl: Run, config: Path) -> None:
    edit(config, UNMISSABLE, IMPOSSIBLE)
    edit(config, "on_violation: rollback", "on_violation: warn")
    applied = llmctl("apply", "-f", str(config), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    status = _status(llmctl, config)
    assert status["serial"] == 1 and "SLO missed (on_violation: warn)" in status["last_change"]
    assert llmctl("loadtest", "-f", str(config), "--duration", "3s").returncode == 4
