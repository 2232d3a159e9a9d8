"""Terminal output: rich colours and live progress on a terminal; plain lines when piped or NO_COLOR is set."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported where it draws: plain output to a pipe (CI, scripts) never needs it
    from rich.console import Console


_LINE_STYLES = {"+": "green", "-": "red", "~": "yellow", "#": "bold", "Error": "bold red", "Warning": "yellow"}


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True)


def styled() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def out(text: str) -> None:
    """Print rendered output; on a colour terminal, diff lines are coloured by their leading symbol."""
    if not styled():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    from rich.text import Text

    console = _console()
    for line in text.splitlines():
        head = line.lstrip().split(" ", 1)[0].rstrip(":")
        style = _LINE_STYLES.get(head) or _LINE_STYLES.get(head[:1]) if head else None
        console.print(Text(line, style=style or ""))


def err(text: str) -> None:
    from rich.text import Text

    _console(stderr=True).print(Text(text, style="" if "NO_COLOR" in os.environ else "red"))


def note(text: str) -> None:
    """A status line for people; on stderr so that stdout stays machine-readable."""
    from rich.text import Text

    _console(stderr=True).print(Text(text))


@contextmanager
def progress(title: str) -> Iterator[Callable[[str, str], None]]:
    """A live table of (address, status) on a terminal; one line per update otherwise."""
    if not sys.stderr.isatty():
        def line(address: str, status: str) -> None:
            print(f"{address}: {status}", file=sys.stderr, flush=True)

        yield line
        return
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    rows: dict[str, str] = {}
    console = _console(stderr=True)

    def table() -> Table:
        grid = Table(title=title, show_header=False, box=None)
        for address, status in rows.items():
            colour = "green" if status in ("ready", "stopped") else "red" if status.startswith("failed") else "yellow"
            grid.add_row(address, Text(status, style=colour))
        return grid

    with Live(table(), console=console, refresh_per_second=8, transient=False) as live:
        def update(address: str, status: str) -> None:
            rows[address] = status
            live.update(table())

        yield update
