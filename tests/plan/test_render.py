"""The plan renderers: what a reviewer reads in a terminal or a pull request."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from llmctl.checks import Check
from llmctl.config.schema import Config
from llmctl.cost.model import CostReport, PlanCost
from llmctl.plan.model import Change, DiffEntry, Drift, Plan, Summary
from llmctl.plan.render import render, render_json, render_markdown, render_text
from llmctl.resource import Action, ResourceChange

# --- helpers to build plans ------------------------------------------------------------------------------------


def make_plan(
    changes: list[Change] | None = None,
    resource_changes: list[ResourceChange] | None = None,
    *,
    summary: tuple[int, int, int] = (0, 0, 0),
    cost: tuple[float, float] | None = None,
    checks: list[Check] | None = None,
    serial: int = 4,
) -> Plan:
    """`cost`: the monthly (before, after) of a config whose models cost that much in total."""
    add, change, destroy = summary
    return Plan(
        project="support-bot",
        environment="dev",
        config_path="llmops.yaml",
        created_at="2025-01-01T00:00:00Z",
        state_serial=serial,
        state_lineage="0b7d5c1e-lineage",
        changes=changes or [],
        resource_changes=resource_changes or [],
        summary=Summary(add=add, change=change, destroy=destroy),
        cost=plan_cost(*cost) if cost else None,
        checks=checks or [],
        desired=Config(version=1, project="support-bot", environment="dev"),
    )


def plan_cost(before: float, after: float) -> PlanCost:
    report = CostReport(catalog_version="test-catalog", prices_as_of="2025-06-01", prices_source="test",
                        models=[], monthly_min_usd=after, monthly_max_usd=after, budgets=[])
    return PlanCost(before_monthly_usd=before, after_monthly_usd=after, after_monthly_max_usd=after, after=report)


def changed(path: str, before: Any, after: Any, **kwargs: Any) -> DiffEntry:
    return DiffEntry(path=path, op="change", before=before, after=after, **kwargs)


def process(owner: str, index: int, action: Action, reason: str | None = None) -> ResourceChange:
    name = owner.split(".", 1)[1]
    return ResourceChange(
        address=f"local_process.{name}[{index}]", owner=owner, provider="local", target="laptop", action=action,
        reason=reason,
    )


def design_example() -> Plan:
    """The plan shown in DESIGN.md, "Plan output (text)"."""
    return make_plan(
        [
            Change(address="model.assistant", action="update", diff=[changed("replicas", 1, 2)]),
            Change(
                address="prompt.support-answer",
                action="update",
                diff=[
                    changed("version", 1, 2),
                    changed(
                        "template",
                        "Answer: {{ question }}",
                        "Answer the customer question: {{ question }}",
                        lines=["- Answer: {{ question }}", "+ Answer the customer question: {{ question }}"],
                    ),
                ],
            ),
        ],
        summary=(0, 2, 0),
    )


# --- text ------------------------------------------------------------------------------------------------------


def test_text_matches_the_design_example_exactly() -> None:
    expected = """\
llmctl will perform the following actions (support-bot/dev, state serial 4):

  # model.assistant will be updated in place
  ~ model "assistant" {
      ~ replicas = 1 -> 2
    }

  # prompt.support-answer will be updated in place
  ~ prompt "support-answer" {
      ~ version  = 1 -> 2
      ~ template
          - Answer: {{ question }}
          + Answer the customer question: {{ question }}
    }

Plan: 0 to add, 2 to change, 0 to destroy."""
    assert render_text(design_example()) == expected


def test_text_has_no_ansi_codes_even_when_prompt_text_carries_them() -> None:
    entry = changed("template", "a", "b", lines=["- \x1b[31mred", "+ b"])
    plan = make_plan([Change(address="prompt.p", action="update", diff=[entry])], summary=(0, 1, 0))
    text = render_text(plan)
    assert "\x1b" not in text
    assert "- \\x1b[31mred" in text


def test_create_shows_every_attribute_after_with_plus_and_json_literals() -> None:
    plan = make_plan(
        [
            Change(
                address="target.gpu",
                action="create",
                after={"provider": "aws", "instance_type": "g5.xlarge", "zones": ["a", "b"], "spot": False, "n": None},
            )
        ],
        summary=(1, 0, 0),
    )
    block = """\
  # target.gpu will be created
  + target "gpu" {
      + provider      = "aws"
      + instance_type = "g5.xlarge"
      + zones         = ["a", "b"]
      + spot          = false
      + n             = null
    }
