"""A rollout's decision record as the terminal, a machine (JSON) and a pull request (markdown) read it: every step's
verdict, both versions' figures ("-" where a version measured nothing) and each check that failed."""
from __future__ import annotations

import json

from llmctl.config.schema import Config
from llmctl.rollout.model import Comparison, RolloutRecord, StepRecord, VersionFigures
from llmctl.rollout.report import render

# Figures the aborted step's canary measured, as the report prints them; itl and cost it did not measure.
CANARY_SHOWN = {"requests": "60", "driven": "10", "error_rate": "0.00%", "ttft_p95_ms": "900 ms",
                "latency_p95_ms": "1200 ms", "goodput": "95.0%"}


def record() -> RolloutRecord:
    passed = StepRecord(
        index=0, weight=50, started_at="2025-01-01T00:00:00+00:00", ended_at="2025-01-01T00:01:00+00:00",
        canary=VersionFigures(requests=55, errors=0, error_rate=0.0, ttft_p95_ms=300.0, latency_p95_ms=800.0),
        stable=VersionFigures(requests=52, errors=1, error_rate=0.02, ttft_p95_ms=320.0, latency_p95_ms=850.0,
                              goodput=0.97),
        comparisons=[Comparison(name="ttft_p95_ms", canary=300.0, stable=320.0, limit=500, passed=True,
                                note="SLO interactive")],
        verdict="passed")
    failed = StepRecord(
        index=1, weight=100, started_at="2025-01-01T00:01:00+00:00", ended_at="2025-01-01T00:02:00+00:00",
        canary=VersionFigures(requests=60, errors=0, driven=10, error_rate=0.0, ttft_p95_ms=900.0,
                              latency_p95_ms=1200.0, goodput=0.95),
        stable=None,
        comparisons=[Comparison(name="error_rate", canary=0.0, limit=0.05, passed=True, note="SLO interactive"),
                     Comparison(name="ttft_p95_ms", canary=900.0, limit=500, passed=False,
                                note="SLO interactive")],
        verdict="failed", reason="ttft_p95_ms 900 (limit <= 500)")
    return RolloutRecord(model="assistant", rollout="canary", strategy="canary", status="aborted", weight=0, step=1,
                         weights=[50, 100], steps=[passed, failed],
                         reason="step 2 (100%): ttft_p95_ms 900 (limit <= 500)",
                         started_at="2025-01-01T00:00:00+00:00", from_serial=1,
                         target=Config(version=1, project="p", environment="dev"))


def test_json_has_the_steps_and_their_figures_but_not_the_config_rolled_out() -> None:
    found = json.loads(render(record(), "json"))
    assert "target" not in found and "target_lock" not in found
    assert found["status"] == "aborted"
    assert [(s["index"], s["verdict"]) for s in found["steps"]] == [(0, "passed"), (1, "failed")]
    assert found["steps"][1]["canary"]["ttft_p95_ms"] == 900.0
    assert found["steps"][1]["stable"] is None
    assert found["steps"][0]["stable"]["error_rate"] == 0.02
    assert found["steps"][1]["comparisons"][1] == {"name": "ttft_p95_ms", "canary": 900.0, "stable": None,
                                                   "limit": 500.0, "comparison": "<=", "passed": False,
                                                   "note": "SLO interactive"}


def test_markdown_has_a_row_per_figure_shown_and_a_fail_row_per_failed_check() -> None:
    text = render(record(), "markdown")
    assert text.startswith("### Rollout 'canary' of model assistant (canary: 50% → 100%): aborted")
    failed_step = text.split("#### Step 2 at 100%: **FAILED**", 1)[1]
    figures = failed_step.split("| check | verdict |", 1)[0]
    rows = [line for line in figures.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    # No stable version at 100%: its column is "-"; figures neither version measured get no row.
    assert rows == [f"| {name} | {shown} | - |" for name, shown in CANARY_SHOWN.items()]
    assert "| ttft_p95_ms: 900 <= 500 (SLO interactive) | **FAIL** |" in failed_step
    assert "| error_rate: 0 <= 0.05 (SLO interactive) | pass |" in failed_step
    assert text.count("**FAIL**") == 1


def test_text_has_the_headline_the_figures_and_the_failed_check() -> None:
    text = render(record(), "text")
    lines = text.splitlines()
    assert lines[0].startswith("Rollout 'canary' of model assistant (canary: 50% → 100%): aborted, "
                               "0% of callers on the new version, 100% on stable; step 2 (100%)")
    assert "  step 2 at 100%: FAILED (ttft_p95_ms 900 (limit <= 500))" in lines
    assert "    FAIL ttft_p95_ms: 900 <= 500 (SLO interactive)" in lines
    failed_step = text.split("step 2 at 100%", 1)[1].splitlines()
    shown = {line.split()[0]: line.split()[1:] for line in failed_step if line.split()[1:2] == ["canary"]}
    assert shown["ttft_p95_ms"] == ["canary", "900", "ms", "stable", "-"]
    assert set(shown) == set(CANARY_SHOWN)


def test_a_figure_neither_version_measured_is_left_out_and_one_missing_for_a_version_is_a_dash() -> None:
    text = render(record(), "text")
    first_step = text.split("step 1 at 50%", 1)[1].split("step 2 at", 1)[0].splitlines()
    shown = {line.split()[0]: line.split()[1:] for line in first_step if line.split()[1:2] == ["canary"]}
    assert shown["goodput"] == ["canary", "-", "stable", "97.0%"]
    assert "itl_p95_ms" not in shown and "cost_per_request_usd" not in shown
    markdown = render(record(), "markdown")
    assert "| goodput | - | 97.0% |" in markdown
    assert "itl_p95_ms" not in markdown and "cost_per_request_usd" not in markdown


def test_a_prompt_rollout_is_named_as_one() -> None:
    prompt = record().model_copy(update={"kind": "prompt"})
    assert render(prompt, "text").startswith("Rollout 'canary' of model assistant's prompt (canary: 50% → 100%)")
    assert render(record(), "text").startswith("Rollout 'canary' of model assistant (canary")
