"""The rollout's decision record for a terminal, a machine (JSON) and a pull request (markdown)."""
from __future__ import annotations

import json
from typing import Literal

from llmctl.rollout.model import Comparison, RolloutRecord, VersionFigures

Format = Literal["text", "json", "markdown"]
# The figures shown per version, in order, with how each is printed.
_FIGURES: list[tuple[str, str]] = [("requests", "{:.0f}"), ("driven", "{:.0f}"), ("error_rate", "{:.2%}"),
                                   ("ttft_p95_ms", "{:.0f} ms"), ("latency_p95_ms", "{:.0f} ms"),
                                   ("itl_p95_ms", "{:.0f} ms"), ("goodput", "{:.1%}"),
                                   ("cost_per_request_usd", "${:.6f}"), ("ratings", "{:.0f}"),
                                   ("negative_feedback_share", "{:.1%}")]


def render(record: RolloutRecord, format: Format) -> str:
    if format == "json":
        return json.dumps(record.model_dump(mode="json", exclude={"target", "target_lock"}), indent=2)
    if format == "markdown":
        return _markdown(record)
    return _text(record)


def headline(record: RolloutRecord) -> str:
    weights = " → ".join(f"{w}%" for w in record.weights)
    what = f"model {record.model}" + ("'s prompt" if record.kind == "prompt" else "")
    return (f"Rollout '{record.rollout}' of {what} ({record.strategy}: {weights}): {record.status}, "
            f"{record.weight}% of callers on the new version, {100 - record.weight}% on stable"
            + (f"; {record.reason}" if record.reason else ""))


def _text(record: RolloutRecord) -> str:
    lines = [headline(record)]
    for step in record.steps:
        lines.append(f"\n  step {step.index + 1} at {step.weight}%: {step.verdict.upper()}"
                     + (f" ({step.reason})" if step.reason else ""))
        for name, _ in _FIGURES:
            canary, stable = _figure(step.canary, name), _figure(step.stable, name)
            if canary != "-" or stable != "-":
                lines.append(f"    {name:<22} canary {canary:>14}   stable {stable:>14}")
        for comparison in step.comparisons:
            lines.append(f"    {'ok ' if comparison.passed else 'FAIL'} {_held(comparison)}")
    return "\n".join(lines)


def _markdown(record: RolloutRecord) -> str:
    lines = [f"### {headline(record)}", ""]
    for step in record.steps:
        lines += [f"#### Step {step.index + 1} at {step.weight}%: **{step.verdict.upper()}**", "",
                  "| figure | canary | stable |", "|---|---|---|"]
        lines += [f"| {name} | {_figure(step.canary, name)} | {_figure(step.stable, name)} |" for name, _ in _FIGURES
                  if _figure(step.canary, name) != "-" or _figure(step.stable, name) != "-"]
        lines += ["", "| check | verdict |", "|---|---|"]
        lines += [f"| {_held(c)} | {'pass' if c.passed else '**FAIL**'} |" for c in step.comparisons]
        lines.append("")
    return "\n".join(lines)


def _figure(found: VersionFigures | None, name: str) -> str:
    value = getattr(found, name) if found is not None else None
    return "-" if value is None else dict(_FIGURES)[name].format(value)


def _held(comparison: Comparison) -> str:
    figure = "not measured" if comparison.canary is None else f"{comparison.canary:.6g}"
    limit = "" if comparison.limit is None else f" {comparison.comparison} {comparison.limit:.6g}"
    note = f" ({comparison.note})" if comparison.note else ""
    return f"{comparison.name}: {figure}{limit}{note}"

