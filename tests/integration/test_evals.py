"""Evals in the apply gate, for real: the quickstart's llama.cpp model asked through its gateway.

A small model's answers cannot be predicted, and no verdict here may depend on them: the passing eval asks only
that an answer does not contain a string no answer contains (`not_contains`), and the breaking prompt change needs a
variable the eval's cases do not give, so the gateway refuses every case whatever the model would have said."""
from __future__ import annotations

import json
import os
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest
from openai import OpenAI

from support import QUICKSTART_KEY, Run

pytestmark = pytest.mark.integration

EVALS = """
evals:
  - name: sanity
    cases:
      - vars: {question: "How do I reset my password?"}
      - vars: {question: "What are your opening hours?"}
    assert:
      - {type: not_contains, value: "zq-no-answer-says-this-qz"}
"""
BROKEN_TEMPLATE = 'template: "Answer the {{ product }} customer question: {{ question }}"'


def _state(config: Path) -> dict:
    return json.loads((config.parent / ".llmctl" / "state" / "quickstart" / "dev.json").read_text())


@pytest.fixture
def gated(llmctl: Run, quickstart: Path):
    text = quickstart.read_text().replace("    slo: interactive\n", "    slo: interactive\n    evals: [sanity]\n")
    quickstart.write_text(text + EVALS)
    yield quickstart
    state = quickstart.parent / ".llmctl" / "state" / "quickstart" / "dev.json"
    pids = [r["attrs"].get("pid") for r in _state(quickstart)["resources"]] if state.exists() else []
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in pids:
        if pid and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def _skip_load_test(config: Path) -> None:
    # The SLO load test is tests/integration/test_verify.py's subject; here it would only slow the evals down.
    config.write_text(config.read_text().replace("duration: 20s", "duration: 1s").replace(
        "error_rate: 0.01", "error_rate: 1\n    window: 1d").replace("ttft_p95_ms: 3000", "ttft_p95_ms: 600000")
        .replace("latency_p95_ms: 15000", "latency_p95_ms: 600000"))


def test_a_prompt_change_that_fails_the_evals_is_rolled_back_with_exit_5(llmctl: Run, gated: Path) -> None:
    _skip_load_test(gated)
    first = llmctl("apply", "-f", str(gated), "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "passed: 2 of 2 cases (100%, needs 100%)" in first.stdout
    state = _state(gated)
    assert state["serial"] == 1 and state["evals"]["assistant/sanity"]["pass_rate"] == 1.0

    gated.write_text(gated.read_text().replace('template: "Answer the customer question: {{ question }}"',
                                               BROKEN_TEMPLATE).replace("variables: [question]",
                                                                        "variables: [product, question]"))
    broken = llmctl("apply", "-f", str(gated), "--auto-approve")
    assert broken.returncode == 5, broken.stdout + broken.stderr
    assert "evals failed, the change was rolled back (state serial 1)" in broken.stderr
    assert "assistant/sanity: 0 of 2 cases passed (0%, needs 100%)" in broken.stderr
    assert "needs the variable 'product'" in broken.stdout

    state = _state(gated)
    assert state["serial"] == 1 and state["status"] == "rolled_back"
    # The failed run is what status shows; the baseline stays the run of the last apply that succeeded.
    assert state["evals"]["assistant/sanity"]["pass_rate"] == 0.0
    assert state["eval_baseline"]["assistant/sanity"]["pass_rate"] == 1.0
    assert "support-answer" in json.dumps(state["desired"]["prompts"]) and "{{ product }}" not in json.dumps(
        state["desired"]["prompts"])
    gateway = next(r for r in state["resources"] if r["type"] == "local_gateway")
    # The previous prompt serves again: the question alone fills it.
    client = OpenAI(base_url=gateway["endpoint"], api_key=QUICKSTART_KEY, timeout=120, max_retries=0)
    reply = client.chat.completions.create(model="assistant", max_tokens=8, messages=[],
                                           extra_body={"prompt_variables": {"question": "What is a GPU?"},
                                                       "min_tokens": 1})
    assert reply.usage is not None and reply.usage.completion_tokens >= 1
    status = llmctl("status", "-f", str(gated))
    assert "assistant/sanity" in status.stdout and "FAILED: 0 of 2 cases" in status.stdout
    assert "REGRESSED: How do I reset my password?" in status.stdout

    # A change that passes moves the serial and records fresh results (the prompt changed: nothing from the cache).
    gated.write_text(gated.read_text().replace(BROKEN_TEMPLATE, 'template: "Customer question: {{ question }}"')
                     .replace("variables: [product, question]", "variables: [question]"))
    fixed = llmctl("apply", "-f", str(gated), "--auto-approve")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    state = _state(gated)
    result = state["evals"]["assistant/sanity"]
    assert state["serial"] == 2 and result["pass_rate"] == 1.0
    assert not any(sample["cached"] for case in result["cases"] for sample in case["samples"])


STRICT = """
  - name: strict
    on_failure: warn
    cases:
      - vars: {question: "How do I reset my password?"}
    assert:
      - {type: contains, value: "zq-no-answer-says-this-qz"}
"""


def test_llmctl_eval_reports_what_is_deployed(llmctl: Run, gated: Path, tmp_path: Path) -> None:
    _skip_load_test(gated)
    gated.write_text(gated.read_text().replace("evals: [sanity]", "evals: [sanity, strict]") + STRICT)
    applied = llmctl("apply", "-f", str(gated), "--auto-approve")
    # on_failure: warn applies the change and says so.
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "assistant/strict" in applied.stdout and "FAILED: 0 of 1 cases" in applied.stdout
    assert "Warning: evals failed (on_failure: warn): assistant/strict: 0 of 1 cases passed" in applied.stderr

    junit = llmctl("eval", "-f", str(gated), "--format", "junit", "--report", str(tmp_path / "report"))
    assert junit.returncode == 5, junit.stdout + junit.stderr
    suites = {suite.get("name"): suite for suite in ET.fromstring(junit.stdout.split("\n", 1)[1])}
    assert suites["assistant/sanity"].get("failures") == "0" and suites["assistant/strict"].get("failures") == "1"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| `assistant/strict` | 0 of 1 | 0% | 100% | **FAIL** |" in markdown
    assert "How do I reset my password?" in markdown and "does not contain 'zq-no-answer-says-this-qz'" in markdown
    samples = json.loads((tmp_path / "report" / "report.json").read_text())["results"][1]["cases"][0]["samples"]
    assert samples[0]["cached"] and samples[0]["answer"]  # apply asked already: the same answer, not asked again

    only = llmctl("eval", "-f", str(gated), "--eval", "sanity", "--no-cache", "--format", "json")
    assert only.returncode == 0, only.stdout + only.stderr
    [result] = json.loads(only.stdout)["results"]
    assert result["eval"] == "sanity" and not result["cases"][0]["samples"][0]["cached"]
