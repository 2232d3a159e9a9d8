"""Text helpers shared by the renderers (plans, load-test reports)."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Control characters as visible escapes: user text (prompts, server errors) must not drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: one line, and `|` escaped (a raw one ends the cell even in a code span;
    GFM honours \\| there too)."""
    return clean(text.replace("\r\n", " ").replace("\n", " ")).replace("|", "\\|")
