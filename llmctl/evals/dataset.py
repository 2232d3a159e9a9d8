"""An eval's JSONL dataset: one case a line, read and checked at validate with the dataset's own FILE:LINE."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llmctl.config.errors import Diagnostic
from llmctl.config.schema import EvalCase
from llmctl.evals.checks import assertion_problems


@dataclass(frozen=True)
class Dataset:
    cases: list[EvalCase]


def dataset_path(config_dir: Path, dataset: str) -> Path:
    return (config_dir / dataset).resolve()


def read_dataset(path: Path, shown: str, models: list[str]) -> tuple[Dataset | None, list[Diagnostic]]:
    """The cases, or None with every problem found (each as SHOWN:LINE:COL)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [Diagnostic(shown, 1, 1, f"cannot read the dataset: {exc.strerror}")]
    cases, problems = [], []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        case, found = _case(line, number, shown, models)
        problems += found
        if case is not None:
            cases.append(case)
    if not cases and not problems:
        problems.append(Diagnostic(shown, 1, 1, "the dataset has no cases: one JSON object a line, "
                                                '{"vars": {...}} or {"messages": [...]}'))
    return (None if problems else Dataset(cases)), problems


def _case(line: str, number: int, shown: str, models: list[str]) -> tuple[EvalCase | None, list[Diagnostic]]:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, [Diagnostic(shown, number, exc.colno, f"not a JSON object: {exc.msg}")]
    if not isinstance(raw, dict):
        return None, [Diagnostic(shown, number, 1, "a case is a JSON object: {\"vars\": {...}} or {\"messages\": [...]}")]
    assertions = raw.get("assert") if isinstance(raw.get("assert"), list) else []
    problems = [Diagnostic(shown, number, 1, f"assert[{index}] {field}: {message}")
                for index, assertion in enumerate(assertions) if isinstance(assertion, dict)
                for field, message in assertion_problems(assertion, models)]
    try:
        case = EvalCase.model_validate(raw)
    except ValidationError as exc:
        problems += [Diagnostic(shown, number, 1, _message(error)) for error in exc.errors()]
        return None, problems
    return (None if problems else case), problems


def _message(error: dict) -> str:
    where = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"unknown field '{where}' (a case has vars or messages, and optionally expected and assert)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