"""
    assert block in render_text(plan)
    assert render_text(plan).endswith("Plan: 1 to add, 0 to change, 0 to destroy.")


def test_delete_shows_before_with_minus_and_keeps_multiline_values_on_one_line() -> None:
    plan = make_plan(
        [Change(address="prompt.old", action="delete", before={"template": "Hi\nthere", "version": 3})],
        summary=(0, 0, 1),
    )
    block = """\
  # prompt.old will be destroyed
  - prompt "old" {
      - template = "Hi\\nthere"
      - version  = 3
    }
"""
    assert block in render_text(plan)


def test_replace_shows_forces_replacement_reason_and_resource_changes_under_the_model() -> None:
    plan = make_plan(
        [
            Change(
                address="model.assistant",
                action="replace",
                reason="drift: replica 0, pid 1234, is not running",
                diff=[
                    changed("context_length", 4096, 8192, forces_replacement=True),
                    DiffEntry(path="engine_args.dtype", op="add", after="float16"),
                    DiffEntry(path="engine_args.seed", op="remove", before=7),
                ],
            )
        ],
        [
            process("model.assistant", 0, "replace", "context_length changed"),
            process("model.assistant", 1, "create"),
            process("model.assistant", 2, "delete", "replicas 3 -> 2"),
        ],
        summary=(1, 0, 1),
    )
    block = """\
  # model.assistant must be replaced
  # (drift: replica 0, pid 1234, is not running)
-/+ model "assistant" {
      ~ context_length    = 4096 -> 8192 # forces replacement
      + engine_args.dtype = "float16"
      - engine_args.seed  = 7
    -/+ local_process.assistant[0]  # context_length changed
      + local_process.assistant[1]
      - local_process.assistant[2]  # replicas 3 -> 2
    }
"""
    assert block in render_text(plan)


def test_deposed_resource_is_marked() -> None:
    deposed = process("model.assistant", 0, "delete", "left behind by an interrupted apply")
    deposed = deposed.model_copy(update={"deposed": True})
    plan = make_plan(
        [Change(address="model.assistant", action="replace", diff=[changed("engine", "llama.cpp", "vllm")])],
        [deposed, process("model.assistant", 0, "create")],
        summary=(1, 0, 1),
    )
    assert (
        "      - local_process.assistant[0] (deposed)  # left behind by an interrupted apply\n"
        "      + local_process.assistant[0]\n"
    ) in render_text(plan)


def test_resource_changes_without_a_change_get_their_own_block() -> None:
    plan = make_plan(
        [Change(address="model.other", action="update", diff=[changed("replicas", 1, 2)])],
        [process("model.assistant", 1, "create", "drift: replica 1 exited")],
        summary=(1, 1, 0),
    )
    block = """\
  # model.assistant has resource changes
    model "assistant" {
      + local_process.assistant[1]  # drift: replica 1 exited
    }
"""
    text = render_text(plan)
    assert block in text
    assert text.index("model.other") < text.index("model.assistant has resource changes")


def test_cost_then_checks_then_summary_line() -> None:
    plan = make_plan(
        design_example().changes,
        cost=(1234.5, 2000),
        checks=[
            Check(severity="error", address="budget.team-monthly", message="over budget"),
            Check(severity="warning", message="no SLO declared"),
            Check(severity="info", address="model.assistant", message="price as of 2025-01-01"),
        ],
        summary=(0, 2, 0),
    )
    tail = """\
    }

Cost estimate (prices as of 2025-06-01, catalog test-catalog):
  total  $2,000.00/mo

