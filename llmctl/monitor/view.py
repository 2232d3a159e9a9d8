"""`llmctl monitor`'s screen: the snapshot as tables, redrawn in place on a colour terminal and printed as plain text
otherwise, or as JSON. A `!` marks what is over its SLO, an error budget spent, a budget at its limit (red too on a
terminal)."""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from llmctl import console
from llmctl.errors import LlmctlError
from llmctl.monitor.live import Alert, BudgetView, ModelView, Reading, Snapshot
from llmctl.monitor.promql import duration
from llmctl.textfmt import clean

if TYPE_CHECKING:  # rich is imported where it draws, as in console.py
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text

OVER = "bold red"


def show(snapshot: Callable[[], Snapshot], format: Literal["text", "json"], once: bool, interval: float) -> None:
    """One snapshot (JSON, or --once), else one every `interval` seconds until interrupted."""
    first = snapshot()
    if format == "json":
        console.out(first.model_dump_json(indent=2))
        return
    if once:
        _print(first)
        return
    try:
        if console.styled():
            _live(_refreshed(snapshot, first, interval))
        else:
            for current, problem in _refreshed(snapshot, first, interval):
                if problem:
                    console.err(problem)
                else:
                    _print(current)
    except KeyboardInterrupt:
        return  # how one leaves a live view: not a failure


def _refreshed(snapshot: Callable[[], Snapshot], first: Snapshot, interval: float
               ) -> Iterator[tuple[Snapshot, str | None]]:
    """The latest snapshot and, when a refresh failed, why: a monitor outlives a Prometheus restart."""
    current: Snapshot = first
    yield current, None
    while True:
        time.sleep(interval)
        try:
            current = snapshot()
            yield current, None
        except LlmctlError as exc:
            yield current, f"Refresh failed ({exc}); showing the snapshot of {current.at}."


def _live(refreshed: Iterator[tuple[Snapshot, str | None]]) -> None:
    from rich.live import Live

    current, problem = next(refreshed)
    with Live(screen(current, problem), console=_terminal(), auto_refresh=False) as live:
        for current, problem in refreshed:
            live.update(screen(current, problem), refresh=True)


def _print(snapshot: Snapshot) -> None:
    if console.styled():
        _terminal().print(screen(snapshot))
    else:
        console.out(plain(snapshot))


def _terminal() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def plain(snapshot: Snapshot) -> str:
    from rich.console import Console

    out = Console(width=200, no_color=True, highlight=False, file=io.StringIO())
    with out.capture() as captured:
        out.print(screen(snapshot))
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def screen(snapshot: Snapshot, problem: str | None = None) -> Group:
    from rich.console import Group
    from rich.text import Text

    parts: list[Text | Table] = [Text(_heading(snapshot), style="bold"), _models(snapshot.models)]
    if snapshot.budgets:
        parts += [Text(""), _budgets(snapshot.budgets)]
    parts += [Text(""), *_alerts(snapshot.alerts)]
    parts += [Text(note, style="dim") for note in snapshot.notes]
    if problem:
        parts.append(Text(problem, style=OVER))
    return Group(*parts)


def _heading(snapshot: Snapshot) -> str:
    source = f"Prometheus {snapshot.url}" if snapshot.source == "prometheus" else f"gateway {snapshot.url}"
    return (f"{snapshot.project}/{snapshot.environment} at {snapshot.at}: {source}, "
            f"over the last {duration(max(1, round(snapshot.window_s)))}")


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _models(models: list[ModelView]) -> Table:
    with_itl = any(m.itl_p95_s.value is not None or m.itl_p95_s.slo is not None for m in models)
    table = _table("MODEL", "SLO", "REQ/S", "ERRORS", "TTFT P95", "LATENCY P95", *(["ITL P95"] if with_itl else []),
                   "ERROR BUDGET LEFT")
    for m in models:
        p95s = [m.ttft_p95_s, m.latency_p95_s, *([m.itl_p95_s] if with_itl else [])]
        table.add_row(m.model, m.slo or "-", f"{m.requests_per_s:.3g}", _reading(m.error_rate, _percent),
                      *(_reading(p95, _seconds) for p95 in p95s), _budget_left(m.error_budget_left))
    return table


def _marked(text: str, over: bool) -> Text:
    from rich.text import Text

    return Text(f"{text} !", style=OVER) if over else Text(text)


def _reading(reading: Reading, unit: Callable[[float], str]) -> Text:
    value = "-" if reading.value is None else unit(reading.value)
    bound = f" (SLO {unit(reading.slo)})" if reading.slo is not None else ""
    return _marked(f"{value}{bound}", reading.over)


def _budget_left(left: dict[str, float | None] | None) -> Text:
    from rich.text import Text

    if left is None:
        return Text("needs Prometheus", style="dim")
    if not left:
        return Text("-")
    parts: list[Text | str] = []
    for sli, share in left.items():
        parts += [", " if parts else "",
                  _marked(f"{sli} {'-' if share is None else f'{share:.0%}'}", share is not None and share <= 0)]
    return Text.assemble(*parts)


def _budgets(budgets: list[BudgetView]) -> Table:
    table = _table("BUDGET", "SPENT", "LIMIT")
    for b in budgets:
        spent = ("not exported by the gateway" if b.spent_usd is None
                 else f"${b.spent_usd:.2f} ({b.spent_usd / b.limit_usd:.0%})")
        table.add_row(b.budget, _marked(spent, b.over), f"${b.limit_usd:g} per {b.period}")
    return table


def _alerts(alerts: list[Alert] | None) -> list[Text | Table]:
    from rich.text import Text

    if alerts is None:
        return [Text("Alerts: not visible without Prometheus.")]
    if not alerts:
        return [Text("No alerts firing.")]
    table = _table("SEVERITY", "FIRING", "ABOUT", "SINCE", "SUMMARY")
    for alert in alerts:
        # Labels and annotations are Prometheus's text: no escape sequence of theirs reaches the terminal.
        table.add_row(_marked(alert.severity or "-", True), clean(alert.name), clean(alert.about or "-"),
                      alert.active_since or "-", clean(alert.summary or "-"))
    return [table]


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
