"""The load-test report renderers: what a reader sees in a terminal, a pull request and a report directory."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmctl.config.schema import Slo
from llmctl.verify.model import ModelVerification, Sample, VerificationReport
from llmctl.verify.report import render, render_json, render_markdown, render_text, write_report_dir
from llmctl.verify.slo import evaluate, meets_targets
from llmctl.verify.stats import summarise

INTERACTIVE: dict[str, Any] = {"ttft_p95_ms": 3000, "latency_p95_ms": 15000, "error_rate": 0.01}

# --- helpers to build reports ----------------------------------------------------------------------------------


def samples(ttfts: list[float], latencies: list[float] | None = None, errors: list[str] | None = None,
            ) -> list[Sample]:
    """Successful requests with the given TTFTs (and latencies), then one failed request per error, 0.5 s apart."""
    latencies = latencies or [ttft * 4 for ttft in ttfts]
    ok = [Sample(start_s=i * 0.5, endpoint="http://127.0.0.1:8000/v1", ok=True, ttft_ms=ttft, latency_ms=latency,
                 itl_ms=[20.0, 25.0, 30.0], output_tokens=30)
          for i, (ttft, latency) in enumerate(zip(ttfts, latencies))]
    failed = [Sample(start_s=(len(ok) + i) * 0.5, endpoint="http://127.0.0.1:8000/v1", ok=False, latency_ms=12.0,
                     error=error)
              for i, error in enumerate(errors or [])]
    return ok + failed


def verified(model: str, raw: list[Sample], slo: Slo | None, *, users: int = 2, elapsed_s: float = 20.0,
             ) -> ModelVerification:
    """What llmctl.verify.run.verify makes of one model's samples (a model without an SLO gets no checks)."""
    summary = summarise(raw, elapsed_s, users, meets_targets(slo) if slo else None)
    checks = evaluate(slo, summary) if slo else []
    return ModelVerification(model=model, slo=slo.name if slo else "none", passed=all(c.passed for c in checks),
                             checks=checks, summary=summary, at="2025-01-01T00:00:00+00:00")


def report_of(*entries: tuple[ModelVerification, list[Sample]]) -> VerificationReport:
    return VerificationReport(project="support-bot", environment="dev", results=[e for e, _ in entries],
                              samples={e.model: raw for e, raw in entries})


def single(raw: list[Sample], slo: Slo | None = None, model: str = "assistant") -> VerificationReport:
    return report_of((verified(model, raw, slo), raw))


def interactive(**overrides: Any) -> Slo:
    return Slo(name="interactive", **{**INTERACTIVE, **overrides})


def steady(n: int = 40) -> list[Sample]:
    """n requests with TTFTs 300..(300+n-1) ms: known, varied figures."""
    return samples([300.0 + i for i in range(n)])


def line_index(text: str, prefix: str) -> int:
    matches = [i for i, line in enumerate(text.splitlines()) if line.strip().startswith(prefix)]
    assert matches, f"no line starting with {prefix!r} in:\n{text}"
    return matches[0]


def line_starting(text: str, prefix: str) -> str:
    """The first line that starts with `prefix` once indentation is stripped, without the indentation."""
    return text.splitlines()[line_index(text, prefix)].strip()


# --- text ------------------------------------------------------------------------------------------------------


def test_text_passing_model_shows_pass_the_load_and_a_row_per_target() -> None:
    report = single(steady(41), interactive())
    text = render_text(report)
    lines = text.splitlines()

    assert lines[0] == "model assistant — SLO interactive: PASS   (2 users, 20.0 s, 41 requests, 0 failed)"
    assert lines[1].split() == ["target", "limit", "measured", "result"]
    summary = report.results[0].summary
    assert lines[2].split() == ["ttft_p95_ms", "<=", "3000", f"{summary.ttft_ms.p95:.1f}", "pass"]  # type: ignore[union-attr]
    assert lines[3].split() == ["latency_p95_ms", "<=", "15000", f"{summary.latency_ms.p95:.1f}", "pass"]  # type: ignore[union-attr]
    assert lines[4].split() == ["error_rate", "<=", "0.01", "0", "pass"]
    assert text.splitlines()[-1] == "SLO verification passed"


