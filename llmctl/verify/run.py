"""Run the SLO load test for deployed models: spec → worker subprocess → samples → summary → SLO checks."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmctl.config.schema import LoadTest, Slo, duration_seconds
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.gateway.build import read_verify_key
from llmctl.state import LocalBackend, State
from llmctl.verify.model import LoadSpec, ModelVerification, VerificationReport, WorkerResult
from llmctl.verify.prompts import load_prompts
from llmctl.verify.slo import evaluate, meets_targets
from llmctl.verify.stats import summarise
from llmctl.workspace import Workspace

# (model, progress fields from the worker: elapsed_s, requests, failures, p95_ms)
Progress = Callable[[str, dict[str, Any]], None]
# Beyond the test's own duration and one request timeout, what the worker may take to start and stop.
_WORKER_SLACK_S = 60.0


@dataclass(frozen=True)
class Overrides:
    users: int | None = None
    duration: str | None = None


def load_spec(desired: Desired, model: str, endpoints: list[str], overrides: Overrides = Overrides()) -> LoadSpec:
    entry = desired.models[model]
    slo = desired.slos.get(entry.slo) if entry.slo else None
    test = slo.loadtest if slo else LoadTest()
    prompts_file = desired.config_dir / test.prompts_file if test.prompts_file else None
    # A request may take a few times the latency target before it counts as hung.
    timeout = min(max(3 * slo.latency_p95_ms / 1000, 10.0), 120.0) if slo and slo.latency_p95_ms else 60.0
    return LoadSpec(
        model=model, served_name=model, endpoints=endpoints,
        users=overrides.users or test.users, spawn_rate=test.spawn_rate,
        duration_s=duration_seconds(overrides.duration or test.duration), max_tokens=test.max_tokens,
        prompts=load_prompts(desired.prompts.get(entry.prompt) if entry.prompt else None, prompts_file),
        request_timeout_s=timeout,
        api_key=read_verify_key(Workspace(desired.config_dir / "llmops.yaml", desired.project,
                                          desired.environment).run_dir),
    )


def run_worker(spec: LoadSpec, progress: Callable[[dict[str, Any]], None], *, python: str = sys.executable,
               deadline_s: float | None = None) -> WorkerResult:
    """Run the Locust worker in its own process (gevent must never patch this one), with the `python` interpreter,
    under a hard deadline: `deadline_s`, by default the test's duration, one request timeout and the slack."""
    deadline = spec.duration_s + spec.request_timeout_s + _WORKER_SLACK_S if deadline_s is None else deadline_s
    with tempfile.TemporaryDirectory(prefix="llmctl-loadtest-") as scratch:
        spec_path, result_path, log_path = (Path(scratch) / name for name in ("spec.json", "result.json", "log"))
        spec_path.write_text(spec.model_dump_json())
        with log_path.open("w") as log:
            proc = subprocess.Popen([python, "-m", "llmctl.verify.loadtest_worker", str(spec_path),
                                     str(result_path)], stdout=subprocess.PIPE, stderr=log, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            timer = threading.Timer(deadline, proc.kill)
            timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("PROGRESS "):
                        progress(json.loads(line.removeprefix("PROGRESS ")))
                code = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:  # we are leaving early (an exception, Ctrl-C): the load must stop too
                    proc.kill()
                    proc.wait()
        if code != 0 or not result_path.exists():
            why = f"was stopped after its {deadline:.0f}s deadline" if code == -9 else f"died (exit code {code})"
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-12:])
            raise LlmctlError(f"the load-test worker for model '{spec.model}' {why}; its last output:\n{tail}")
        return WorkerResult.model_validate_json(result_path.read_text())


def verify(desired: Desired, endpoints: dict[str, list[str]], models: list[str], progress: Progress,
           overrides: Overrides = Overrides()) -> VerificationReport:
    """Load-test each model in turn against its SLO (a model without one is measured, with nothing to pass)."""
    report = VerificationReport(project=desired.project, environment=desired.environment, results=[])
    for model in models:
        if not endpoints.get(model):
            raise LlmctlError(f"model '{model}' has no endpoint in state: apply it first")
        spec = load_spec(desired, model, endpoints[model], overrides)
        result = run_worker(spec, lambda fields, model=model: progress(model, fields))
        entry = desired.models[model]
        slo = desired.slos[entry.slo] if entry.slo else Slo(name="none")
        summary = summarise(result.samples, result.elapsed_s, spec.users, meets_targets(slo))
        checks = evaluate(slo, summary)
        report.results.append(ModelVerification(
            model=model, slo=slo.name, passed=all(check.passed for check in checks), checks=checks,
            summary=summary, at=datetime.now(timezone.utc).isoformat(timespec="seconds")))
        report.samples[model] = result.samples
    return report


def deployed(state: State, config_dir: Path, names: list[str] | None) -> tuple[Desired, list[str]]:
    """What is deployed, and which of its models to test: those named, else every one with an SLO."""
    if not state.desired or not state.endpoints:
        raise LlmctlError("nothing is deployed in this environment: run `llmctl apply` first")
    desired = Desired.from_parts(state.desired, config_dir)
    if not names:
        models = [name for name, model in desired.models.items() if model.slo and state.endpoints.get(name)]
        if not models:
            raise LlmctlError("no deployed model declares an SLO: name one with --model to measure it anyway")
        return desired, models
    unknown = [name for name in names if not state.endpoints.get(name)]
    if unknown:
        raise LlmctlError(f"model {', '.join(unknown)} has no endpoint in state (deployed: "
                          f"{', '.join(sorted(state.endpoints)) or 'none'})")
    return desired, names


def record(backend: LocalBackend, report: VerificationReport) -> None:
    """Keep each model's last result in state; results are observations, so the serial does not move."""
    state = backend.read()
    state.verification = {**state.verification, **report.for_state()}
    backend.write(state)


def parse_overrides(users: int | None, duration: str | None) -> Overrides:
    if duration is not None and (not re.fullmatch(r"[0-9]+(\.[0-9]+)?(ms|s|m|h)", duration)
                                 or duration_seconds(duration) <= 0):
        raise LlmctlError(f"--duration {duration!r} must be a positive duration such as 30s, 2m or 1h")
    if users is not None and users < 1:
        raise LlmctlError("--users must be at least 1")
    return Overrides(users=users, duration=duration)


def drive(desired: Desired, endpoints: list[str], model: str, headers: dict[str, str], requests: int,
          progress: Callable[[dict[str, Any]], None] = lambda fields: None) -> WorkerResult:
    """Send `requests` requests of the model's SLO load test (its users, prompts and max_tokens) with `headers`,
    however long they take within a deadline of one request timeout each: a rollout's analysis load."""
    spec = load_spec(desired, model, endpoints)
    spec = spec.model_copy(update={"headers": headers, "max_requests": requests,
                                   "duration_s": requests * spec.request_timeout_s / spec.users + _WORKER_SLACK_S})
    return run_worker(spec, progress)
