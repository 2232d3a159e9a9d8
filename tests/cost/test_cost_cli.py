"""Cost and capacity in plans, as a user meets them: the aws-gpu example, the test hub, the pinned price catalog."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hub_server import TOKEN, HubServer

from llmctl.config.load import load
from llmctl.cost.catalog import load_catalog
from llmctl.cost.model import MONTH_HOURS
from llmctl.cost.render import money
from llmctl.desired import Desired
from llmctl.state import LocalBackend, State
from support import REPO, Run, edit

EXAMPLE = REPO / "examples" / "aws-gpu" / "llmops.yaml"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    target = tmp_path / "llmops.yaml"
    shutil.copy(EXAMPLE, target)
    return target


def test_plan_shows_fit_price_range_per_token_cost_and_budget(hub_llmctl: Run, example: Path, hub: HubServer) -> None:
    result = hub_llmctl("plan", "-f", str(example))
    assert result.returncode == 0, result.stderr
    spot = load_catalog().instance("aws", "us-east-1", "g5.xlarge", spot=True).price_per_hour
    on_demand = load_catalog().instance("aws", "us-east-1", "g5.xlarge", spot=False).price_per_hour
    assert f"g5.xlarge (1 × A10G, us-east-1, spot)   {money(spot)}/h (on-demand {money(on_demand)}/h) × 1-3" \
        in result.stdout
    assert f"{money(spot * MONTH_HOURS)}-{money(spot * MONTH_HOURS * 3)}/mo" in result.stdout
    assert "/1M output tokens" in result.stdout
    assert "fit: needs 19.2 GiB" in result.stdout and "21.6 GiB → fits, 89%" in result.stdout
    assert "budget team-monthly:" in result.stdout and "of $2,500.00/month" in result.stdout

    lock = json.loads((example.parent / "llmops.lock").read_text())
    assert lock["models"]["qwen-7b"]["sha"] == hub.sha("Qwen/Qwen2.5-7B-Instruct", "main")
    assert lock["models"]["qwen-7b"]["parameters"] == 7_615_616_512
    assert lock["prices"] == load_catalog().version


def test_a_larger_instance_shows_the_cost_diff(hub_llmctl: Run, example: Path) -> None:
    assert hub_llmctl("lock", "-f", str(example)).returncode == 0
    # The state a previous apply recorded (the aws provider that applies it comes with the Pulumi issue).
    loaded = load(example)
    backend = LocalBackend(example.parent / ".llmctl", "support-bot", "prod")
    backend.write(State(project="support-bot", environment="prod", serial=1, lineage=backend.read().lineage,
                        desired=Desired.from_config(loaded).to_config()))
    edit(example, "    gpu: {type: A10G, count: 1}\n", "    instance_type: g5.2xlarge\n")

    plan = json.loads(hub_llmctl("plan", "-f", str(example), "--format", "json").stdout)
    before, after = plan["cost"]["before_monthly_usd"], plan["cost"]["after_monthly_usd"]
    assert after > before > 0
    text = hub_llmctl("plan", "-f", str(example)).stdout
    assert f"Cost: {money(before)}/mo -> {money(after)}/mo (+{money(round(after - before, 2))})" in text
    assert "g5.2xlarge" in text and '+ instance_type = "g5.2xlarge"' in text


def test_raising_replicas_past_the_budget_exits_3_naming_it(hub_llmctl: Run, example: Path) -> None:
    edit(example, "replicas: {min: 1, max: 3}", "replicas: {min: 1, max: 12}")
    blocked = hub_llmctl("plan", "-f", str(example))
    assert blocked.returncode == 3, blocked.stderr
    assert "[budget.team-monthly]" in blocked.stdout and "exceeds the limit $2,500.00" in blocked.stdout
    assert "pushed over by model.qwen-7b" in blocked.stdout and "--allow-over-budget" in blocked.stdout
    assert hub_llmctl("apply", "-f", str(example), "--auto-approve").returncode == 3
    assert hub_llmctl("cost", "-f", str(example)).returncode == 3

    allowed = hub_llmctl("plan", "-f", str(example), "--allow-over-budget", "--format", "json")
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["cost"]["allow_over_budget"] is True


def test_a_70b_model_on_one_a10g_fails_the_fit_check_with_the_numbers(hub_llmctl: Run, example: Path) -> None:
    edit(example, "hf://Qwen/Qwen2.5-7B-Instruct@main", "hf://meta-llama/Llama-3.3-70B-Instruct")
    result = hub_llmctl("plan", "-f", str(example), env={"HF_TOKEN": TOKEN})
    assert result.returncode == 1
    assert "[model.qwen-7b] does not fit: needs 1" in result.stdout
    assert "1 × A10G has 24 GiB × 1 × 0.90 = 21.6 GiB → does not fit: use gpu count" in result.stdout
    # ...or the cheapest instance in the region whose GPUs hold it.
    needs = float(re.search(r"does not fit: needs ([0-9.]+) GiB", result.stdout).group(1))
    roomy = [o for o in load_catalog().offers if o.provider == "aws" and o.region == "us-east-1" and not o.spot
             and o.gpu_name and o.gpu_memory_gib * o.gpu_count * 0.9 >= needs]
    cheapest = min(roomy, key=lambda o: o.price_per_hour).instance_type
    assert re.search(rf"use gpu count \d+ or {re.escape(cheapest)}", result.stdout)


@pytest.mark.parametrize("old, new, words", [
    pytest.param("    gpu: {type: A10G, count: 1}\n", "    instance_type: g5.xlarg\n", "did you mean 'g5.xlarge'",
                 id="unknown-instance-type"),
    pytest.param("type: A10G", "type: A10X", "A10X", id="unknown-gpu"),
    pytest.param("region: us-east-1", "region: eu-west-1\n    spot: false\n  unused:\n    provider: local",
                 "eu-west-1", id="region-without-a-price"),
])
def test_bad_cost_inputs_are_clear_errors(hub_llmctl: Run, example: Path, old: str, new: str, words: str) -> None:
    if "region" in old:
        edit(example, "    spot: true\n", "")
        edit(example, "type: A10G, count: 1", "type: H100, count: 8")
    edit(example, old, new)
    result = hub_llmctl("plan", "-f", str(example))
    assert result.returncode == 1, result.stdout + result.stderr
    assert words in result.stdout and "Traceback" not in result.stderr, result.stdout + result.stderr


def test_a_model_without_traffic_is_unknown_and_the_budget_says_it_cannot_be_complete(hub_llmctl: Run, example: Path) -> None:
    edit(example, "    traffic: {requests_per_day: 10000, input_tokens: 400, output_tokens: 150}\n", "")
    result = hub_llmctl("cost", "-f", str(example))
    assert result.returncode == 0, result.stderr
    assert "unknown traffic" in result.stdout
    assert "cannot be complete: no cost for fallback-api" in result.stdout
    assert "prices: " in result.stdout  # the snapshot's source, with its date


def test_an_unlocked_hub_model_offline_is_a_clear_error(hub_llmctl: Run, example: Path) -> None:
    result = hub_llmctl("plan", "-f", str(example), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "qwen-7b" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


def test_the_markdown_plan_for_pull_requests_carries_the_cost_table(hub_llmctl: Run, example: Path) -> None:
    markdown = hub_llmctl("plan", "-f", str(example), "--format", "markdown").stdout
    assert "| model | priced as | per hour | per month | $/1M output tokens | fit |" in markdown
    assert "| `qwen-7b` | g5.xlarge (1 × A10G, us-east-1, spot) |" in markdown and "✅ 89%" in markdown
    assert "budget team-monthly:" in markdown
