"""Run a model's evals through its gateway route: the same key handling, prompt rendering and guardrails users get.

Each case is asked `repeat` times (temperature 0); a case passes when a majority of its samples pass every
assertion. Answers are cached by what could change them (the model's identity from the lock, its prompt and
guardrails, the case, the sampling parameters, the sample's index), and judge gradings by (judge, rubric, answer),
so a run after a change that touched none of those asks nothing again.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from llmctl.atomic import write_atomic
from llmctl.config.schema import Eval, EvalAssertion, EvalCase, Model
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.evals.dataset import dataset_path, read_dataset
from llmctl.evals.model import AssertionResult, CaseResult, EvalReport, EvalResult, SampleResult
from llmctl.gateway.build import read_key, read_verify_key, settings
from llmctl.gateway.spec import Price
from llmctl.gateway.routing import VERSION_HEADER
from llmctl.lock import Lock

SAMPLING: dict[str, Any] = {"temperature": 0.0, "max_tokens": 256}
REQUEST_TIMEOUT_S = 120.0
RATE_LIMITED_RETRIES = 3
MAX_RETRY_AFTER_S = 60.0
HOSTED_CONCURRENCY = 4  # a hosted model takes parallel requests; a local replica answers one at a time
GRADER = ("You grade an answer against a rubric. Reply with one JSON object and nothing else: "
          '{"pass": true or false, "reason": "one short sentence"}.')
VERDICT = {"type": "object", "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}},
           "required": ["pass", "reason"], "additionalProperties": False}
# How each server is asked for output constrained to a JSON schema: a small judge model that is only *told* to answer
# in JSON often does not. llama.cpp turns `schema` into a grammar; vLLM and OpenAI take OpenAI's json_schema form.
# Others (TGI, other hosted APIs) are asked by the prompt alone.
_LLAMA_CPP_FORMAT = {"type": "json_object", "schema": VERDICT}
_OPENAI_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True}}

Progress = Callable[[str, int, int], None]  # (model/eval, cases done, cases)


@dataclass(frozen=True)
class Route:
    """Where a model is asked, and what identifies the answers it gives (for the cache)."""

    endpoint: str  # the gateway's OpenAI base URL, ending in /v1
    identity: str
    price: Price | None
    concurrency: int
    verdict_format: dict[str, Any] | None = None  # as a judge: the response_format that holds it to a verdict
    version: str | None = None  # a rollout's version the gateway is asked for (VERSION_HEADER); None: as callers get


@dataclass(frozen=True)
class Caller:
    """Who the cases are asked as: a gateway key, and the rate its requests_per_minute allows."""

    api_key: str | None
    requests_per_minute: int | None = None


@dataclass(frozen=True)
class Setup:
    desired: Desired
    routes: dict[str, Route]
    callers: dict[str | None, Caller]  # gateway key name -> its caller; None: llmctl's own key (judges use it too)
    cache_dir: Path | None  # None: --no-cache
    baseline: dict[str, EvalResult]


def make_setup(desired: Desired, lock: Lock | None, endpoints: dict[str, list[str]], prices: dict[str, Price | None],
               run_dir: Path, baseline: dict[str, EvalResult], use_cache: bool = True,
               versions: dict[str, str] | None = None) -> Setup:
    """Routes for every model with an endpoint (judges included), and the keys the evals ask with: llmctl's own,
    and each gateway key an eval names (read as apply reads it: from its variable or file). `versions`: the
    rollout version each model named is asked at (a rollout's analysis evaluates its new version)."""
    routes = {}
    for name, model in desired.models.items():
        if not endpoints.get(name):
            continue
        locked = lock.models.get(name) if lock else None
        identity = _sha([model.source, locked.model_dump(mode="json") if locked else None,
                         desired.prompts[model.prompt].model_dump(mode="json") if model.prompt else None,
                         [desired.guardrails[g].model_dump(mode="json") for g in model.guardrails]])
        replicas = model.replicas if isinstance(model.replicas, int) else model.replicas.min
        routes[name] = Route(endpoint=endpoints[name][0], identity=identity, price=prices.get(name),
                             concurrency=HOSTED_CONCURRENCY if model.parsed_source.hosted else replicas,
                             verdict_format=_verdict_format(model), version=(versions or {}).get(name))
    callers: dict[str | None, Caller] = {None: Caller(read_verify_key(run_dir))}
    for key in settings(desired).keys:
        if any(evaluation.key == key.name for evaluation in desired.evals.values()):
            callers[key.name] = Caller(read_key(key, desired.config_dir), key.requests_per_minute)
    return Setup(desired=desired, routes=routes, callers=callers,
                 cache_dir=run_dir / "evals" / "cache" if use_cache else None, baseline=baseline)


def _verdict_format(model: Model) -> dict[str, Any] | None:
    source = model.parsed_source
    if source.hosted:
        return _OPENAI_FORMAT if source.location.startswith("openai/") and not model.api_base else None
    return {"llama-cpp": _LLAMA_CPP_FORMAT, "vllm": _OPENAI_FORMAT}.get(model.engine or "")


def run_evals(setup: Setup, runs: list[str], repeat: int | None = None,
              progress: Progress = lambda what, done, total: None) -> EvalReport:
    """Run each MODEL/EVAL of `runs`, in order."""
    desired = setup.desired
    planned = []  # (model, eval, its cases): each dataset read once
    for run in runs:
        model, name = run.split("/", 1)
        evaluation = desired.evals[name]
        planned.append((model, evaluation, cases_of(desired, evaluation)))
    if any(a.base == "similar" for _, evaluation, cases in planned
           for a in [*evaluation.assert_, *(a for case in cases for a in case.assert_)]):
        from llmctl.evals.embeddings import require

        require()
    report = EvalReport(project=desired.project, environment=desired.environment)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as client:
        asker = _Asker(setup, client)
        for model, evaluation, cases in planned:
            report.results.append(_run_one(setup, asker, model, evaluation, cases, repeat or evaluation.repeat,
                                           progress))
    return report


def cases_of(desired: Desired, evaluation: Eval) -> list[EvalCase]:
    """The dataset's cases, then the inline ones."""
    cases: list[EvalCase] = []
    if evaluation.dataset:
        path = dataset_path(desired.config_dir, evaluation.dataset)
        dataset, problems = read_dataset(path, evaluation.dataset, list(desired.models))
        if dataset is None:
            raise LlmctlError("\n".join(str(problem) for problem in problems))
        cases += dataset.cases
    return cases + evaluation.cases


def case_id(case: EvalCase) -> str:
    """A hash of what the case asks (its vars or messages), not of what it expects: editing a case's assertions
    neither asks the model again nor makes the baseline forget the case."""
    return _sha(case.model_dump(mode="json", include={"vars", "messages"}, exclude_none=True))[:12]


def _run_one(setup: Setup, asker: "_Asker", model: str, evaluation: Eval, cases: list[EvalCase], repeat: int,
             progress: Progress) -> EvalResult:
    route = setup.routes[model]
    done = 0
    counting = threading.Lock()
    what = f"{model}/{evaluation.name}"
    # The same question twice in one eval (with other assertions) is two cases: the second id says which.
    seen: dict[str, int] = {}
    ids = []
    for case in cases:
        plain = case_id(case)
        seen[plain] = seen.get(plain, 0) + 1
        ids.append(plain if seen[plain] == 1 else f"{plain}-{seen[plain]}")

    def one(numbered: tuple[str, EvalCase]) -> CaseResult:
        nonlocal done
        identity, case = numbered
        samples = [asker.sample(model, evaluation.key, case, index, [*case.assert_, *evaluation.assert_])
                   for index in range(repeat)]
        with counting:
            done += 1
            progress(what, done, len(cases))
        return CaseResult(id=identity, label=_label(case), samples=samples,
                          passed=sum(s.passed for s in samples) * 2 > len(samples))

    progress(what, 0, len(cases))
    with ThreadPoolExecutor(max_workers=max(1, route.concurrency)) as pool:
        results = list(pool.map(one, zip(ids, cases)))
    before = setup.baseline.get(f"{model}/{evaluation.name}")
    passed_before = {case.id for case in before.cases if case.passed} if before else set()
    for result in results:
        result.regression = not result.passed and result.id in passed_before
    rate = sum(result.passed for result in results) / len(results) if results else 1.0
    return EvalResult(eval=evaluation.name, model=model, at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      pass_rate=rate, required=evaluation.pass_rate, baseline=evaluation.baseline,
                      on_failure=evaluation.on_failure, cases=results)


class _Pace:
    """Starts requests no faster than a key's requests_per_minute allows, across the runner's threads."""

    def __init__(self, per_minute: int) -> None:
        self._interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(start - now)


class _Asker:
    def __init__(self, setup: Setup, client: httpx.Client) -> None:
        self._setup = setup
        self._client = client
        self._paces = {name: _Pace(caller.requests_per_minute) for name, caller in setup.callers.items()
                       if caller.requests_per_minute}

    def sample(self, model: str, key: str | None, case: EvalCase, index: int,
               assertions: list[EvalAssertion]) -> SampleResult:
        route = self._setup.routes[model]
        request = {"model": model, **SAMPLING}
        if case.vars is not None:
            request["prompt_variables"] = case.vars
        else:
            request["messages"] = [m.model_dump() for m in case.messages or []]
        # The key is part of what is asked: another key may be served other models, limits or guardrails' team.
        cache_key = ["answer", route.identity, key, case_id(case), SAMPLING, index]
        answer, cached = self._cached(cache_key, lambda: self._ask(route, request, key))
        sample = SampleResult(**answer, cached=cached)
        if sample.error is None:
            sample.assertions = [self._judge(assertion, sample, case.expected) for assertion in assertions]
        return sample

    def _ask(self, route: Route, request: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        caller = self._setup.callers[key]
        headers = {"authorization": f"Bearer {caller.api_key}"} if caller.api_key else {}
        if route.version is not None:
            headers[VERSION_HEADER] = route.version
        for attempt in range(RATE_LIMITED_RETRIES + 1):
            if key in self._paces:
                self._paces[key].wait()
            started = time.perf_counter()
            try:
                response = self._client.post(f"{route.endpoint.rstrip('/')}/chat/completions", json=request,
                                             headers=headers)
            except httpx.HTTPError as exc:
                return {"answer": None, "error": f"no answer from {route.endpoint}: {exc}"}
            latency_ms = (time.perf_counter() - started) * 1000
            # Others share the key's limit: a 429 says when to come back, and a case is not failed for it.
            if not _rate_limited(response) or attempt == RATE_LIMITED_RETRIES:
                break
            time.sleep(_retry_after(response))
        if response.status_code != 200:
            return {"answer": None, "error": f"HTTP {response.status_code}: {_error_text(response)}",
                    "latency_ms": latency_ms}
        body = response.json()
        text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        return {"answer": text, "latency_ms": latency_ms, "cost_usd": _cost(route.price, body.get("usage") or {})}

    def _judge(self, assertion: EvalAssertion, sample: SampleResult, expected: str | None) -> AssertionResult:
        from llmctl.evals.assertions import Answer, check

        if assertion.base == "llm_rubric":
            return self._grade(assertion, sample.answer or "")
        similarity = None
        if assertion.base == "similar":
            from llmctl.evals.embeddings import similarity  # loads the embedding model: only when needed
        answer = Answer(text=sample.answer or "", latency_ms=sample.latency_ms or 0.0, cost_usd=sample.cost_usd)
        verdict = check(assertion, answer, expected, similarity=similarity)
        return AssertionResult(type=assertion.type, passed=verdict.passed, reason=verdict.reason, score=verdict.score)

    def _grade(self, assertion: EvalAssertion, answer: str) -> AssertionResult:
        judge = assertion.judge or ""
        route = self._setup.routes.get(judge)
        if route is None:
            return AssertionResult(type=assertion.type, passed=False,
                                   reason=f"judge '{judge}' is not deployed, so the rubric was not graded")
        request = {"model": judge, **SAMPLING, "messages": [
            {"role": "system", "content": GRADER},
            {"role": "user", "content": f"Rubric: {assertion.value}\n\nAnswer:\n{answer}"}]}
        if route.verdict_format:
            request["response_format"] = route.verdict_format
        graded, _ = self._cached(["grade", route.identity, str(assertion.value), answer, SAMPLING,
                                  route.verdict_format],
                                 lambda: self._ask(route, request))
        verdict = _parse_grade(graded)
        return AssertionResult(type=assertion.type, passed=verdict[0], reason=verdict[1])

    def _cached(self, key: list[Any], ask: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        directory = self._setup.cache_dir
        path = directory / f"{_sha(key)}.json" if directory else None
        if path is not None and path.exists():
            return json.loads(path.read_text()), True
        found = ask()
        if path is not None and found.get("error") is None:  # a failure is retried next time, never remembered
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(found).encode(), mode=0o644)
        return found, False


def _rate_limited(response: httpx.Response) -> bool:
    """A 429 for the key's per-minute limit; a 429 for an exhausted budget lasts until the period ends."""
    if response.status_code != 429:
        return False
    try:
        return response.json().get("error", {}).get("code") == "rate_limit_exceeded"
    except (ValueError, AttributeError):
        return True  # another gateway's 429 without our error body: a rate limit


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "1")), MAX_RETRY_AFTER_S)
    except ValueError:
        return 1.0


def _parse_grade(graded: dict[str, Any]) -> tuple[bool, str]:
    if graded.get("error"):
        return False, f"the judge did not answer: {graded['error']}"
    text = graded.get("answer") or ""
    start, end = text.find("{"), text.rfind("}")
    try:
        verdict = json.loads(text[start:end + 1]) if start >= 0 else None
    except json.JSONDecodeError:
        verdict = None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("pass"), bool):
        return False, f"the judge's reply was not a verdict: {text[:120]!r}"
    return verdict["pass"], str(verdict.get("reason") or "")


def _cost(price: Price | None, usage: dict[str, Any]) -> float | None:
    if price is None:
        return None
    return (usage.get("prompt_tokens", 0) * price.usd_per_1m_input
            + usage.get("completion_tokens", 0) * price.usd_per_1m_output) / 1_000_000


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("message") or response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]


def _label(case: EvalCase) -> str:
    text = " ".join(case.vars.values()) if case.vars is not None else (case.messages[-1].content
                                                                         if case.messages else "")
    return text if len(text) <= 80 else text[:77] + "..."


def _sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
