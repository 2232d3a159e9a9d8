"""Rollouts for real: the quickstart's llama.cpp model changed under a canary rollout, its new version started beside
the stable one, the gateway splitting callers between them, Locust driving the analysis load, then promotion, an
abort on an SLO no server can meet, and an abort after llmctl was killed mid-rollout.

The change is the model's context length, which replaces its server but not what it answers: no verdict here
depends on what the model says, and the impossible SLO (a 1 ms time to first token) fails on any machine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from support import QUICKSTART_KEY, Run, edit

pytestmark = pytest.mark.integration

ROLLOUT = """
rollouts:
  - name: canary
    strategy: canary
    steps:
      - {weight: 50, FIRST}
      - {weight: 100, duration: 1s}
    analysis: {min_requests: 4}
"""
USERS = [f"user-{index}" for index in range(20)]


def _state(config: Path) -> dict:
    return json.loads((config.parent / ".llmctl" / "state" / "quickstart" / "dev.json").read_text())


def _servers(state: dict) -> list[dict]:
    return [r for r in state["resources"] if r["type"] == "local_process"]


def _alive(resource: dict) -> bool:
    return psutil.pid_exists(resource["attrs"]["pid"])


@pytest.fixture
def rolled(llmctl: Run, quickstart: Path):
    """The quickstart under a canary rollout, applied once (state serial 1); `FIRST` is the first step's rest."""
    def write(first: str) -> Path:
        text = quickstart.read_text().replace("    slo: interactive\n", "    slo: interactive\n    rollout: canary\n")
        # The SLO load test of the first apply is test_verify.py's subject: here it only has to pass, quickly.
        quickstart.write_text(text.replace("duration: 20s", "duration: 2s") + ROLLOUT.replace("FIRST", first))
        applied = llmctl("apply", "-f", str(quickstart), "--auto-approve")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        return quickstart

    yield write
    pids = [r["attrs"].get("pid") for r in _state(quickstart)["resources"]] if (
        quickstart.parent / ".llmctl" / "state").exists() else []
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in pids:
        if pid and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def _versions_answering(endpoint: str) -> dict[str, str]:
    """Which version answered each user, through the gateway with the openai client."""
    client = OpenAI(base_url=endpoint, api_key=QUICKSTART_KEY, timeout=120, max_retries=0)
    found = {}
    for user in USERS:
        raw = client.chat.completions.with_raw_response.create(
            model="assistant", max_tokens=4, user=user, extra_body={"min_tokens": 1},
            messages=[{"role": "user", "content": "Name a colour."}])
        found[user] = raw.headers.get("x-llmctl-version", "none")
    return found


def _requests_by_version(endpoint: str) -> dict[str, float]:
    text = httpx.get(endpoint.removesuffix("/v1") + "/metrics", timeout=30).text
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llmctl_gateway_requests_total" and sample.labels.get("model") == "assistant":
                counted[sample.labels["version"]] = counted.get(sample.labels["version"], 0) + sample.value
    return counted


