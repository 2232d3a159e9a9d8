"""The Grafana dashboard generated from the config: a layout Grafana accepts, queries Prometheus parses, and the
targets, limits and panels a user reads off it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.monitor.dashboard import dashboard, dashboard_text, uid
from llmctl.monitor.tools import require
from support import EXAMPLE_CONTRACT, REPO, edit

Panel = dict[str, Any]


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    """The reference config with a tighter TTFT target, a second budget scoped to one model and a second SLO with
    the other objectives over a window too short for the 3-day ticket alert."""
    config = tmp_path_factory.mktemp("config") / "llmops.yaml"
    shutil.copy(EXAMPLE_CONTRACT, config)
    edit(config, "ttft_p95_ms: 1500", "ttft_p95_ms: 800")
    edit(config, "    notify: [ops@example.com]\n", "    notify: [ops@example.com]\n"
         "  - name: gpu-daily\n    limit_usd: 40\n    period: day\n    alert_at: [0.5, 1.0]\n    scope: [qwen-7b]\n")
    edit(config, "    replicas: 2\n    context_length: 8192\n    slo: interactive",
         "    replicas: 2\n    context_length: 8192\n    slo: batch")
    config.write_text(config.read_text() + "  - name: batch\n    itl_p95_ms: 150\n    min_goodput: 0.9\n"
                      "    window: 2d\n")
    return Desired.from_config(load(config))


@pytest.fixture(scope="module")
def board(desired: Desired) -> dict[str, Any]:
    return dashboard(desired)


def rows(board: dict[str, Any]) -> dict[str, list[Panel]]:
    """The panels under each row, by the row's title."""
    found: dict[str, list[Panel]] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            found[panel["title"]] = current = []
        else:
            current.append(panel)
    return found


def panel(board: dict[str, Any], row: str, title: str) -> Panel:
    matches = [p for p in rows(board)[row] if p["title"] == title]
    assert len(matches) == 1, f"{len(matches)} panels '{title}' in row '{row}'"
    return matches[0]


def titles(board: dict[str, Any], row: str) -> list[str]:
    return [p["title"] for p in rows(board)[row]]


def steps(panel: Panel) -> list[tuple[float | None, str]]:
    return [(s["value"], s["color"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def lines_drawn(panel: Panel) -> bool:
    return panel["fieldConfig"]["defaults"].get("custom", {}).get("thresholdsStyle", {}).get("mode") == "dashed"


def exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for p in board["panels"] for target in p.get("targets", [])]


# --- structure ---------------------------------------------------------------------------------------------------


def test_every_panel_has_a_unique_id_and_the_chosen_prometheus(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variable = {v["name"]: v for v in board["templating"]["list"]}["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for p in (p for p in board["panels"] if p["type"] != "row"):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)) and all(ref_ids), p["title"]


def test_panels_fit_the_24_columns_without_overlapping(board: dict[str, Any]) -> None:
    boxes = [(p["title"], p["gridPos"]) for p in board["panels"]]
    for title, box in boxes:
        assert box["x"] >= 0 and box["y"] >= 0 and box["w"] > 0 and box["h"] > 0, title
        assert box["x"] + box["w"] <= 24, title
    for i, (first, a) in enumerate(boxes):
        for second, b in boxes[i + 1:]:
            apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                     or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
            assert apart, f"'{first}' {a} overlaps '{second}' {b}"


def test_the_json_loads_back_through_the_sdk_model_unchanged(board: dict[str, Any]) -> None:
    """Nothing the SDK's dashboard model does not know, nothing it reads differently (the SDK ships no JSON schema
    to validate against)."""
    register_default_plugins()  # the panel and query types, which the model decodes through its plugin registry
    again = json.loads(JSONEncoder().encode(DashboardModel.from_json(board)))
    for decoded in again["panels"]:  # the one difference: the decoder fills an absent panel-specific config with {}
        if decoded.get("fieldConfig", {}).get("defaults", {}).get("custom") == {}:
            del decoded["fieldConfig"]["defaults"]["custom"]
    assert again == board


def test_the_text_is_the_data(desired: Desired, board: dict[str, Any]) -> None:
    assert json.loads(dashboard_text(desired)) == board


def test_the_uid_is_stable_per_environment_and_valid_for_grafana(board: dict[str, Any]) -> None:
    assert board["uid"] == uid("support-bot", "dev")
    assert uid("support-bot", "prod") != board["uid"] and uid("a.b", "c") != uid("a-b", "c")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid("p" * 63, "e" * 63))


# --- every query parses ------------------------------------------------------------------------------------------


def promtool() -> Path:
    """The real promtool; missing, the test fails with how to install it (never skips: the check would be lost)."""
    try:
        return require("promtool")
    except LlmctlError as exc:
        missing = str(exc)  # failed outside the handler: the message alone, without the chained traceback
    pytest.fail(missing, pytrace=False)


def test_every_query_is_valid_promql(board: dict[str, Any], tmp_path: Path) -> None:
    promql_check(exprs(board), tmp_path)


def promql_check(found: list[str], tmp_path: Path) -> None:
    # Grafana fills $__rate_interval in before Prometheus sees the query; promtool parses it as a recording rule.
    queries = sorted({expr.replace("$__rate_interval", "5m") for expr in found})
    assert not [q for q in queries if "$" in q]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]}]}))
    checked = subprocess.run([str(promtool()), "check", "rules", str(rules)], capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(queries)} rules found" in checked.stdout