def test_text_table_columns_line_up() -> None:
    lines = render_text(single(steady(), interactive())).splitlines()[1:5]
    for heading in ("limit", "measured", "result"):
        column = lines[0].index(heading)
        assert all(line[column - 1] == " " and line[column] != " " for line in lines), "\n".join(lines)


def test_text_throughput_and_percentiles_come_from_the_summary() -> None:
    report = single(steady(41), interactive())
    summary = report.results[0].summary
    text = render_text(report)

    assert line_starting(text, "throughput") == (
        f"throughput {summary.rps:.2f} req/s, {summary.output_tokens_per_s:.1f} output tokens/s, goodput 100.0%")
    ttft = summary.ttft_ms
    assert ttft is not None
    assert line_starting(text, "ttft ms") == (
        f"ttft ms p50/p90/p95/p99: {ttft.p50:.1f} / {ttft.p90:.1f} / {ttft.p95:.1f} / {ttft.p99:.1f}")
    assert line_starting(text, "latency ms").startswith("latency ms p50/p90/p95/p99: ")
    assert line_starting(text, "inter-token ms") == "inter-token ms p50/p90/p95/p99: 25.0 / 30.0 / 30.0 / 30.0"
    assert "failures" not in text  # nothing failed, so no failures line


def test_text_failing_target_says_fail_and_the_overall_line_names_model_and_target() -> None:
    report = single(samples([412.3] * 20), interactive(ttft_p95_ms=1))
    text = render_text(report)

    assert "SLO interactive: FAIL" in text.splitlines()[0]
    assert line_starting(text, "ttft_p95_ms").split() == ["ttft_p95_ms", "<=", "1", "412.3", "fail"]
    assert line_starting(text, "latency_p95_ms").split()[-1] == "pass"
    assert text.splitlines()[-1] == "SLO verification FAILED: assistant (ttft_p95_ms 412.3 > 1)"


def test_text_overall_line_names_only_the_failing_models_and_every_missed_target() -> None:
    good = steady()
    bad = samples([412.3] * 18, errors=["HTTP 500: boom"] * 2)
    report = report_of((verified("embedder", good, interactive()), good),
                       (verified("assistant", bad, interactive(ttft_p95_ms=1, min_rps=50)), bad))
    text = render_text(report)

    assert text.splitlines()[0].startswith("model embedder — SLO interactive: PASS")
    assert "model assistant — SLO interactive: FAIL" in text
    assert text.splitlines()[-1] == (
        "SLO verification FAILED: assistant (ttft_p95_ms 412.3 > 1, error_rate 0.1 > 0.01, min_rps 0.9 < 50)")


def test_text_missing_measurement_prints_na_and_fails() -> None:
    # Every request failed: there is no TTFT or latency to hold against the SLO.
    report = single(samples([], errors=["connection refused"] * 5), interactive())
    text = render_text(report)

    assert line_starting(text, "ttft_p95_ms").split() == ["ttft_p95_ms", "<=", "3000", "n/a", "fail"]
    assert line_starting(text, "latency_p95_ms").split() == ["latency_p95_ms", "<=", "15000", "n/a", "fail"]
    assert line_starting(text, "error_rate").split() == ["error_rate", "<=", "0.01", "1", "fail"]
    assert line_starting(text, "ttft ms") == "ttft ms p50/p90/p95/p99: n/a"
    assert line_starting(text, "inter-token ms") == "inter-token ms p50/p90/p95/p99: n/a"
    assert "(2 users, 20.0 s, 5 requests, 5 failed)" in text
    assert text.splitlines()[-1].startswith("SLO verification FAILED: assistant (ttft_p95_ms n/a")


