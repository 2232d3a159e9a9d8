"""Renderers: a VerificationReport as terminal text, JSON, a pull-request comment, or a directory of files.

They only format. Every percentile, rate and pass/fail comes from the report (each model's `summary` and `checks`),
so the terminal, the PR comment and the apply gate can never disagree about whether an SLO was met. The one
exception is the chart, which plots the raw samples because a histogram is a picture of them, not of a summary.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llmctl.verify.model import LoadSummary, ModelVerification, Percentiles, Sample, SloCheck, VerificationReport
from llmctl.textfmt import clean, md_cell, plural

if TYPE_CHECKING:  # only for hints: importing this module must never import matplotlib
    from matplotlib.axes import Axes

Format = Literal["text", "json", "markdown"]

# A failing `<=` target was above its limit and a failing `>=` one below it; the overall line says which way it missed.
_MISSED: dict[str, str] = {"<=": ">", ">=": "<"}
_MARKDOWN_COMPARISON: dict[str, str] = {"<=": "≤", ">=": "≥"}

_MAX_REASONS = 5
# Provider error bodies can be whole HTML pages; a reason is a hint at what went wrong, not the full response.
_MAX_REASON_CHARS = 160
_COLUMN_GAP = 3
_INDENT = "  "
_FAILURES_LABEL = "failures: "

# Error messages come from servers: a stray escape sequence must not drive the reader's terminal.
# --- shared pieces ---------------------------------------------------------------------------------------------
# render.py has equivalents of _clean and _plural, but they are private there; these are small enough to repeat.


def _one_line(text: str, limit: int = _MAX_REASON_CHARS) -> str:
    # Newlines become spaces (not \x0a) because a multi-line error reads better run together than escaped.
    flat = clean(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _plain(value: float) -> str:
    """3000.0 -> 3000, 0.01 -> 0.01, 0.0 -> 0: limits and rates as a person would write them."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _measured(check: SloCheck) -> str:
    if check.measured is None:
        return "n/a"
    # Milliseconds read best at a fixed one decimal (412.3, 1804.0); shares and rates as plain numbers.
    return f"{check.measured:.1f}" if check.target.endswith("_ms") else _plain(check.measured)


def _percentiles(label: str, values: Percentiles | None) -> str:
    figures = "n/a" if values is None else " / ".join(f"{v:.1f}" for v in (values.p50, values.p90, values.p95,
                                                                         values.p99))
    return f"{label} ms p50/p90/p95/p99: {figures}"


def _verdict(result: ModelVerification) -> str:
    # A model with no SLO has no checks: it was measured, and there was nothing for it to pass or fail.
    if not result.checks:
        return "measured (no SLO)"
    return f"SLO {clean(result.slo)}: {'PASS' if result.passed else 'FAIL'}"


def _load(summary: LoadSummary) -> str:
    return (f"{plural(summary.users, 'user')}, {summary.duration_s:.1f} s, {plural(summary.requests, 'request')}, "
            f"{summary.failures} failed")


def _throughput(summary: LoadSummary) -> str:
    line = f"throughput {summary.rps:.2f} req/s, {summary.output_tokens_per_s:.1f} output tokens/s"
    return line if summary.goodput is None else f"{line}, goodput {summary.goodput * 100:.1f}%"


def _figures(summary: LoadSummary) -> list[str]:
    """The lines under each model's table, identical in text and markdown."""
    return [
        _throughput(summary),
        _percentiles("ttft", summary.ttft_ms),
        _percentiles("latency", summary.latency_ms),
        _percentiles("inter-token", summary.itl_ms),
    ]


def _reasons(summary: LoadSummary) -> tuple[list[tuple[int, str]], str | None]:
    """The most common failure reasons (at most five), and a note on the rest if any were left out."""
    # failure_reasons is already most-common-first when built by summarise; sorting again costs nothing and keeps
    # the promise for a report built (or edited) some other way. sorted() is stable, so ties keep their order.
    ordered = sorted(summary.failure_reasons.items(), key=lambda item: item[1], reverse=True)
    shown = [(count, reason) for reason, count in ordered[:_MAX_REASONS]]
    rest = ordered[_MAX_REASONS:]
    if not rest:
        return shown, None
    return shown, f"… and {plural(len(rest), 'more reason')} ({plural(sum(c for _, c in rest), 'request')})"


def _miss(check: SloCheck) -> str:
    if check.measured is None:
        return f"{check.target} n/a (limit {check.comparison} {_plain(check.limit)})"
    return f"{check.target} {_measured(check)} {_MISSED[check.comparison]} {_plain(check.limit)}"