def test_promql_check_catches_a_broken_query(tmp_path: Path) -> None:
    """The check above proves something: promtool refuses a query Prometheus would refuse."""
    rules = tmp_path / "broken.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [
        {"record": "dashboard:broken", "expr": "sum by (le) (rate(x[5m])"}]}]}))
    assert subprocess.run([str(promtool()), "check", "rules", str(rules)], capture_output=True,
                          timeout=120).returncode != 0


# --- what a user sees --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "title", "target"), [
    ("assistant", "TTFT p95", 0.8),  # ttft_p95_ms: 800
    ("assistant", "Latency p95", 8.0),  # latency_p95_ms: 8000
    ("qwen-7b", "TTFT p95", 0.8),  # the same SLO
    ("assistant", "Error rate", 0.01),  # error_rate: 0.01
    ("llama-k8s", "ITL p95", 0.15),  # itl_p95_ms: 150
])
def test_an_slo_target_is_a_dashed_line_on_its_panel(board: dict[str, Any], model: str, title: str,
                                                     target: float) -> None:
    found = panel(board, f"Model {model}", title)
    assert (target, "red") in steps(found)
    assert lines_drawn(found)


def test_a_panel_without_a_target_draws_no_line(board: dict[str, Any]) -> None:
    for title in ("TTFT p95", "Latency p95", "Error rate"):  # the batch SLO sets none of these
        assert not lines_drawn(panel(board, "Model llama-k8s", title))
    assert not lines_drawn(panel(board, "Model fallback-api", "TTFT p95"))  # no SLO at all


def test_latency_panels_read_seconds_from_the_histograms(board: dict[str, Any]) -> None:
    ttft = panel(board, "Model assistant", "TTFT p95")
    assert ttft["fieldConfig"]["defaults"]["unit"] == "s"
    assert [t["expr"] for t in ttft["targets"]] == [
        'histogram_quantile(0.95, sum by (le) (rate(llmctl_gateway_ttft_seconds_bucket{model="assistant"}'
        '[$__rate_interval])))']


def test_a_model_without_an_slo_has_no_burn_panels(board: dict[str, Any]) -> None:
    assert "Burn rate" not in titles(board, "Model fallback-api")
    assert "Error budget remaining" not in titles(board, "Model fallback-api")
    assert not [t for p in rows(board)["Model fallback-api"] for t in p["targets"] if "llmctl:slo_" in t["expr"]]