def test_text_lists_failure_reasons_with_counts_most_common_first_at_most_five() -> None:
    errors = (["timeout after 60 s"] * 1 + ["HTTP 500: Internal Server Error"] * 3 + ["HTTP 429: slow down"] * 2
              + ["a", "b", "c", "d"])
    report = single(samples([300.0] * 90, errors=errors), interactive())
    text = render_text(report)
    lines = text.splitlines()
    first = line_index(text, "failures:")

    assert lines[first] == "  failures: 3 × HTTP 500: Internal Server Error"
    assert lines[first + 1].strip() == "2 × HTTP 429: slow down"
    assert lines[first + 1].index("2 ×") == lines[first].index("3 ×")  # continuation lines line up
    assert lines[first + 2].strip() == "1 × timeout after 60 s"
    shown = [line.strip() for line in lines[first + 3:first + 5]]
    assert all(line.startswith("1 × ") for line in shown)
    assert lines[first + 5].strip() == "… and 2 more reasons (2 requests)"


def test_text_failure_reasons_stay_on_one_line_and_cannot_drive_the_terminal() -> None:
    report = single(samples([300.0] * 50, errors=["HTTP 502:\n<html>bad\x1b[31mgateway</html>", "x" * 500]),
                    interactive())
    text = render_text(report)

    assert "\x1b" not in text
    assert "1 × HTTP 502: <html>bad\\x1b[31mgateway</html>" in text
    long_line = line_starting(text, "1 × xxx")
    assert long_line.endswith("…") and len(long_line) < 200


def test_text_model_without_slo_is_measured_not_judged() -> None:
    text = render_text(single(steady(), None))

    assert text.splitlines()[0].startswith("model assistant — measured (no SLO)   (2 users")
    assert "target" not in text and "PASS" not in text
    assert line_starting(text, "throughput").endswith("output tokens/s")  # no goodput without targets
    assert text.splitlines()[-1] == "SLO verification passed"


def test_text_empty_report_says_nothing_was_tested() -> None:
    report = VerificationReport(project="support-bot", environment="dev", results=[])
    assert render_text(report) == "No models were load-tested (support-bot/dev)."


# --- json ------------------------------------------------------------------------------------------------------


def test_json_parses_and_leaves_out_samples() -> None:
    report = single(samples([412.3] * 20), interactive(ttft_p95_ms=1))
    data = json.loads(render_json(report))

    assert "samples" not in data
    assert data["project"] == "support-bot"
    [result] = data["results"]
    assert result["model"] == "assistant" and result["passed"] is False
    assert [check["target"] for check in result["checks"]] == ["ttft_p95_ms", "latency_p95_ms", "error_rate"]
    assert result["summary"]["ttft_ms"]["p95"] == 412.3


# --- markdown --------------------------------------------------------------------------------------------------


def test_markdown_has_a_heading_and_a_table_row_per_check_with_marks() -> None:
    raw = samples([412.3] * 20)
    report = single(raw, interactive(ttft_p95_ms=1))
    markdown = render_markdown(report)
    lines = markdown.splitlines()

    assert lines[0].startswith("### SLO verification ❌ FAILED: assistant (ttft_p95_ms 412.3 > 1)")
    assert "support-bot/dev" in lines[0]
    assert "| target | limit | measured | result |" in lines
    assert "| `ttft_p95_ms` | ≤ 1 | 412.3 | ❌ |" in lines
    assert "| `latency_p95_ms` | ≤ 15000 | 1649.2 | ✅ |" in lines
    assert "| `error_rate` | ≤ 0.01 | 0 | ✅ |" in lines
    assert "- throughput 1.00 req/s, 30.0 output tokens/s, goodput 0.0%" in lines
    assert "- ttft ms p50/p90/p95/p99: 412.3 / 412.3 / 412.3 / 412.3" in lines
    assert "<details>" not in markdown  # nothing failed


