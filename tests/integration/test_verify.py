"""The SLO gate for real: Locust against llama.cpp servers started by llmctl; rollback when an SLO is missed."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from openai import OpenAI

from llmctl.state import LocalBackend
from support import Run

pytestmark = pytest.mark.integration

SHORT_TEST = "loadtest: {users: 2, spawn_rate: 2, duration: 20s, max_tokens: 32}"


@pytest.fixture
def config(llmctl: Run, quickstart: Path):
    """The quickstart with a 6-second load test; destroyed afterwards, whatever the test left running."""
    quickstart.write_text(quickstart.read_text().replace(SHORT_TEST, SHORT_TEST.replace("20s", "6s")))
    yield quickstart
    replicas = json.loads(llmctl("status", "-f", str(quickstart), "--format", "json").stdout)["replicas"]
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in [r["pid"] for r in replicas]:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def _status(llmctl: Run, config: Path) -> dict:
    return json.loads(llmctl("status", "-f", str(config), "--format", "json").stdout)


def _answers(endpoint: str) -> bool:
    reply = OpenAI(base_url=endpoint, api_key="unused", timeout=120).chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    return bool(reply.choices[0].message.content)


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

    config.write_text(config.read_text().replace("ttft_p95_ms: 3000", "ttft_p95_ms: 1")
                      .replace("    replicas: 1\n", "    replicas: 2\n"))
    failed = llmctl("apply", "-f", str(config), "--auto-approve")
    assert failed.returncode == 4, failed.stderr
    assert "SLO verification FAILED" in failed.stdout and "rolled back" in failed.stderr
    assert "Traceback" not in failed.stderr

    status = _status(llmctl, config)
    assert status["serial"] == serial
    [after] = status["replicas"]
    assert after["pid"] == before["pid"] and after["health"] == "healthy"
    assert _answers(after["endpoint"])
    assert status["last_change"].startswith("apply rolled back: SLO missed: model assistant: ttft_p95_ms")
    assert status["verification"]["assistant"]["passed"] is False

    # History keeps what was tried: a version recorded mid-apply with the second replica running.
    history = LocalBackend(config.parent / ".llmctl", "quickstart", "dev").history()
    assert any(v.serial == serial and v.status == "applying" and len(v.resources) == 2
               for v in history)
    # Nothing was accepted: the plan still wants both changes, and the loadtest command fails the same SLO.
    replan = llmctl("plan", "-f", str(config), "--detailed-exitcode")
    assert replan.returncode == 2 and "~ replicas = 1 -> 2" in replan.stdout and "ttft_p95_ms" in replan.stdout


def test_on_violation_warn_keeps_the_change(llmctl: Run, config: Path) -> None:
    config.write_text(config.read_text().replace("ttft_p95_ms: 3000", "ttft_p95_ms: 1")
                      .replace("on_violation: rollback", "on_violation: warn"))
    applied = llmctl("apply", "-f", str(config), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    status = _status(llmctl, config)
    assert status["serial"] == 1 and "SLO missed (on_violation: warn)" in status["last_change"]
    assert llmctl("loadtest", "-f", str(config), "--duration", "3s").returncode == 4