def test_burn_rates_follow_the_alert_windows_that_fit_the_slo(board: dict[str, Any]) -> None:
    interactive = panel(board, "Model assistant", "Burn rate")
    assert {t["legendFormat"] for t in interactive["targets"]} == {
        f"{sli} over {window}" for sli in ("ttft", "latency", "errors") for window in ("1h", "6h", "1d", "3d")}
    assert ('llmctl:slo_bad:ratio_rate1h{model="assistant",slo="interactive",sli="errors"} / 0.01'
            in [t["expr"] for t in interactive["targets"]])
    assert (1.0, "red") in steps(interactive) and lines_drawn(interactive)
    batch = panel(board, "Model llama-k8s", "Burn rate")  # a 2d window: no 3-day ticket alert
    assert {t["legendFormat"] for t in batch["targets"]} == {
        f"{sli} over {window}" for sli in ("itl", "goodput") for window in ("1h", "6h", "1d")}
    remaining = panel(board, "Model llama-k8s", "Error budget remaining")
    assert [t["expr"] for t in remaining["targets"]] == [
        'llmctl:slo_budget_remaining:ratio{model="llama-k8s",slo="batch"}']


def test_each_budget_shows_its_limit(desired: Desired, board: dict[str, Any]) -> None:
    for name, budget in desired.budgets.items():
        gauge = panel(board, "Overview", f"Budget {name}")
        assert gauge["fieldConfig"]["defaults"]["max"] == budget.limit_usd
        assert steps(gauge)[-1] == (budget.limit_usd, "red")
    assert steps(panel(board, "Overview", "Budget gpu-daily")) == [(None, "green"), (20.0, "orange"), (40.0, "red")]


def test_a_model_shows_spend_against_each_budget_it_counts_against(desired: Desired, board: dict[str, Any]) -> None:
    assert desired.budgets_of("qwen-7b") == ["team-monthly", "gpu-daily"]  # named, and in gpu-daily's scope
    for model in desired.models:
        shown = [t for t in titles(board, f"Model {model}") if t.startswith("Budget ")]
        assert shown == [f"Budget {name}" for name in desired.budgets_of(model)]
    daily = panel(board, "Model qwen-7b", "Budget gpu-daily")
    assert (40.0, "red") in steps(daily) and lines_drawn(daily)
    assert [t["expr"] for t in daily["targets"]] == ['max(llmctl_budget_spent_usd{budget="gpu-daily"})']


def test_every_model_has_its_traffic_and_engine_panels(desired: Desired, board: dict[str, Any]) -> None:
    always = ["Requests/s by status", "Error rate", "Tokens/s", "TTFT p95", "Latency p95", "ITL p95",
              "Spend USD/h by team", "Replicas up", "Upstream errors/s by reason", "Engine queue", "KV-cache use"]
    for model in desired.models:
        assert set(always) <= set(titles(board, f"Model {model}")), model
        queue = panel(board, f"Model {model}", "Engine queue")
        assert queue["fieldConfig"]["defaults"]["noValue"] == "no engine metrics"
        assert [t["expr"] for t in queue["targets"]] == [f'llmctl:engine_queue:requests{{model="{model}"}}']


def test_guardrail_actions_only_for_models_with_guardrails(desired: Desired, board: dict[str, Any]) -> None:
    for name, model in desired.models.items():
        assert ("Guardrail actions/s by rule" in titles(board, f"Model {name}")) == bool(model.guardrails), name
    actions = panel(board, "Model assistant", "Guardrail actions/s by rule")
    assert actions["targets"][0]["legendFormat"] == "{{rule}}: {{action}}"


def test_versions_side_by_side_have_their_own_panels_only_where_a_model_has_them(tmp_path: Path) -> None:
    day2 = dashboard(Desired.from_config(load(REPO / "examples" / "day2" / "llmops.yaml")))
    rollout = panel(day2, "Model assistant", "Requests/s by rollout version")
    assert rollout["targets"][0]["expr"].startswith("sum by (version) (rate(llmctl_gateway_requests_total{")
    assert "sum by (version)" in panel(day2, "Model assistant", "Error rate by rollout version")["targets"][0]["expr"]
    ab = panel(day2, "Model assistant", "Requests/s by version of prompt support-answer")
    assert "sum by (prompt_version) (rate(llmctl_gateway_prompt_requests_total{" in ab["targets"][0]["expr"]
    promql_check(exprs(day2), tmp_path)
    quickstart = dashboard(Desired.from_config(load(REPO / "examples" / "quickstart" / "llmops.yaml")))
    assert not [t for t in titles(quickstart, "Model assistant") if "version" in t]