def _failed(report: VerificationReport) -> str:
    """`assistant (ttft_p95_ms 412.3 > 1); embedder (error_rate 0.2 > 0.01)`."""
    parts = []
    for result in report.results:
        if result.passed:
            continue
        misses = ", ".join(_miss(check) for check in result.checks if not check.passed)
        parts.append(f"{clean(result.model)} ({misses})" if misses else clean(result.model))
    return "; ".join(parts)


def _overall(report: VerificationReport) -> str:
    return "SLO verification passed" if report.passed else f"SLO verification FAILED: {_failed(report)}"


# --- text ------------------------------------------------------------------------------------------------------


def _table(checks: list[SloCheck]) -> list[str]:
    rows = [["target", "limit", "measured", "result"]]
    rows += [[c.target, f"{c.comparison} {_plain(c.limit)}", _measured(c), "pass" if c.passed else "fail"]
             for c in checks]
    widths = [max(len(row[i]) for row in rows) + _COLUMN_GAP for i in range(3)]
    return [_INDENT + "".join(cell.ljust(w) for cell, w in zip(row, widths)) + row[3] for row in rows]


def _text_failures(summary: LoadSummary) -> list[str]:
    shown, rest = _reasons(summary)
    if not shown:
        return []
    # Continuation lines line up under the first reason, so a long list still reads as one block.
    under = _INDENT + " " * len(_FAILURES_LABEL)
    lines = [f"{count} × {_one_line(reason)}" for count, reason in shown] + ([rest] if rest else [])
    return [_INDENT + _FAILURES_LABEL + lines[0], *(under + line for line in lines[1:])]


def _text_model(result: ModelVerification) -> list[str]:
    lines = [f"model {clean(result.model)} — {_verdict(result)}   ({_load(result.summary)})"]
    if result.checks:
        lines += _table(result.checks)
    lines += [_INDENT + line for line in _figures(result.summary)]
    lines += _text_failures(result.summary)
    return lines


def render_text(report: VerificationReport) -> str:
    """One block per model, then the overall verdict; plain text (colour, if any, is the caller's business)."""
    if not report.results:
        return f"No models were load-tested ({clean(report.project)}/{clean(report.environment)})."
    out: list[str] = []
    for result in report.results:
        out += [*_text_model(result), ""]
    out.append(_overall(report))
    return "\n".join(out)


# --- json ------------------------------------------------------------------------------------------------------


def render_json(report: VerificationReport) -> str:
    # Samples are thousands of rows kept for charts; report.json in the report directory has them.
    return report.model_dump_json(indent=2, exclude={"samples"})


# --- markdown --------------------------------------------------------------------------------------------------

_TABLE_HEADER = ["| target | limit | measured | result |", "|---|---|---|---|"]