def test_markdown_passing_heading_and_no_slo_model() -> None:
    good = steady()
    report = report_of((verified("assistant", good, interactive()), good), (verified("embedder", good, None), good))
    markdown = render_markdown(report)

    assert markdown.splitlines()[0] == "### SLO verification ✅ passed (support-bot/dev)"
    assert "**`assistant`** — ✅ SLO interactive: PASS (2 users, 20.0 s, 40 requests, 0 failed)" in markdown
    assert "**`embedder`** — measured (no SLO) (2 users, 20.0 s, 40 requests, 0 failed)" in markdown
    assert markdown.count("| target | limit | measured | result |") == 1  # the model without an SLO has no table


def test_markdown_puts_failure_reasons_in_details_as_code() -> None:
    errors = ["HTTP 500: a | b"] * 3 + ["bad `json` </details> **x**"]
    report = single(samples([300.0] * 96, errors=errors), interactive())
    markdown = render_markdown(report)

    assert "<details><summary>4 failed requests</summary>" in markdown
    body = markdown[markdown.index("<details>"):]
    assert body.rstrip().endswith("</details>")
    assert "- 3 × `HTTP 500: a | b`" in body
    # A backtick inside the reason needs a longer delimiter, which also keeps </details> from closing the block.
    assert "- 1 × ``bad `json` </details> **x**``" in body
    assert body.count("\n</details>") == 1


def test_markdown_missing_measurement_is_na_and_failed() -> None:
    report = single(samples([], errors=["connection refused"] * 5), interactive())
    assert "| `ttft_p95_ms` | ≤ 3000 | n/a | ❌ |" in render_markdown(report).splitlines()


# --- dispatch --------------------------------------------------------------------------------------------------


def test_render_dispatches_and_refuses_unknown_formats() -> None:
    report = single(steady(), interactive())
    assert render(report, "text") == render_text(report)
    assert render(report, "json") == render_json(report)
    assert render(report, "markdown") == render_markdown(report)
    with pytest.raises(ValueError, match="unknown report format 'html'"):
        render(report, "html")  # type: ignore[arg-type]


# --- report directory ------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk follows the signature: length, type, then width and height as big-endian integers.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def two_models() -> VerificationReport:
    good = steady()
    bad = samples([412.3 + i for i in range(30)], errors=["HTTP 500: boom"] * 4)
    return report_of((verified("assistant", bad, interactive(ttft_p95_ms=1)), bad),
                     (verified("embedder", good, None), good))


def test_report_dir_writes_json_with_samples_markdown_and_a_png_per_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = two_models()
    directory = tmp_path / "out" / "verify"  # does not exist yet
    written = write_report_dir(report, directory)

    assert written == [directory / name for name in ("report.json", "report.md", "assistant.png", "embedder.png")]
    data = json.loads((directory / "report.json").read_text())
    assert len(data["samples"]["assistant"]) == 34 and len(data["samples"]["embedder"]) == 40
    assert VerificationReport.model_validate(data) == report  # the directory is the whole record
    assert (directory / "report.md").read_text() == render_markdown(report) + "\n"
    for name in ("assistant.png", "embedder.png"):
        png = (directory / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > 20_000, f"{name} is only {len(png)} bytes: nothing was drawn"
        assert png_size(png) == (1200, 450)


def test_report_dir_draws_a_chart_even_for_a_model_with_no_successful_request(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = single(samples([], errors=["connection refused"] * 5), interactive())
    written = write_report_dir(report, tmp_path)

    assert written[-1] == tmp_path / "assistant.png"
    assert written[-1].read_bytes().startswith(PNG_SIGNATURE)


def test_report_dir_keeps_charts_inside_the_directory(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = single(steady(), None, model="../escape/me")
    written = write_report_dir(report, tmp_path / "out")

    assert all(path.parent == tmp_path / "out" for path in written)
    assert written[-1].name == "_escape_me.png"


def test_report_dir_without_matplotlib_writes_the_rest_and_raises_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as if it were not installed.
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_report_dir(two_models(), tmp_path)

    assert written == [tmp_path / "report.json", tmp_path / "report.md"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.json", "report.md"]


def test_importing_the_report_module_does_not_import_matplotlib() -> None:
    code = "import sys, llmctl.verify.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
