"""Each assertion type's verdict on one answer. The types and their values were checked at validate
(llmctl/evals/checks.py), so a value here has the shape its type needs.

Whitespace: `equals` compares the answer and the reference with surrounding whitespace stripped, and `starts_with`
ignores leading whitespace, because engines differ in the newline they put before or after an answer; `contains`,
`regex` and the lengths see the answer as it came. `regex` is Python's `re.search`: its `$` also matches just before
a final newline, where JavaScript's (promptfoo's) does not (benchmarks/README.md lists every such difference).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmctl.config.schema import EvalAssertion

Similarity = Callable[[str, str], float]  # cosine similarity of two texts' embeddings


@dataclass(frozen=True)
class Answer:
    text: str
    latency_ms: float
    cost_usd: float | None  # None: the model has no per-token price


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    score: float | None = None


def check(assertion: EvalAssertion, answer: Answer, expected: str | None,
          similarity: Similarity | None = None) -> Verdict:
    """The verdict of one deterministic or semantic assertion; `not_` types invert it. llm_rubric is graded by a
    judge model, not here."""
    base = assertion.base
    if base == "llm_rubric":
        raise ValueError("llm_rubric is graded by its judge model, not checked locally")
    if base == "similar":
        verdict = _similar(assertion, answer.text, expected, similarity)
    else:
        verdict = _CHECKS[base](assertion.value, answer, expected)
    if not assertion.negated:
        return verdict
    return Verdict(not verdict.passed, f"not: {verdict.reason}", verdict.score)


def _equals(value: Any, answer: Answer, expected: str | None) -> Verdict:
    reference = value if value is not None else expected
    if reference is None:
        return Verdict(False, "nothing to compare with: give the assertion a value or the case an expected answer")
    same = answer.text.strip() == str(reference).strip()
    return Verdict(same, f"equals {str(reference)!r}" if same else f"is not {str(reference)!r}")


def _contains(texts: list[str], answer: str, fold: bool, every: bool) -> Verdict:
    haystack = answer.casefold() if fold else answer
    found = [text for text in texts if (text.casefold() if fold else text) in haystack]
    missing = [text for text in texts if text not in found]
    passed = not missing if every else bool(found)
    if passed:
        return Verdict(True, f"contains {', '.join(repr(t) for t in found)}")
    if every or len(texts) == 1:
        return Verdict(False, f"does not contain {', '.join(repr(t) for t in missing)}")
    return Verdict(False, f"contains none of {', '.join(repr(t) for t in texts)}")


def _listed(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _regex(value: Any, answer: Answer, expected: str | None) -> Verdict:
    match = re.search(value, answer.text)
    return Verdict(bool(match), f"matches /{value}/ at {match.group(0)!r}" if match else f"does not match /{value}/")


def _starts_with(value: Any, answer: Answer, expected: str | None) -> Verdict:
    passed = answer.text.lstrip().startswith(value)
    return Verdict(passed, f"starts with {value!r}" if passed else f"does not start with {value!r}")


def _parsed(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


def _is_json(value: Any, answer: Answer, expected: str | None) -> Verdict:
    _, problem = _parsed(answer.text)
    return Verdict(problem is None, problem or "is JSON")


def _json_schema(value: Any, answer: Answer, expected: str | None) -> Verdict:
    from jsonschema import validators

    document, problem = _parsed(answer.text)
    if problem:
        return Verdict(False, problem)
    error = next(iter(validators.validator_for(value)(value).iter_errors(document)), None)
    if error is None:
        return Verdict(True, "matches the schema")
    where = "/".join(str(part) for part in error.absolute_path) or "the document"
    return Verdict(False, f"does not match the schema at {where}: {error.message}")


def _min_length(value: Any, answer: Answer, expected: str | None) -> Verdict:
    length = len(answer.text)
    return Verdict(length >= value, f"{length} characters (at least {value})", float(length))


def _max_length(value: Any, answer: Answer, expected: str | None) -> Verdict:
    length = len(answer.text)
    return Verdict(length <= value, f"{length} characters (at most {value})", float(length))


def _max_latency_ms(value: Any, answer: Answer, expected: str | None) -> Verdict:
    return Verdict(answer.latency_ms <= value, f"{answer.latency_ms:.0f} ms (at most {value} ms)", answer.latency_ms)


def _max_cost_usd(value: Any, answer: Answer, expected: str | None) -> Verdict:
    if answer.cost_usd is None:
        return Verdict(True, "the model has no per-token price: nothing to bound")
    return Verdict(answer.cost_usd <= value, f"${answer.cost_usd:.6f} (at most ${value})", answer.cost_usd)


def _similar(assertion: EvalAssertion, text: str, expected: str | None, similarity: Similarity | None) -> Verdict:
    reference = assertion.value if assertion.value is not None else expected
    if reference is None:
        return Verdict(False, "nothing to compare with: give the assertion a value or the case an expected answer")
    if similarity is None:
        raise ValueError("similar needs a similarity function")
    score = similarity(text, str(reference))
    threshold = float(assertion.threshold or 0)
    return Verdict(score >= threshold, f"similarity {score:.3f} (at least {threshold})", score)


_CHECKS: dict[str, Callable[[Any, Answer, str | None], Verdict]] = {
    "equals": _equals,
    "contains": lambda value, answer, _: _contains(_listed(value), answer.text, fold=False, every=False),
    "icontains": lambda value, answer, _: _contains(_listed(value), answer.text, fold=True, every=False),
    "contains_all": lambda value, answer, _: _contains(_listed(value), answer.text, fold=False, every=True),
    "icontains_all": lambda value, answer, _: _contains(_listed(value), answer.text, fold=True, every=True),
    "regex": _regex,
    "starts_with": _starts_with,
    "is_json": _is_json,
    "json_schema": _json_schema,
    "min_length": _min_length,
    "max_length": _max_length,
    "max_latency_ms": _max_latency_ms,
    "max_cost_usd": _max_cost_usd,
}
