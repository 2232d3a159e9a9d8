"""Differences between the applied and the desired version of one object, through deepdiff."""
from __future__ import annotations

import difflib
from typing import Any

from llmctl.plan.model import DiffEntry

# Changing these means a new server, not a reconfigured one.
REPLACING_FIELDS: dict[str, frozenset[str]] = {"model": frozenset({"source", "engine", "target"})}
# Prompt text is reviewed line by line, as in a code review.
TEXT_FIELDS = frozenset({"system", "template"})

_REPORTS = {
    "values_changed": "change",
    "type_changes": "change",
    "dictionary_item_added": "add",
    "dictionary_item_removed": "remove",
    "iterable_item_added": "change",
    "iterable_item_removed": "change",
}


def diff_object(kind: str, before: dict[str, Any], after: dict[str, Any]) -> list[DiffEntry]:
    """The changed values, one entry per changed field; a changed list is shown whole, prompt text by line."""
    # threshold 0: always report the keys that differ, never a whole dict (or the whole object, which has no
    # path) as replaced because few of its keys are shared.
    from deepdiff import DeepDiff  # numpy comes with it (~0.2 s): most plans change no existing object

    tree = DeepDiff(before, after, view="tree", threshold_to_diff_deeper=0)
    entries: dict[str, DiffEntry] = {}
    for report, op in _REPORTS.items():
        for level in tree.get(report, []):
            keys = level.path(output_format="list")
            # Cut at the first list index: "guardrails" changed, not "guardrails[1]" added.
            cut = next((i for i, key in enumerate(keys) if isinstance(key, int)), len(keys))
            keys = keys[:cut]
            path = _dotted(keys)
            if path in entries:
                continue
            old, new = _get(before, keys), _get(after, keys)
            entries[path] = DiffEntry(
                path=path,
                op="change" if cut < len(level.path(output_format="list")) else op,  # type: ignore[arg-type]
                before=old,
                after=new,
                lines=line_diff(old, new) if keys[-1] in TEXT_FIELDS else None,
                forces_replacement=keys[0] in REPLACING_FIELDS.get(kind, frozenset()),
            )
    return sorted(entries.values(), key=lambda entry: entry.path)


def line_diff(before: Any, after: Any) -> list[str]:
    """'- old' / '+ new' lines with up to three lines of context."""
    old = before.splitlines() if isinstance(before, str) else []
    new = after.splitlines() if isinstance(after, str) else []
    lines = []
    for line in list(difflib.unified_diff(old, new, n=3, lineterm=""))[2:]:
        if line.startswith("@@"):
            if lines:  # a gap between hunks
                lines.append("...")
        else:
            lines.append(f"{line[0]} {line[1:]}")
    return lines


def _dotted(keys: list[str | int]) -> str:
    return ".".join(str(key) for key in keys)


def _get(data: dict[str, Any], keys: list[str | int]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data