def test_a_canary_that_passes_serves_beside_stable_then_is_promoted(llmctl: Run, rolled) -> None:
    config = rolled("pause: true")
    [stable] = _servers(_state(config))
    edit(config, "context_length: 2048", "context_length: 1024")

    paused = llmctl("apply", "-f", str(config), "--auto-approve")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "Rollout: model assistant rolls out by 'canary' (canary: 50% → 100%)" in paused.stdout
    assert "step 1 at 50%: PASSED" in paused.stdout and "paused after step 1 (50%)" in paused.stderr
    state = _state(config)
    assert state["serial"] == 1 and state["rollout"]["status"] == "paused"
    servers = {r["version"]: r for r in _servers(state)}
    assert servers["stable"]["attrs"]["pid"] == stable["attrs"]["pid"] and _alive(servers["canary"])
    assert servers["canary"]["spec"]["context_length"] == 1024

    # During the 50% step both versions answer through the gateway, each user always the same one.
    endpoint = state["endpoints"]["assistant"][0]
    first, again = _versions_answering(endpoint), _versions_answering(endpoint)
    assert first == again and set(first.values()) == {"stable", "canary"}
    counted = _requests_by_version(endpoint)
    assert counted["canary"] >= 4 + list(first.values()).count("canary")  # the analysis load and these users
    assert counted["stable"] >= 4 + list(first.values()).count("stable")

    promoted = llmctl("rollout", "promote", "-f", str(config))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert "step 2 at 100%: PASSED" in promoted.stdout and "Promoted: model assistant" in promoted.stderr
    state = _state(config)
    assert state["serial"] == 2 and state["status"] == "applied" and state["rollout"]["status"] == "promoted"
    assert state["desired"]["models"][0]["context_length"] == 1024
    # Only the new version runs, as the stable one now: the same process that served as the canary.
    [now] = _servers(state)
    assert (now["version"], now["attrs"]["pid"]) == ("stable", servers["canary"]["attrs"]["pid"])
    assert not _alive(stable)
    assert set(_versions_answering(endpoint).values()) == {"none"}  # no rollout: no version header

    record = json.loads(llmctl("rollout", "status", "-f", str(config), "--format", "json").stdout)
    assert [(s["weight"], s["verdict"]) for s in record["steps"]] == [(50, "passed"), (100, "passed")]
    assert record["steps"][0]["canary"]["requests"] >= 4 and record["steps"][1]["stable"] is None
    assert "target" not in record  # the config rides in state, not in the report
    status = json.loads(llmctl("status", "-f", str(config), "--format", "json").stdout)["rollout"]
    assert (status["status"], status["weight"]) == ("promoted", 100) and "target" not in status


def test_a_canary_that_misses_its_slo_is_aborted_with_exit_4(llmctl: Run, rolled) -> None:
    config = rolled("duration: 1s")
    [stable] = _servers(_state(config))
    edit(config, "context_length: 2048", "context_length: 1024")
    edit(config, "ttft_p95_ms: 3000", "ttft_p95_ms: 1")

    aborted = llmctl("apply", "-f", str(config), "--auto-approve")
    assert aborted.returncode == 4, aborted.stdout + aborted.stderr
    assert "rollout of model assistant aborted at step 1 (50%): ttft_p95_ms" in aborted.stderr
    assert "FAIL ttft_p95_ms" in aborted.stdout and "Traceback" not in aborted.stderr
    state = _state(config)
    assert state["serial"] == 1 and state["status"] == "rolled_back"
    record = state["rollout"]
    assert (record["status"], record["weight"], record["step"]) == ("aborted", 0, 0)
    [step] = record["steps"]
    failed = {c["name"]: c for c in step["comparisons"] if not c["passed"]}
    assert set(failed) == {"ttft_p95_ms"} and failed["ttft_p95_ms"]["limit"] == 1
    assert step["canary"]["requests"] >= 4 and step["canary"]["ttft_p95_ms"] > 1
    # Only the old version serves.
    [server] = _servers(state)
    assert server["attrs"]["pid"] == stable["attrs"]["pid"] and server["spec"]["context_length"] == 2048
    assert set(_versions_answering(state["endpoints"]["assistant"][0]).values()) == {"none"}