Cost: $1,234.50/mo -> $2,000.00/mo (+$765.50)
Error: [budget.team-monthly] over budget
Warning: no SLO declared
Note: [model.assistant] price as of 2025-01-01
Plan: 0 to add, 2 to change, 0 to destroy."""
    assert render_text(plan).endswith(tail)


@pytest.mark.parametrize(
    ("cost", "line"),
    [
        ((0, 734.4), "Cost: $0.00/mo -> $734.40/mo (+$734.40)"),
        ((2500, 1000), "Cost: $2,500.00/mo -> $1,000.00/mo (-$1,500.00)"),
        ((99.999, 99.999), "Cost: $100.00/mo -> $100.00/mo (+$0.00)"),
        (None, None),
    ],
)
def test_cost_line_gives_before_after_and_the_difference(cost: tuple[float, float] | None, line: str | None) -> None:
    text = render_text(make_plan(design_example().changes, cost=cost, summary=(0, 2, 0)))
    cost_lines = [row for row in text.splitlines() if row.startswith("Cost:")]
    assert cost_lines == ([line] if line else [])


def test_no_changes() -> None:
    plan = make_plan(checks=[Check(severity="warning", address="model.assistant", message="latest is not pinned")])
    assert render_text(plan) == (
        "No changes. The deployment matches the configuration (support-bot/dev, state serial 4).\n"
        "\n"
        "Warning: [model.assistant] latest is not pinned"
    )
    assert render_text(make_plan(serial=9)) == (
        "No changes. The deployment matches the configuration (support-bot/dev, state serial 9)."
    )


# --- json ------------------------------------------------------------------------------------------------------


def test_json_is_the_plan_itself() -> None:
    plan = make_plan(
        design_example().changes,
        [process("model.assistant", 1, "create")],
        cost=(0, 734.4),
        checks=[Check(severity="info", message="hello")],
        summary=(1, 2, 0),
    )
    output = render_json(plan)
    assert json.loads(output) == plan.model_dump(mode="json")
    assert Plan.model_validate_json(output) == plan
    assert render(plan, "json") == output


# --- markdown --------------------------------------------------------------------------------------------------


def test_markdown_summary_table_details_and_checks() -> None:
    plan = make_plan(
        design_example().changes,
        cost=(0, 734.4),
        checks=[Check(severity="warning", address="model.assistant", message="no SLO declared")],
        summary=(0, 2, 0),
    )
    md = render_markdown(plan)
    assert md.startswith("**Plan:** 0 to add, 2 to change, 0 to destroy (support-bot/dev, state serial 4)")
    assert "**Cost:** $0.00/mo -> $734.40/mo (+$734.40)" in md
    assert "| Address | Action | Details |" in md
    assert "| `model.assistant` | update | `replicas` |" in md
    assert "| `prompt.support-answer` | update | `version`, `template` |" in md
    assert md.count("<details>") == 2
    assert "<details><summary>model.assistant — update</summary>" in md
    assert "- Warning: [model.assistant] no SLO declared" in md
    assert md.index("| Address") < md.index("<details>") < md.index("- Warning")


def test_markdown_diff_blocks_are_the_text_blocks() -> None:
    plan = design_example()
    md = render_markdown(plan)
    fenced = re.findall(r"```diff\n(.*?)\n```", md, flags=re.DOTALL)
    text_blocks = render_text(plan).split("\n\n")[1:-1]  # between the headline and the Plan: line
    assert fenced == text_blocks


def test_markdown_fence_survives_prompts_that_contain_fences() -> None:
    lines = ["- Reply in prose.", "+ Reply with ```json``` only."]
    plan = make_plan(
        [Change(address="prompt.p", action="update", diff=[changed("template", "a", "b", lines=lines)])],
        summary=(0, 1, 0),
    )
    md = render_markdown(plan)
    assert "````diff\n" in md
    assert "\n````\n" in md


def test_markdown_escapes_pipes_in_table_cells() -> None:
    plan = make_plan(
        [Change(address="model.a", action="update", reason="drift: a|b", diff=[changed("x", 1, 2)])],
        [process("model.b", 0, "create", "x|y")],
        summary=(1, 1, 0),
    )
    md = render_markdown(plan)
    row = next(line for line in md.splitlines() if line.startswith("| `model.a`"))
    assert row == "| `model.a` | update | `x`; drift: a\\|b |"
    # Every table row still has exactly four unescaped pipes: three columns.
    for line in md.splitlines():
        if line.startswith("| "):
            assert len(re.findall(r"(?<!\\)\|", line)) == 4, line


def test_markdown_collapses_the_largest_section_first_and_keeps_small_ones() -> None:
    huge = [f"+ line {i}: " + "lorem ipsum dolor sit amet " * 4 for i in range(5_000)]
    plan = make_plan(
        [
            Change(address="model.assistant", action="update", diff=[changed("replicas", 1, 2)]),
            Change(address="prompt.huge", action="update", diff=[changed("template", "", "x", lines=huge)]),
            Change(address="prompt.small", action="update", diff=[changed("version", 1, 2)]),
        ],
        summary=(0, 3, 0),
    )
    md = render_markdown(plan)
    assert len(md) <= 60_000
    assert "<details><summary>prompt.huge — update</summary>\n\n_5004 lines omitted; run llmctl plan locally" in md
    assert "line 0:" not in md
    # The small sections are untouched: their diff blocks match the text output.
    text = render_text(plan)
    for address in ("model.assistant", "prompt.small"):
        block = next(b for b in text.split("\n\n") if f"# {address} " in b)
        assert f"```diff\n{block}\n```" in md
    assert len([line for line in md.splitlines() if line.startswith("| `")]) == 3


def test_markdown_collapses_only_as_many_sections_as_needed() -> None:
    def prompt(name: str, n: int) -> Change:
        lines = [f"+ {name} {i} " + "x" * 80 for i in range(n)]
        return Change(address=f"prompt.{name}", action="update", diff=[changed("template", "", "x", lines=lines)])

    plan = make_plan([prompt("a", 150), prompt("b", 500), prompt("c", 200)], summary=(0, 3, 0))
    assert len(render_markdown(plan, limit=10**6)) > 60_000  # a, b and c together do not fit
    md = render_markdown(plan, limit=60_000)
    assert len(md) <= 60_000
    assert "+ b 0 " not in md  # the largest is collapsed
    assert "+ a 0 " in md and "+ c 0 " in md  # the others fit once it is


def test_markdown_truncates_the_table_when_even_rows_do_not_fit() -> None:
    changes = [
        Change(address=f"model.m{i:04}", action="update", diff=[changed("replicas", 1, 2)]) for i in range(3_000)
    ]
    plan = make_plan(changes, checks=[Check(severity="error", message="budget exceeded")], summary=(0, 3_000, 0))
    md = render_markdown(plan)
    assert len(md) <= 60_000
    assert "<details>" not in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    shown = [row for row in rows if row.startswith("| `model.")]
    assert rows[-1] == f"| _{3_000 - len(shown)} rows omitted; run llmctl plan locally for the full plan_ | | |"
    assert shown[0].startswith("| `model.m0000`")
    assert "- Error: budget exceeded" in md


@pytest.mark.parametrize("limit", [5_000, 1_000, 300, 40])
def test_markdown_never_exceeds_the_limit(limit: int) -> None:
    changes = [Change(address=f"model.m{i}", action="update", diff=[changed("replicas", 1, 2)]) for i in range(200)]
    checks = [Check(severity="warning", message=f"warning {i}") for i in range(200)]
    assert len(render_markdown(make_plan(changes, checks=checks, summary=(0, 200, 0)), limit=limit)) <= limit


def test_markdown_no_changes() -> None:
    md = render_markdown(make_plan(checks=[Check(severity="info", message="all good")]))
    assert "no changes" in md
    assert "(support-bot/dev, state serial 4)" in md
    assert "| Address" not in md
    assert "- Note: all good" in md


# --- dispatch --------------------------------------------------------------------------------------------------


def test_render_dispatches_by_format() -> None:
    plan = design_example()
    assert render(plan, "text") == render_text(plan)
    assert render(plan, "markdown") == render_markdown(plan)
    with pytest.raises(ValueError, match="unknown plan format 'yaml'"):
        render(plan, "yaml")  # type: ignore[arg-type]


# --- refresh-only ----------------------------------------------------------------------------------------------


def test_a_refresh_only_plan_lists_the_drift_and_says_nothing_changed() -> None:
    drift = [Drift(address="aws_ec2_security_group.qwen-7b/sg", owner="model.qwen-7b", provider="aws",
                   target="gpu-cloud", kind="deleted", detail="deleted outside llmctl (found by pulumi refresh)"),
             Drift(address="aws_autoscaling_group.qwen-7b/asg", owner="model.qwen-7b", provider="aws",
                   target="gpu-cloud", kind="changed", detail="desired_capacity, max_size changed")]
    plan = make_plan().model_copy(update={"refresh_only": True, "drift": drift})
    text = render_text(plan)
    assert "Resources changed outside llmctl (support-bot/dev, state serial 4):" in text
    assert "  aws_ec2_security_group.qwen-7b/sg (model.qwen-7b) deleted: deleted outside llmctl" in text
    assert "  aws_autoscaling_group.qwen-7b/asg (model.qwen-7b) changed: desired_capacity, max_size changed" in text
    assert "Nothing was changed." in text and "Plan:" not in text
    markdown = render_markdown(plan)
    assert markdown.startswith("**Refresh:** Resources changed outside llmctl")
    assert "aws_ec2_security_group.qwen-7b/sg (model.qwen-7b) deleted" in markdown
    assert json.loads(render_json(plan))["drift"][1]["kind"] == "changed"
    assert plan.has_changes


def test_a_refresh_only_plan_without_drift_says_so() -> None:
    plan = make_plan().model_copy(update={"refresh_only": True})
    assert render_text(plan).startswith("No drift: every resource llmctl manages is as the last apply left it")
    assert not plan.has_changes