def _code(text: str) -> str:
    """A code span that survives backticks inside `text` (error messages quote things)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    # CommonMark strips one space each side, which keeps a leading or trailing backtick off the delimiter.
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _cell(text: str) -> str:
    return md_cell(_one_line(text, limit=10_000))


def _markdown_row(check: SloCheck) -> str:
    limit = f"{_MARKDOWN_COMPARISON[check.comparison]} {_plain(check.limit)}"
    mark = "✅" if check.passed else "❌"
    return f"| {_cell(_code(check.target))} | {_cell(limit)} | {_cell(_measured(check))} | {mark} |"


def _markdown_failures(summary: LoadSummary) -> str | None:
    shown, rest = _reasons(summary)
    if not shown:
        return None
    # Each reason goes in a code span: it is server text, and inside a span neither markdown nor a stray
    # </details> in it can change the comment's structure.
    items = [f"- {count} × {_code(_one_line(reason))}" for count, reason in shown] + ([f"- {rest}"] if rest else [])
    head = f"<details><summary>{plural(summary.failures, 'failed request')}</summary>"
    return "\n".join([head, "", *items, "", "</details>"])


def _markdown_model(result: ModelVerification) -> str:
    mark = "" if not result.checks else ("✅ " if result.passed else "❌ ")
    blocks = [f"**{_code(_one_line(result.model, 10_000))}** — {mark}{_verdict(result)} ({_load(result.summary)})"]
    if result.checks:
        blocks.append("\n".join([*_TABLE_HEADER, *(_markdown_row(check) for check in result.checks)]))
    blocks.append("\n".join(f"- {line}" for line in _figures(result.summary)))
    failures = _markdown_failures(result.summary)
    if failures:
        blocks.append(failures)
    return "\n\n".join(blocks)


def render_markdown(report: VerificationReport) -> str:
    """A pull-request comment: a heading with the verdict, then one table per model."""
    where = f"{_one_line(report.project, 200)}/{_one_line(report.environment, 200)}"
    if not report.results:
        return f"### SLO verification ({where})\n\nNo models were load-tested."
    verdict = "✅ passed" if report.passed else f"❌ FAILED: {_failed(report)}"
    blocks = [f"### SLO verification {verdict} ({where})"]
    blocks += [_markdown_model(result) for result in report.results]
    return "\n\n".join(blocks)


# --- dispatch --------------------------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[VerificationReport], str]] = {
    "text": render_text, "json": render_json, "markdown": render_markdown,
}


def render(report: VerificationReport, fmt: Format) -> str:
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}; expected one of: {', '.join(_RENDERERS)}") from None
    return renderer(report)


# --- report directory ------------------------------------------------------------------------------------------


def _file_stem(model: str) -> str:
    # Config names are already file-safe, but a report can be built by hand; never let one write outside the dir.
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", model).lstrip(".")
    return stem or "model"


def _empty(ax: Axes, note: str) -> None:
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _latency_panel(ax: Axes, samples: list[Sample], summary: LoadSummary) -> None:
    latencies = [s.latency_ms for s in samples if s.ok]
    ax.set_title("End-to-end latency (successful requests)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    if not latencies:
        _empty(ax, "no successful requests")
        return
    ax.hist(latencies, bins=min(40, max(5, len(latencies) // 3)), color="#4c72b0", alpha=0.85)
    # The marked percentiles are the report's own, so the picture agrees with the table it illustrates.
    if summary.latency_ms is not None:
        ax.axvline(summary.latency_ms.p50, color="#55a868", linestyle="--", label=f"p50 {summary.latency_ms.p50:.1f}")
        ax.axvline(summary.latency_ms.p95, color="#c44e52", linestyle="--", label=f"p95 {summary.latency_ms.p95:.1f}")
        ax.legend(loc="best")


def _ttft_panel(ax: Axes, samples: list[Sample], result: ModelVerification) -> None:
    ax.set_title("Time to first token over the test")
    ax.set_xlabel("request start (s)")
    ax.set_ylabel("TTFT (ms)")
    ok = [s for s in samples if s.ok and s.ttft_ms is not None]
    failed = [s for s in samples if not s.ok]
    if not ok and not failed:
        _empty(ax, "no samples recorded")
        return
    ttfts = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    if ok:
        ax.scatter([s.start_s for s in ok], ttfts, s=12, color="#4c72b0", label="ok")
    if failed:
        # Failed requests have no TTFT; they sit on the axis so a burst of errors shows where in the run it came.
        ax.scatter([s.start_s for s in failed], [0.0] * len(failed), s=24, marker="x", color="#c44e52",
                   label="failed", clip_on=False, zorder=3)  # unclipped: half a marker on the axis is easy to miss
    if result.summary.ttft_ms is not None:
        p95 = result.summary.ttft_ms.p95
        ax.axhline(p95, color="#c44e52", linestyle="--", linewidth=1, label=f"p95 {p95:.1f}")
    top = max(ttfts, default=0.0)
    for check in result.checks:
        if check.target != "ttft_p95_ms":
            continue
        label = f"SLO p95 ≤ {_plain(check.limit)}"
        # A limit far above every measurement would flatten the points into a line along the axis; then the
        # limit is named in the legend only, which is all a reader needs to know there is ample headroom.
        if top and check.limit > 2 * top:
            ax.plot([], [], " ", label=f"{label} (off scale)")
        else:
            ax.axhline(check.limit, color="#8172b2", linestyle=":", label=label)
    ax.set_ylim(bottom=0)
    ax.legend(loc="best")


def _write_chart(path: Path, result: ModelVerification, samples: list[Sample]) -> None:
    # A bare Figure draws with the Agg renderer without touching pyplot's global backend or figure registry, so
    # this works headless and cannot switch the backend of a program (or notebook) that calls it. Imported here so
    # importing this module never needs matplotlib.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    latency_ax, ttft_ax = fig.subplots(1, 2)
    _latency_panel(latency_ax, samples, result.summary)
    _ttft_panel(ttft_ax, samples, result)
    fig.suptitle(f"{result.model} — {_verdict(result)} ({_load(result.summary)})")
    fig.savefig(path, format="png")


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_report_dir(report: VerificationReport, directory: Path) -> list[Path]:
    """Write report.json (with samples), report.md and, when matplotlib is installed, `<model>.png` per model.

    Returns the paths written; without matplotlib there are simply no PNGs in the list (the caller says so).
    """
    directory.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = directory / "report.json", directory / "report.md"
    # Unlike render_json this keeps the samples: the directory is the full record, enough to redraw every chart.
    json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(report) + "\n", encoding="utf-8")
    written = [json_path, markdown_path]
    if not _matplotlib_available():
        return written
    for result in report.results:
        path = directory / f"{_file_stem(result.model)}.png"
        _write_chart(path, result, report.samples.get(result.model, []))
        written.append(path)
    return written
