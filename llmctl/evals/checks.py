"""What each assertion type needs, checked at validate: the type exists, its value is one it can use, and the options
it takes (a similarity threshold, a judge) are given where needed and only there."""
from __future__ import annotations

import re
from typing import Any

from llmctl.config.schema import ASSERTION_TYPES, NEGATABLE
from llmctl.errors import did_you_mean

Problem = tuple[str, str]  # (field of the assertion, message)
KNOWN = (*ASSERTION_TYPES, *(f"not_{t}" for t in NEGATABLE))
# Types whose value may be left out: equals and similar compare with the case's `expected`.
_VALUE_OPTIONAL = {"is_json", "equals", "similar"}


def assertion_problems(assertion: dict[str, Any], models: list[str]) -> list[Problem]:
    kind = assertion.get("type")
    if not isinstance(kind, str):
        return []  # the schema reports a missing or non-text type
    if kind not in KNOWN:
        return [("type", f"unknown assertion type '{kind}'{did_you_mean(kind, KNOWN)} "
                         f"(types: {', '.join(ASSERTION_TYPES)}; not_ before one negates it)")]
    base = kind.removeprefix("not_")
    problems = []
    value = assertion.get("value")
    if value is None and base not in _VALUE_OPTIONAL:
        problems.append(("type", f"{kind} needs a `value`"))
    elif value is not None:
        why = _value_problem(base, value)
        if why:
            problems.append(("value", f"{kind}: {why}"))
    if base == "similar" and assertion.get("threshold") is None:
        problems.append(("type", "similar needs a `threshold`: the lowest cosine similarity that passes, e.g. 0.7"))
    if base != "similar" and "threshold" in assertion:
        problems.append(("threshold", f"{kind} takes no threshold (only similar does)"))
    judge = assertion.get("judge")
    if base == "llm_rubric":
        if judge is None:
            problems.append(("type", "llm_rubric needs a `judge`: a model of this config that grades the answer"))
        elif isinstance(judge, str) and judge not in models:
            problems.append(("judge", f"llm_rubric names judge '{judge}', which is not a declared model"
                                      f"{did_you_mean(judge, models)} (declared: {', '.join(sorted(models)) or 'none'})"))
    elif judge is not None:
        problems.append(("judge", f"{kind} takes no judge (only llm_rubric does)"))
    return problems


def _value_problem(base: str, value: Any) -> str | None:
    if base in ("contains", "icontains"):
        return None if _text_or_texts(value) else "give a text, or a list of texts (any of them passes)"
    if base in ("contains_all", "icontains_all"):
        return None if isinstance(value, list) and _text_or_texts(value) else "give a list of texts (all must appear)"
    if base in ("equals", "starts_with", "similar", "llm_rubric"):
        return None if isinstance(value, str) else "give a text"
    if base == "regex":
        if not isinstance(value, str):
            return "give a regular expression as text"
        try:
            re.compile(value)
        except re.error as exc:
            return f"{value!r} is not a valid regular expression: {exc}"
        return None
    if base == "json_schema":
        return _schema_problem(value)
    if base in ("min_length", "max_length"):
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else \
            "give a whole number of characters, 0 or more"
    if base in ("max_latency_ms", "max_cost_usd"):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else \
            "give a number above 0"
    return "is_json takes no value"  # is_json


def _text_or_texts(value: Any) -> bool:
    texts = value if isinstance(value, list) else [value]
    return bool(texts) and all(isinstance(text, str) and text for text in texts)


def _schema_problem(value: Any) -> str | None:
    from jsonschema import SchemaError, validators  # only configs with a json_schema assertion pay for it

    if not isinstance(value, dict):
        return "give a JSON schema (a mapping, e.g. {type: object, required: [answer]})"
    try:
        validators.validator_for(value).check_schema(value)
    except SchemaError as exc:
        return f"not a valid JSON schema: {exc.message}"
    return None
