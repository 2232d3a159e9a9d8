"""From the config to a verdict: load_spec, the worker's lifetime (death, deadline, early exit) and verify."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from scripted_server import ScriptedServer

from llmctl.config.schema import Config
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.verify.model import LoadSpec
from llmctl.verify.prompts import sample_questions
from llmctl.verify.run import Overrides, load_spec, run_worker, verify

pytestmark = pytest.mark.timeout(180)  # a hang guard only


def _desired(config_dir: Path, slo: dict[str, Any] | None = None, prompt: bool = False,
             extra_models: list[dict[str, Any]] | None = None) -> Desired:
    model: dict[str, Any] = {"name": "assistant", "source": "hf://org/repo", "engine": "vllm"}
    document: dict[str, Any] = {"version": 1, "project": "shop", "environment": "dev",
                                "models": [model, *(extra_models or [])]}
    if slo is not None:
        model["slo"] = slo["name"]
        document["slos"] = [slo]
    if prompt:
        model["prompt"] = "support"
        document["prompts"] = [{"name": "support", "system": "Be brief.", "template": "Customer: {{ question }}",
                                "variables": ["question"]}]
    return Desired.from_parts(Config.model_validate(document), config_dir)


def _spec(endpoint: str, **fields: Any) -> LoadSpec:
    return LoadSpec(**{
        "model": "assistant", "served_name": "assistant", "endpoints": [endpoint], "users": 1, "spawn_rate": 10,
        "duration_s": 1, "max_tokens": 16, "prompts": [[{"role": "user", "content": "Say hi."}]],
        "request_timeout_s": 5, **fields})


# --- load_spec ------------------------------------------------------------------------------------------------------


def test_spec_follows_the_slo_loadtest(tmp_path: Path) -> None:
    slo = {"name": "interactive", "loadtest": {"users": 3, "spawn_rate": 1.5, "duration": "5s", "max_tokens": 24}}
    spec = load_spec(_desired(tmp_path, slo), "assistant", ["http://a/v1", "http://b/v1"])
    assert (spec.model, spec.served_name, spec.endpoints) == ("assistant", "assistant", ["http://a/v1", "http://b/v1"])
    assert (spec.users, spec.spawn_rate, spec.duration_s, spec.max_tokens) == (3, 1.5, 5.0, 24)


def test_overrides_replace_users_and_duration(tmp_path: Path) -> None:
    slo = {"name": "interactive", "loadtest": {"users": 3, "duration": "5s"}}
    spec = load_spec(_desired(tmp_path, slo), "assistant", ["http://a/v1"], Overrides(users=7, duration="2m"))
    assert (spec.users, spec.duration_s) == (7, 120.0)
    only_users = load_spec(_desired(tmp_path, slo), "assistant", ["http://a/v1"], Overrides(users=9))
    assert (only_users.users, only_users.duration_s) == (9, 5.0)


def test_model_without_slo_gets_the_default_loadtest_and_prompts(tmp_path: Path) -> None:
    spec = load_spec(_desired(tmp_path), "assistant", ["http://a/v1"])
    assert (spec.users, spec.duration_s, spec.max_tokens, spec.request_timeout_s) == (4, 20.0, 64, 60.0)
    assert spec.prompts == [[{"role": "user", "content": question}] for question in sample_questions()]


def test_model_prompt_is_rendered_into_the_spec(tmp_path: Path) -> None:
    spec = load_spec(_desired(tmp_path, prompt=True), "assistant", ["http://a/v1"])
    assert spec.prompts[0] == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": f"Customer: {sample_questions()[0]}"}]


def test_prompts_file_is_relative_to_the_config_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "config"
    (config_dir / "load").mkdir(parents=True)
    (config_dir / "load" / "prompts.jsonl").write_text(json.dumps({"prompt": "What is 2+2?"}) + "\n")
    monkeypatch.chdir(tmp_path)  # a cwd-relative lookup would miss the file
    slo = {"name": "interactive", "loadtest": {"prompts_file": "load/prompts.jsonl"}}
    spec = load_spec(_desired(config_dir, slo), "assistant", ["http://a/v1"])
    assert spec.prompts == [[{"role": "user", "content": "What is 2+2?"}]]


@pytest.mark.parametrize(("latency_p95_ms", "timeout_s"), [
    (8000, 24.0),     # three times the latency target
    (1000, 10.0),     # never under 10 s
    (100000, 120.0),  # never over 2 minutes
    (None, 60.0),     # no latency target
])
def test_request_timeout_derives_from_latency_target(tmp_path: Path, latency_p95_ms: float | None,
                                                     timeout_s: float) -> None:
    slo = {"name": "interactive", "latency_p95_ms": latency_p95_ms} if latency_p95_ms else {"name": "interactive"}
    assert load_spec(_desired(tmp_path, slo), "assistant", ["http://a/v1"]).request_timeout_s == timeout_s


# --- the worker's lifetime ------------------------------------------------------------------------------------------


def _python_that_runs(tmp_path: Path, script: str) -> str:
    """A stand-in interpreter for the worker: a shell script that ignores its arguments and runs `script`."""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    return str(python)


def test_worker_death_is_an_llmctl_error_with_its_output(tmp_path: Path) -> None:
    crashing = _python_that_runs(tmp_path, "echo 'worker exploded: out of cheese' >&2\nexit 3")
    with pytest.raises(LlmctlError) as raised:
        run_worker(_spec("http://127.0.0.1:9/v1"), lambda fields: None, python=crashing)
    message = str(raised.value)
    assert "'assistant'" in message and "died (exit code 3)" in message and "out of cheese" in message


def test_worker_that_exits_cleanly_without_a_result_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="died"):
        run_worker(_spec("http://127.0.0.1:9/v1"), lambda fields: None, python=_python_that_runs(tmp_path, "exit 0"))


def test_worker_past_its_deadline_is_killed() -> None:
    # Held by a server that never sends a token, the worker would run for the test's 30 s at least: only the
    # 1.5 s deadline can end it here, however slowly a loaded machine starts it.
    with ScriptedServer(mode="silent") as server:
        with pytest.raises(LlmctlError) as raised:
            run_worker(_spec(server.base_url, duration_s=30, request_timeout_s=60), lambda fields: None,
                       deadline_s=1.5)
    assert "'assistant'" in str(raised.value) and "deadline" in str(raised.value)
    assert "gevent" not in sys.modules


def _workers() -> list[psutil.Process]:
    """This process's load-test workers."""
    found = []
    for child in psutil.Process().children():
        try:
            if "llmctl.verify.loadtest_worker" in child.cmdline():
                found.append(child)
        except psutil.Error:  # it ended (or is a zombie) between the listing and the look: not a running worker
            continue
    return found


