"""`llmctl guardrails eval FILE`: the prompt-injection detector's precision and recall on a team's own texts.

FILE is JSONL, one labelled text a line: `{"text": "...", "label": 1}` (1 or true or "injection": an attack; 0 or
false or "benign": not). Every line is read before anything is scored, and every bad line is reported at once as
FILE:LINE:COL. The report gives, for each sensitivity, what `prompt_injection: block` would have blocked: attacks
caught (recall), benign texts blocked (false-positive rate) and precision, beside the figures the shipped model had
on its own dev set, so a team can see how its traffic differs before turning `block` on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from llmctl.config.errors import ConfigError, Diagnostic
from llmctl.gateway.injection import SENSITIVITIES, detect, shipped_model

_LABELS = {1: 1, 0: 0, True: 1, False: 0, "injection": 1, "benign": 0}


class Labelled(BaseModel):
    line: int
    text: str
    label: Literal[0, 1]


@dataclass(frozen=True)
class Counts:
    """What a detector that fired on `fired` did to texts labelled `labels` (1: an attack)."""

    caught: int  # attacks it fired on
    missed: int
    false_positives: int  # benign texts it fired on
    benign: int

    @property
    def precision(self) -> float | None:  # None when it fired on nothing
        fired = self.caught + self.false_positives
        return self.caught / fired if fired else None

    @property
    def recall(self) -> float | None:  # None when there are no attacks
        attacks = self.caught + self.missed
        return self.caught / attacks if attacks else None

    @property
    def false_positive_rate(self) -> float | None:  # None when there are no benign texts
        return self.false_positives / self.benign if self.benign else None


def counts(fired: list[bool], labels: list[int]) -> Counts:
    caught = sum(1 for f, y in zip(fired, labels) if f and y)
    false_positives = sum(1 for f, y in zip(fired, labels) if f and not y)
    attacks = sum(labels)
    return Counts(caught, attacks - caught, false_positives, len(labels) - attacks)


class AtSensitivity(BaseModel):
    sensitivity: str
    threshold: float
    caught: int  # attacks that would be blocked
    missed: int
    false_positives: int  # benign texts that would be blocked
    precision: float | None  # None when nothing would be blocked
    recall: float | None  # None when the file has no attacks
    false_positive_rate: float | None  # None when the file has no benign texts
    dev_precision: float
    dev_recall: float
    dev_false_positive_rate: float


class InjectionEval(BaseModel):
    file: str
    injections: int
    benign: int
    model_trained: str
    rows: list[AtSensitivity]
    missed_examples: list[int]  # line numbers of attacks missed at medium (the first ten)
    false_positive_examples: list[int]  # line numbers of benign texts blocked at medium (the first ten)


def read_labelled(path: Path) -> list[Labelled]:
    shown = str(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as exc:
        raise ConfigError([Diagnostic(shown, 1, 1, f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Diagnostic(shown, 1, 1, "not UTF-8 text: save the file as UTF-8 JSONL")]) from None
    records: list[Labelled] = []
    problems: list[Diagnostic] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Diagnostic(shown, number, exc.colno, f"not a JSON object: {exc.msg}"))
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
            problems.append(Diagnostic(shown, number, 1, 'each line is {"text": "...", "label": 1 or 0}: '
                                                         '"text" (a string) is missing'))
            continue
        label = raw.get("label")
        if isinstance(label, str):
            label = label.lower()
        if label not in _LABELS or isinstance(label, float):
            problems.append(Diagnostic(shown, number, 1, f"label: {raw.get('label')!r} is not one of 1/0, true/false, "
                                                         '"injection"/"benign"'))
            continue
        records.append(Labelled(line=number, text=raw["text"], label=_LABELS[label]))
    if not records and not problems:
        problems.append(Diagnostic(shown, 1, 1, 'the file has no labelled texts: one {"text": "...", "label": 1} '
                                                "a line"))
    if problems:
        raise ConfigError(problems)
    return records


def evaluate(path: Path) -> InjectionEval:
    records = read_labelled(path)
    model = shipped_model()
    scores = [detect(record.text, model).score for record in records]
    injections = sum(record.label for record in records)
    benign = len(records) - injections
    rows = []
    labels = [record.label for record in records]
    for sensitivity in SENSITIVITIES:
        threshold = model.thresholds[sensitivity]
        found = counts([score >= threshold for score in scores], labels)
        dev = model.about["dev"][sensitivity]
        rows.append(AtSensitivity(
            sensitivity=sensitivity, threshold=threshold, caught=found.caught, missed=found.missed,
            false_positives=found.false_positives, precision=found.precision, recall=found.recall,
            false_positive_rate=found.false_positive_rate, dev_precision=dev["precision"], dev_recall=dev["recall"],
            dev_false_positive_rate=dev["false_positive_rate"]))
    medium = model.thresholds["medium"]
    return InjectionEval(
        file=str(path), injections=injections, benign=benign, model_trained=str(model.about.get("trained", "")),
        rows=rows,
        missed_examples=[r.line for r, s in zip(records, scores) if r.label and s < medium][:10],
        false_positive_examples=[r.line for r, s in zip(records, scores) if not r.label and s >= medium][:10])


def render(report: InjectionEval, format: Literal["text", "json"]) -> str:
    if format == "json":
        return report.model_dump_json(indent=2)

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    lines = [f"{report.file}: {report.injections} injections, {report.benign} benign texts "
             f"(detector trained {report.model_trained})", "",
             f"{'sensitivity':<12} {'threshold':>9} {'recall':>8} {'false pos.':>10} {'precision':>9}   "
             f"{'dev recall':>10} {'dev false pos.':>14} {'dev precision':>13}"]
    for row in report.rows:
        lines.append(f"{row.sensitivity:<12} {row.threshold:>9.3f} {share(row.recall):>8} "
                     f"{share(row.false_positive_rate):>10} {share(row.precision):>9}   {row.dev_recall:>10.1%} "
                     f"{row.dev_false_positive_rate:>14.1%} {row.dev_precision:>13.1%}")
    lines.append("")
    lines.append("recall: attacks `prompt_injection: block` would stop; false pos.: benign texts it would block")
    if report.missed_examples:
        lines.append(f"missed at medium, lines: {', '.join(map(str, report.missed_examples))}")
    if report.false_positive_examples:
        lines.append(f"blocked benign at medium, lines: {', '.join(map(str, report.false_positive_examples))}")
    return "\n".join(lines)
