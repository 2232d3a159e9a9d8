"""Renderers: a Plan as terminal text, JSON, or a pull-request comment.

They only format. Every figure, line diff and count comes from the Plan, so what a reviewer reads in a pull request
is exactly what `llmctl apply PLAN` will do, and the three formats can never disagree with each other.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llmctl.checks import Check
from llmctl.cost.render import cost_lines, render_cost
from llmctl.plan.model import Change, DiffEntry, Plan, Summary
from llmctl.resource import Action, ResourceChange
from llmctl.textfmt import clean, md_cell, plural

Format = Literal["text", "json", "markdown"]

_SYMBOL: dict[Action, str] = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
_HEADLINE: dict[Action, str] = {
    "create": "will be created",
    "update": "will be updated in place",
    "replace": "must be replaced",
    "delete": "will be destroyed",
}
_OP_SYMBOL: dict[str, str] = {"add": "+", "remove": "-", "change": "~"}
_SEVERITY_LABEL: dict[str, str] = {"error": "Error", "warning": "Warning", "info": "Note"}

# Symbols are right-aligned to the widest one ("-/+") so names line up whatever the action, as in Terraform.
_SYMBOL_WIDTH = 3
_ATTR_INDENT = "    "
_TEXT_LINE_INDENT = " " * 10  # two deeper than the attribute name the line diff belongs to
_BLOCK_END = "    }"

# Prompt text and provider messages are user data: a stray escape sequence must not drive the reviewer's terminal.
# --- shared pieces ---------------------------------------------------------------------------------------------


def _literal(value: Any) -> str:
    # One line whatever the value: newlines inside strings come out as \n, which keeps the block aligned.
    return clean(json.dumps(value, ensure_ascii=False, default=str))


def _symbol(symbol: str) -> str:
    return f"{symbol:>{_SYMBOL_WIDTH}}"


def _opener(address: str) -> str:
    kind, dot, name = address.partition(".")
    return f"{clean(kind)} {_literal(name)}" if dot else clean(address)


def _where(plan: Plan) -> str:
    return f"{clean(plan.project)}/{clean(plan.environment)}, state serial {plan.state_serial}"


def _counts(summary: Summary) -> str:
    return f"{summary.add} to add, {summary.change} to change, {summary.destroy} to destroy"


def _money(amount: float) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"


def _cost(plan: Plan) -> str | None:
    """`$1,234.50/mo -> $2,000.00/mo (+$765.50)`, or None when there is nothing to say."""
    if plan.cost is None:
        return None
    before, after = plan.cost.before_monthly_usd, plan.cost.after_monthly_usd
    delta = round(after - before, 2)
    return f"{_money(before)}/mo -> {_money(after)}/mo ({'-' if delta < 0 else '+'}{_money(abs(delta))})"


def _rollouts(plan: Plan) -> str:
    declared = {rollout.name: rollout for rollout in plan.desired.rollouts}
    told = []
    for model, name in sorted(plan.rollouts.items()):
        rollout = declared[name]
        weights = " → ".join(f"{step.weight}%" for step in rollout.effective_steps())
        told.append(f"model {model} rolls out by '{name}' ({rollout.strategy}: {weights}) beside its stable version")
    return (f"Rollout: {'; '.join(told)}; each step compares the versions and a failed one aborts "
            "(exit 4, or 5 when an eval fails).")


def _evals(plan: Plan) -> str:
    return f"Evals: apply will run {', '.join(plan.evals)} after the SLO check (a failure rolls back, exit 5)."


def _check(check: Check) -> str:
    label = _SEVERITY_LABEL[check.severity]
    where = f"[{clean(check.address)}] " if check.address else ""
    # Multi-line messages (a list of config errors) stay readable: continuation lines are indented under the label.
    message = "\n  ".join(clean(line) for line in check.message.splitlines() or [""])
    return f"{label}: {where}{message}"


# --- the per-object block, which text and markdown both print ---------------------------------------------------


@dataclass(frozen=True)
class _Attr:
    symbol: str
    path: str
    value: str | None = None  # None for a line diff, whose lines follow the path instead
    lines: list[str] | None = None
    forces_replacement: bool = False


@dataclass(frozen=True)
class _Block:
    address: str
    action: str  # the Change's action, or "resource changes" for an object whose resources alone change
    change: Change | None
    resource_changes: list[ResourceChange]
    lines: list[str]


def _entry_attr(entry: DiffEntry) -> _Attr:
    symbol = _OP_SYMBOL[entry.op]
    if entry.lines is not None:
        return _Attr(symbol, entry.path, lines=entry.lines, forces_replacement=entry.forces_replacement)
    if entry.op == "add":
        value = _literal(entry.after)
    elif entry.op == "remove":
        value = _literal(entry.before)
    else:
        value = f"{_literal(entry.before)} -> {_literal(entry.after)}"
    return _Attr(symbol, entry.path, value, forces_replacement=entry.forces_replacement)


def _attrs(change: Change) -> list[_Attr]:
    if change.action == "create":
        return [_Attr("+", key, _literal(value)) for key, value in (change.after or {}).items()]
    if change.action == "delete":
        return [_Attr("-", key, _literal(value)) for key, value in (change.before or {}).items()]
    return [_entry_attr(entry) for entry in change.diff]


def _attr_lines(attrs: list[_Attr]) -> list[str]:
    width = max((len(clean(attr.path)) for attr in attrs), default=0)
    lines: list[str] = []
    for attr in attrs:
        path = clean(attr.path)
        head = f"{_ATTR_INDENT}{_symbol(attr.symbol)} "
        forces = " # forces replacement" if attr.forces_replacement else ""
        if attr.lines is None:
            lines.append(f"{head}{path:<{width}} = {attr.value}{forces}")
        else:
            lines.append(f"{head}{path}{forces}")
            lines.extend(f"{_TEXT_LINE_INDENT}{clean(line)}" for line in attr.lines)
    return lines


def _resource_name(rc: ResourceChange) -> str:
    # A deposed object shares its address with the replacement; without the mark a reviewer sees one address twice.
    return f"{rc.address} (deposed)" if rc.deposed else rc.address


def _resource_lines(resource_changes: list[ResourceChange]) -> list[str]:
    return [
        f"{_ATTR_INDENT}{_symbol(_SYMBOL[rc.action])} {clean(_resource_name(rc))}"
        + (f"  # {clean(rc.reason)}" if rc.reason else "")
        for rc in resource_changes
    ]


def _change_block(change: Change, resource_changes: list[ResourceChange]) -> _Block:
    lines = [f"  # {clean(change.address)} {_HEADLINE[change.action]}"]
    if change.reason:
        lines.append(f"  # ({clean(change.reason)})")
    lines.append(f"{_symbol(_SYMBOL[change.action])} {_opener(change.address)} {{")
    lines += _attr_lines(_attrs(change))
    lines += _resource_lines(resource_changes)
    lines.append(_BLOCK_END)
    return _Block(change.address, change.action, change, resource_changes, lines)


def _resources_only_block(owner: str, resource_changes: list[ResourceChange]) -> _Block:
    # The object itself is unchanged, so its opener carries no symbol (Terraform's unchanged-context style).
    lines = [f"  # {clean(owner)} has resource changes", f"{_symbol('')} {_opener(owner)} {{"]
    lines += _resource_lines(resource_changes)
    lines.append(_BLOCK_END)
    return _Block(owner, "resource changes", None, resource_changes, lines)


def _blocks(plan: Plan) -> list[_Block]:
    # Grouped in one pass rather than plan.resource_changes_of per change: plans with thousands of replicas exist.
    by_owner: dict[str, list[ResourceChange]] = {}
    for rc in plan.resource_changes:
        by_owner.setdefault(rc.owner, []).append(rc)
    blocks = [_change_block(change, by_owner.pop(change.address, [])) for change in plan.changes]
    blocks += [_resources_only_block(owner, rcs) for owner, rcs in by_owner.items()]
    return blocks


# --- text ------------------------------------------------------------------------------------------------------


def _drift_lines(plan: Plan) -> list[str]:
    if not plan.drift:
        return [f"No drift: every resource llmctl manages is as the last apply left it ({_where(plan)})."]
    return [f"Resources changed outside llmctl ({_where(plan)}):", "",
            *[f"  {drift.address} ({drift.owner}) {drift.kind}: {drift.detail}" for drift in plan.drift], "",
            "Nothing was changed. `llmctl plan` shows how apply would bring them back to the configuration."]


def render_text(plan: Plan) -> str:
    """Terraform-style plan for a terminal; plain text (colour, if any, is the caller's business)."""
    checks = [_check(check) for check in plan.checks]
    if plan.refresh_only:
        return "\n".join([*_drift_lines(plan), *checks])
    if not plan.has_changes:
        out = [f"No changes. The deployment matches the configuration ({_where(plan)})."]
        if checks:
            out += ["", *checks]
        return "\n".join(out)

    out = [f"llmctl will perform the following actions ({_where(plan)}):", ""]
    for block in _blocks(plan):
        out += [*block.lines, ""]
    if plan.cost:
        out += [*cost_lines(plan.cost.after), ""]
    cost = _cost(plan)
    if cost:
        out.append(f"Cost: {cost}")
    if plan.rollouts:
        out.append(_rollouts(plan))
    if plan.evals:
        out.append(_evals(plan))
    out += checks
    out.append(f"Plan: {_counts(plan.summary)}.")
    return "\n".join(out)


# --- json ------------------------------------------------------------------------------------------------------


def render_json(plan: Plan) -> str:
    return plan.model_dump_json(indent=2)


# --- markdown --------------------------------------------------------------------------------------------------

_TABLE_HEADER = ["| Address | Action | Details |", "|---|---|---|"]
_SECTIONS_SEP = "\n\n"


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _detailsmd_cell(block: _Block) -> str:
    change, parts = block.change, list[str]()
    if change is not None:
        if change.action in ("update", "replace") and change.diff:
            forces = " (forces replacement)"
            parts.append(", ".join(_code(e.path) + (forces if e.forces_replacement else "") for e in change.diff))
        if change.reason:
            parts.append(change.reason)
    if block.resource_changes:
        parts.append(", ".join(f"{_SYMBOL[rc.action]} {_code(_resource_name(rc))}" for rc in block.resource_changes))
    return "; ".join(parts)


def _row(block: _Block) -> str:
    return f"| {md_cell(_code(block.address))} | {md_cell(block.action)} | {md_cell(_detailsmd_cell(block))} |"


def _fence(lines: list[str]) -> str:
    # Prompts often contain markdown code fences; the fence must be longer than any backtick run inside.
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _summary(block: _Block) -> str:
    return f"<details><summary>{html.escape(clean(block.address))} — {html.escape(block.action)}</summary>"


def _section(block: _Block) -> str:
    fence = _fence(block.lines)
    body = "\n".join([f"{fence}diff", *block.lines, fence])
    return f"{_summary(block)}\n\n{body}\n\n</details>"


def _collapsed_section(block: _Block) -> str:
    omitted = plural(len(block.lines), "line")
    return f"{_summary(block)}\n\n_{omitted} omitted; run llmctl plan locally for the full diff_\n\n</details>"


def _sections_omitted(n: int) -> str:
    return f"_{plural(n, 'more change')} not shown; run llmctl plan locally for the full plan_"


def _rows_omitted(n: int) -> str:
    return f"| _{plural(n, 'row')} omitted; run llmctl plan locally for the full plan_ | | |"


def _checks_omitted(n: int) -> str:
    return f"- _{plural(n, 'more check')} not shown; run llmctl plan locally for all of them_"


def _keep_prefix(items: list[str], sep: str, room: int, overflow: Callable[[int], str]) -> list[str]:
    """The longest prefix of `items` that, with a last item saying how many were left out, joins within `room`."""
    if len(sep.join(items)) <= room:
        return items
    kept, length = 0, 0
    for k, item in enumerate(items, 1):
        length += len(item) + (len(sep) if k > 1 else 0)
        # Grows with k (an item adds more than the overflow count's digits can shrink), so the first miss is final.
        if length + len(sep) + len(overflow(len(items) - k)) > room:
            break
        kept = k
    return [*items[:kept], overflow(len(items) - kept)]


@dataclass
class _Comment:
    head: str
    rows: list[str]
    sections: list[str]
    checks: list[str]

    def blocks(self) -> list[str]:
        blocks = [self.head]
        if self.rows:
            blocks.append("\n".join([*_TABLE_HEADER, *self.rows]))
        if self.sections:
            blocks.append(_SECTIONS_SEP.join(self.sections))
        if self.checks:
            blocks.append("\n".join(["**Checks**", "", *self.checks]))
        return blocks

    def text(self) -> str:
        return "\n\n".join(self.blocks())


def render_markdown(plan: Plan, limit: int = 60_000) -> str:
    """A pull-request comment of at most `limit` characters (GitHub refuses comments over 65,536).

    When too long it gives up detail in order of least value to a reviewer: first the bodies of the largest diffs,
    then the (by then one-line) per-change sections, then table rows, then checks; each cut says what was left out.
    """
    if plan.refresh_only:
        lines = _drift_lines(plan)
        return "\n".join([f"**Refresh:** {lines[0]}", *lines[1:], *[f"- {_check(check)}" for check in plan.checks]]
                         )[:limit]
    head = f"**Plan:** {_counts(plan.summary)} ({_where(plan)})"
    if not plan.has_changes:
        head = f"**Plan:** no changes; the deployment matches the configuration ({_where(plan)})"
    cost = _cost(plan)
    if cost:
        head += f"\n\n**Cost:** {cost}"
    if plan.cost:
        head += "\n\n" + render_cost(plan.cost.after, "markdown")
    if plan.rollouts:
        head += f"\n\n**Rollout:** {_rollouts(plan).removeprefix('Rollout: ')}"
    if plan.evals:
        head += f"\n\n**Evals:** {_evals(plan).removeprefix('Evals: ')}"
    blocks = _blocks(plan)
    comment = _Comment(
        head=head,
        rows=[_row(block) for block in blocks],
        sections=[_section(block) for block in blocks],
        checks=[f"- {_check(check)}" for check in plan.checks],
    )

    total = len(comment.text())
    # Collapsing keeps the number of sections, so the length changes by exactly the difference of each body.
    for i in sorted(range(len(blocks)), key=lambda i: len(comment.sections[i]), reverse=True):
        if total <= limit:
            break
        collapsed = _collapsed_section(blocks[i])
        total -= len(comment.sections[i]) - len(collapsed)
        comment.sections[i] = collapsed
    if total <= limit:
        return comment.text()

    def shrunk(items: list[str], sep: str, overflow: Callable[[int], str]) -> list[str]:
        total = len(comment.text())
        if not items or total <= limit:
            return items
        return _keep_prefix(items, sep, limit - (total - len(sep.join(items))), overflow)

    comment.sections = shrunk(comment.sections, _SECTIONS_SEP, _sections_omitted)
    comment.rows = shrunk(comment.rows, "\n", _rows_omitted)
    comment.checks = shrunk(comment.checks, "\n", _checks_omitted)

    text = comment.text()
    if len(text) <= limit:
        return text
    # Only a limit smaller than the headline and table header gets here; a comment over the limit is refused outright.
    cut = "\n\n_truncated; run llmctl plan locally_"
    return text[: limit - len(cut)] + cut if limit > len(cut) else text[:limit]


# --- dispatch --------------------------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[Plan], str]] = {"text": render_text, "json": render_json, "markdown": render_markdown}


def render(plan: Plan, fmt: Format) -> str:
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown plan format {fmt!r}; expected one of: {', '.join(_RENDERERS)}") from None
    return renderer(plan)