def test_killed_mid_rollout_then_aborted_leaves_exactly_the_stable_version(llmctl: Run, rolled) -> None:
    config = rolled("duration: 10m")
    [stable] = _servers(_state(config))
    edit(config, "context_length: 2048", "context_length: 1024")
    apply = subprocess.Popen([sys.executable, "-m", "llmctl", "apply", "-f", str(config), "--auto-approve"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "QUICKSTART_API_KEY": QUICKSTART_KEY})
    try:
        deadline = time.monotonic() + 300  # a hang guard: the canary starts in seconds
        while not (_rollout_step_started(config) or apply.poll() is not None or time.monotonic() > deadline):
            time.sleep(0.2)
        assert apply.poll() is None, "apply ended before its 10-minute step"
        apply.send_signal(signal.SIGKILL)
    finally:
        apply.kill()
        apply.wait()
    state = _state(config)
    assert state["rollout"]["status"] == "running"
    canary = next(r for r in _servers(state) if r["version"] == "canary")
    assert _alive(canary) and _alive(stable)

    planned = llmctl("plan", "-f", str(config))
    assert planned.returncode == 1 and "rollout 'canary' of model assistant is running at step 1" in planned.stdout
    status = llmctl("rollout", "status", "-f", str(config))
    assert "running, 50% of callers on the new version" in status.stdout

    aborted = llmctl("rollout", "abort", "-f", str(config))
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    state = _state(config)
    [server] = _servers(state)
    assert server["attrs"]["pid"] == stable["attrs"]["pid"] and server["version"] == "stable"
    assert state["rollout"]["status"] == "aborted" and state["serial"] == 1
    assert not _alive(canary)
    assert set(_versions_answering(state["endpoints"]["assistant"][0]).values()) == {"none"}


def _rollout_step_started(config: Path) -> bool:
    """The first step is under way: its canary answers and the gateway splits callers."""
    try:
        record = _state(config).get("rollout")
    except (OSError, ValueError):  # read while being replaced: the next poll sees it whole
        return False
    return bool(record and record["status"] == "running" and record["steps"])


def test_a_prompt_change_rolls_out_on_the_same_servers(llmctl: Run, rolled) -> None:
    config = rolled("duration: 1s")
    [server] = _servers(_state(config))
    edit(config, 'template: "Answer the customer question: {{ question }}"', 'template: "Customer asks: {{ question }}"')

    applied = llmctl("apply", "-f", str(config), "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Rollout 'canary' of model assistant's prompt (canary: 50% → 100%): promoted" in applied.stdout
    state = _state(config)
    assert state["serial"] == 2 and state["rollout"]["kind"] == "prompt"
    assert state["desired"]["prompts"][0]["template"] == "Customer asks: {{ question }}"
    [still] = _servers(state)  # no server started or stopped: the stable ones served both prompts
    assert still["attrs"]["pid"] == server["attrs"]["pid"] and _alive(still)
    assert [s["canary"]["requests"] >= 4 for s in state["rollout"]["steps"]] == [True, True]


def test_blue_green_previews_the_new_version_on_llmctls_own_load_then_switches(llmctl: Run, rolled) -> None:
    config = rolled("duration: 1s")
    edit(config, "    strategy: canary\n    steps:\n      - {weight: 50, duration: 1s}\n      - {weight: 100, duration: 1s}",
         "    strategy: blue_green\n    preview: 1s")
    edit(config, "context_length: 2048", "context_length: 1024")

    applied = llmctl("apply", "-f", str(config), "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    record = _state(config)["rollout"]
    assert (record["strategy"], record["status"], record["weights"]) == ("blue_green", "promoted", [0, 100])
    preview = record["steps"][0]
    # At weight 0 no caller reaches the new version: what it was judged on is the load llmctl sent it.
    assert preview["canary"]["requests"] == preview["canary"]["driven"] >= 4
    [server] = _servers(_state(config))
    assert server["spec"]["context_length"] == 1024


def test_a_new_version_that_cannot_start_is_aborted_and_stable_keeps_serving(llmctl: Run, rolled) -> None:
    config = rolled("duration: 1s")
    [stable] = _servers(_state(config))
    edit(config, "    context_length: 2048\n", "    context_length: 2048\n    engine_args: {n_batch: not-a-number}\n")

    failed = llmctl("apply", "-f", str(config), "--auto-approve")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "rollout of model assistant aborted, only the stable version serves (state serial 1)" in failed.stderr
    assert "(canary) exited before it was ready" in failed.stderr and "--n_batch" in failed.stderr
    state = _state(config)
    assert state["rollout"]["status"] == "aborted" and state["status"] == "rolled_back"
    [server] = _servers(state)
    assert server["attrs"]["pid"] == stable["attrs"]["pid"] and _alive(server)
    assert set(_versions_answering(state["endpoints"]["assistant"][0]).values()) == {"none"}
