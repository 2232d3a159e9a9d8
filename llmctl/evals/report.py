"""An eval report as text, JSON, Markdown (for a pull request) or JUnit XML (for CI systems), and as a directory of
all of them. Rendered from the EvalReport alone; nothing is recomputed here."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from llmctl.evals.model import CaseResult, EvalReport, EvalResult
from llmctl.textfmt import md_cell

Format = Literal["text", "json", "markdown", "junit"]
SHOWN_FAILURES = 20  # per eval, in text and Markdown; report.json has every sample


def render(report: EvalReport, fmt: Format, baseline: dict[str, EvalResult] | None = None) -> str:
    if fmt == "json":
        return report.model_dump_json(indent=2) + "\n"
    if fmt == "junit":
        return junit(report)
    if fmt == "markdown":
        return markdown(report, baseline or {})
    return text(report)


def text(report: EvalReport) -> str:
    lines = [line for result in report.results for line in eval_lines(result)]
    return "\n".join(lines) + "\n" if lines else "No evals ran.\n"


def eval_lines(result: EvalResult, limit: int = SHOWN_FAILURES) -> list[str]:
    """The verdict, then each failing case (regressions first) with why."""
    lines = [f"{result.key} ({result.at}): {_verdict(result)}"]
    for case in _failing(result)[:limit]:
        lines.append(f"  {'REGRESSED' if case.regression else 'failed'}: {case.label}")
        lines += [f"    {reason}" for reason in _reasons(case)]
    return lines


def markdown(report: EvalReport, baseline: dict[str, EvalResult]) -> str:
    parts = [f"## Evals: {report.project}/{report.environment}", "",
             "| model/eval | cases passed | pass rate | needs | result |", "|---|---|---|---|---|"]
    for result in report.results:
        passed = sum(case.passed for case in result.cases)
        parts.append(f"| `{result.key}` | {passed} of {len(result.cases)} | {result.pass_rate:.0%} | "
                     f"{result.required:.0%} | {'pass' if result.passed else '**FAIL**'} |")
    for result in report.results:
        failing = _failing(result)
        if not failing:
            continue
        before = {case.id: case for case in baseline[result.key].cases} if result.key in baseline else {}
        parts += ["", f"### Failing cases of `{result.key}`", "", "| case | answer now | answer before | why |",
                  "|---|---|---|---|"]
        for case in failing[:SHOWN_FAILURES]:
            old = before.get(case.id)
            parts.append(f"| {md_cell(case.label)} | {md_cell(_answer(case))} | "
                         f"{md_cell(_answer(old) if old else '-')} | {md_cell('; '.join(_reasons(case)))} |")
    return "\n".join(parts) + "\n"


def junit(report: EvalReport) -> str:
    suites = ET.Element("testsuites", name=f"llmctl evals {report.project}/{report.environment}")
    for result in report.results:
        failing = _failing(result)
        suite = ET.SubElement(suites, "testsuite", name=result.key, tests=str(len(result.cases)),
                              failures=str(len(failing)), errors="0")
        for case in result.cases:
            element = ET.SubElement(suite, "testcase", name=case.label, classname=result.key.replace("/", "."))
            if not case.passed:
                failure = ET.SubElement(element, "failure", message="; ".join(_reasons(case))[:500])
                failure.text = _answer(case)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_report_dir(report: EvalReport, directory: Path, baseline: dict[str, EvalResult]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fmt in (("report.json", "json"), ("report.md", "markdown"), ("junit.xml", "junit")):
        path = directory / name
        path.write_text(render(report, fmt, baseline))  # type: ignore[arg-type]
        written.append(path)
    return written


def _verdict(result: EvalResult) -> str:
    passed = sum(case.passed for case in result.cases)
    regressed = f", {len(result.regressions)} regressed" if result.baseline and result.regressions else ""
    word = "passed" if result.passed else "FAILED"
    return (f"{word}: {passed} of {len(result.cases)} cases ({result.pass_rate:.0%}, needs "
            f"{result.required:.0%}){regressed}")


def _failing(result: EvalResult) -> list[CaseResult]:
    # Regressions first: they are what the change broke.
    return sorted((case for case in result.cases if not case.passed), key=lambda case: not case.regression)


def _reasons(case: CaseResult) -> list[str]:
    reasons: list[str] = []
    for sample in case.samples:
        found = [sample.error] if sample.error else [f"{a.type}: {a.reason}" for a in sample.assertions if not a.passed]
        reasons += [reason for reason in found if reason and reason not in reasons]
    return reasons


def _answer(case: CaseResult) -> str:
    answers = [sample.answer for sample in case.samples if sample.answer is not None]
    return answers[0] if answers else "(no answer)"
