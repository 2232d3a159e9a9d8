"""Each assertion type's verdict on known answers, its `not_` form, and `similar` with the real packaged embedding
model (no stand-in: the verdicts below are ones a user would check by reading the two texts)."""
from __future__ import annotations

from typing import Any

import pytest

from llmctl.config.schema import EvalAssertion
from llmctl.evals.assertions import Answer, check


def _verdict(kind: str, value: Any, text: str, expected: str | None = None, **options: Any) -> tuple[bool, str]:
    answer = Answer(text=text, latency_ms=420.0, cost_usd=0.002)
    verdict = check(EvalAssertion(type=kind, value=value, **options), answer, expected)
    return verdict.passed, verdict.reason


@pytest.mark.parametrize(("kind", "value", "text", "passed"), [
    ("equals", "Paris", "Paris\n", True),
    ("equals", "Paris", "paris", False),
    ("contains", "link", "Use the link.", True),
    ("contains", "Link", "Use the link.", False),
    ("contains", ["portal", "link"], "Use the link.", True),
    ("icontains", "LINK", "Use the link.", True),
    ("contains_all", ["link", "page"], "the link on the page", True),
    ("contains_all", ["link", "email"], "the link on the page", False),
    ("icontains_all", ["LINK", "PAGE"], "the link on the page", True),
    ("regex", r"\b\d{3}-\d{4}\b", "Call 555-0199.", True),
    ("regex", r"^\d+$", "42 apples", False),
    ("starts_with", "Yes", "  Yes, it is.", True),
    ("starts_with", "Yes", "No.", False),
    ("is_json", None, '{"a": 1}', True),
    ("is_json", None, "```json\n{}\n```", False),
    ("min_length", 10, "short", False),
    ("max_length", 10, "short", True),
    ("max_latency_ms", 500, "x", True),
    ("max_latency_ms", 100, "x", False),
    ("max_cost_usd", 0.01, "x", True),
    ("max_cost_usd", 0.001, "x", False),
])
def test_each_type_gives_the_verdict_a_reader_would(kind: str, value: Any, text: str, passed: bool) -> None:
    assert _verdict(kind, value, text)[0] is passed


@pytest.mark.parametrize(("kind", "value", "text"), [
    ("contains", "sorry", "Use the link."),
    ("icontains", ["SORRY", "cannot"], "Use the link."),
    ("regex", "password: \\S+", "Use the link."),
    ("is_json", None, "plain words"),
    ("equals", "no", "yes"),
])
def test_not_inverts_the_verdict(kind: str, value: Any, text: str) -> None:
    positive, _ = _verdict(kind, value, text)
    negated, reason = _verdict(f"not_{kind}", value, text)
    assert negated is not positive and reason.startswith("not: ")


def test_equals_compares_with_the_cases_expected_answer_when_it_has_no_value() -> None:
    assert _verdict("equals", None, "4", expected="4")[0]
    assert not _verdict("equals", None, "5", expected="4")[0]
    passed, reason = _verdict("equals", None, "4")
    assert not passed and "expected answer" in reason


def test_json_schema_names_where_the_document_breaks_it() -> None:
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}
    assert _verdict("json_schema", schema, '{"answer": 4}')[0]
    passed, reason = _verdict("json_schema", schema, '{"answer": "four"}')
    assert not passed and "at answer" in reason and "'four' is not of type 'integer'" in reason
    passed, reason = _verdict("json_schema", schema, "four")
    assert not passed and reason.startswith("is not JSON")


def test_an_unpriced_model_has_no_cost_to_bound() -> None:
    verdict = check(EvalAssertion(type="max_cost_usd", value=0.0001), Answer("x", 1.0, None), None)
    assert verdict.passed and "no per-token price" in verdict.reason


def test_contains_reasons_say_what_was_missing() -> None:
    assert _verdict("contains_all", ["link", "email"], "the link")[1] == "does not contain 'email'"
    assert _verdict("contains", ["a1", "b2"], "none")[1] == "contains none of 'a1', 'b2'"


def test_llm_rubric_is_not_checked_locally() -> None:
    with pytest.raises(ValueError, match="judge"):
        check(EvalAssertion(type="llm_rubric", value="polite", judge="j"), Answer("x", 1.0, None), None)


def test_similar_passes_a_paraphrase_and_fails_an_unrelated_answer() -> None:
    from llmctl.evals.embeddings import similarity

    reference = "Reset your password with the link on the login page."

    def verdict(text: str, kind: str = "similar") -> tuple[bool, float | None]:
        found = check(EvalAssertion(type=kind, value=reference, threshold=0.6), Answer(text, 1.0, None), None,
                      similarity=similarity)
        return found.passed, found.score

    paraphrase, unrelated = verdict("Use the link on the login page to reset your password."), \
        verdict("Our office is open from nine to five on weekdays.")
    assert paraphrase[0] and not unrelated[0]
    assert paraphrase[1] is not None and unrelated[1] is not None and paraphrase[1] > unrelated[1]
    assert verdict("Our office is open from nine to five on weekdays.", "not_similar")[0]