def test_leaving_early_stops_the_worker() -> None:
    """If the caller gives up (its progress display fails, Ctrl-C), the load on the endpoint must stop too."""
    seen: list[psutil.Process] = []

    def interrupted(fields: dict[str, Any]) -> None:
        seen.extend(_workers())  # progress comes from the worker, so it is running now
        raise KeyboardInterrupt

    with ScriptedServer(mode="stream") as server:
        try:
            with pytest.raises(KeyboardInterrupt):
                run_worker(_spec(server.base_url, duration_s=60), interrupted)
            [worker] = seen
            assert not worker.is_running(), "the worker is still sending load"
        finally:
            for worker in _workers():
                worker.kill()
                worker.wait()


# --- verify --------------------------------------------------------------------------------------------------------


def test_verify_checks_each_model_against_its_slo(tmp_path: Path) -> None:
    slo = {"name": "interactive", "ttft_p95_ms": 100, "error_rate": 0, "min_goodput": 0.5,
           "loadtest": {"users": 1, "duration": "1s", "max_tokens": 8}}
    unchecked = {"name": "batch", "source": "hf://org/other", "engine": "vllm"}
    desired = _desired(tmp_path, slo, extra_models=[unchecked])
    progress: list[tuple[str, dict[str, Any]]] = []
    with ScriptedServer(mode="stream", ttft_s=0.2, itl_s=0.01, tokens=4) as server:
        report = verify(desired, {"assistant": [server.base_url], "batch": [server.base_url]},
                        ["assistant", "batch"], lambda model, fields: progress.append((model, fields)),
                        Overrides(duration="1s"))
    assert (report.project, report.environment) == ("shop", "dev")
    assistant, batch = report.results
    assert (assistant.model, assistant.slo, assistant.passed) == ("assistant", "interactive", False)
    checks = {check.target: check for check in assistant.checks}
    assert set(checks) == {"ttft_p95_ms", "error_rate", "min_goodput"}
    assert checks["error_rate"].passed and checks["error_rate"].measured == 0
    assert not checks["ttft_p95_ms"].passed and checks["ttft_p95_ms"].measured >= 200
    assert not checks["min_goodput"].passed and checks["min_goodput"].measured == 0  # every TTFT over 100 ms
    assert assistant.summary.requests == len(report.samples["assistant"]) >= 1
    # A model without an SLO is measured, with nothing to fail.
    assert (batch.model, batch.passed, batch.checks) == ("batch", True, [])
    assert batch.summary.requests >= 1 and batch.summary.failures == 0
    assert not report.passed
    assert {model for model, _ in progress} == {"assistant", "batch"}


def test_verify_refuses_a_model_without_an_endpoint(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="'assistant' has no endpoint"):
        verify(_desired(tmp_path, {"name": "interactive"}), {}, ["assistant"], lambda model, fields: None)


@pytest.mark.parametrize("users, duration", [(None, "0s"), (None, "soon"), (0, None)])
def test_bad_overrides_are_clear_errors(users, duration) -> None:
    from llmctl.verify.run import parse_overrides

    with pytest.raises(LlmctlError):
        parse_overrides(users, duration)
