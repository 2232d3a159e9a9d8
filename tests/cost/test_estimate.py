"""Cost estimates for the targets that are not priced from instance offers, and hosted API arithmetic."""
from __future__ import annotations

from pathlib import Path

from llmctl.config.schema import Config
from llmctl.cost.catalog import load_catalog
from llmctl.cost.estimate import estimate
from llmctl.cost.hosted import price_of
from llmctl.cost.model import MONTH_HOURS
from llmctl.cost.render import budget_line
from llmctl.desired import Desired


def desired(targets: dict, models: list[dict], budgets: list[dict] | None = None) -> Desired:
    config = Config.model_validate({"version": 1, "project": "p", "targets": targets, "models": models,
                                    "budgets": budgets or []})
    return Desired.from_parts(config, Path("."))


def test_kubernetes_gpus_are_priced_by_the_targets_gpu_hour_and_mapped_to_known_gpus() -> None:
    plan = desired({"cluster": {"provider": "kubernetes", "gpu_hour_usd": 0.8},
                    "bare": {"provider": "kubernetes"}},
                   [{"name": "a", "source": "hf://o/r", "engine": "tgi", "target": "cluster",
                     "gpu": {"type": "L4", "count": 2}, "replicas": 3},
                    {"name": "b", "source": "hf://o/r", "engine": "tgi", "target": "bare", "gpu": {"type": "L4"}}])
    report, checks = estimate(plan, load_catalog(), None)
    a, b = report.models
    assert (a.kind, a.hourly_usd, a.monthly_min_usd) == ("gpu-hour", 1.6, round(1.6 * 3 * MONTH_HOURS, 2))
    assert b.kind == "unknown" and b.monthly_min_usd is None and "set gpu_hour_usd on target 'bare'" in b.notes[0]
    assert checks == []


def test_local_targets_cost_nothing_unless_they_declare_a_gpu_hour() -> None:
    plan = desired({"laptop": {"provider": "local"}, "rig": {"provider": "local", "gpu_hour_usd": 0.5}},
                   [{"name": "free", "source": "m.gguf", "engine": "llama-cpp", "target": "laptop"},
                    {"name": "paid", "source": "m.gguf", "engine": "llama-cpp", "target": "rig", "replicas": 2}])
    free, paid = estimate(plan, load_catalog(), None)[0].models
    assert (free.kind, free.monthly_min_usd) == ("local", 0.0)
    assert (paid.kind, paid.monthly_min_usd) == ("gpu-hour", round(0.5 * 2 * MONTH_HOURS, 2))


def test_hosted_api_spend_follows_traffic_and_prices_and_feeds_the_budget() -> None:
    plan = desired({}, [{"name": "api", "source": "api://openai/gpt-4o-mini", "budget": "b",
                         "traffic": {"requests_per_day": 10000, "input_tokens": 400, "output_tokens": 150}}],
                   [{"name": "b", "limit_usd": 40, "period": "month", "alert_at": [0.5, 1.0], "on_exceed": "warn"}])
    report, _ = estimate(plan, load_catalog(), None)
    price = price_of(plan.models["api"])
    monthly = round((400 * price.input_per_1m + 150 * price.output_per_1m) / 1e6 * 10000 * MONTH_HOURS / 24, 2)
    [api] = report.models
    assert api.monthly_min_usd == monthly and api.price == price
    [budget] = report.budgets
    assert budget.projected_max_usd == monthly and budget.exceeded == (monthly > 40)
    assert budget.alerts_crossed == [a for a in (0.5, 1.0) if monthly >= a * 40]


def test_a_budget_counts_the_models_in_its_scope_too() -> None:
    plan = desired({"laptop": {"provider": "local", "gpu_hour_usd": 1.0}},
                   [{"name": "named", "source": "m.gguf", "engine": "llama-cpp", "target": "laptop", "budget": "b"},
                    {"name": "scoped", "source": "m.gguf", "engine": "llama-cpp", "target": "laptop"},
                    {"name": "other", "source": "m.gguf", "engine": "llama-cpp", "target": "laptop"}],
                   [{"name": "b", "limit_usd": 1000, "scope": ["scoped"]}])
    [budget] = estimate(plan, load_catalog(), None)[0].budgets
    assert budget.models == ["named", "scoped"]
    assert budget.projected_max_usd == round(2 * MONTH_HOURS, 2) and budget.exceeded


def test_a_team_budget_names_its_teams_and_says_their_requests_are_not_projected() -> None:
    config = Config.model_validate({
        "version": 1, "project": "p", "budgets": [{"name": "support-team", "limit_usd": 300, "on_exceed": "block"}],
        "gateway": {"keys": [{"name": "app", "env": "APP_KEY", "team": "support"}],
                    "teams": [{"name": "support", "budget": "support-team"}, {"name": "data"}]}})
    [budget] = estimate(Desired.from_parts(config, Path(".")), load_catalog(), None)[0].budgets
    assert (budget.teams, budget.models, budget.projected_max_usd) == (["support"], [], 0.0)
    assert "also counts team support's requests, enforced per request by the gateway" in budget_line(budget)


def test_a_hosted_model_without_a_price_is_an_error_only_where_a_blocking_budget_counts_it() -> None:
    models = [{"name": name, "source": f"api://my-vllm/{name}", "budget": budget}
              for name, budget in (("blocked", "hard"), ("warned", "soft"))]
    models.append({"name": "free", "source": "api://my-vllm/free"})
    plan = desired({}, models, [{"name": "hard", "limit_usd": 10, "on_exceed": "block"},
                                {"name": "soft", "limit_usd": 10, "on_exceed": "warn"}])
    report, checks = estimate(plan, load_catalog(), None)
    assert [(m.model, m.kind, m.price) for m in report.models] == [
        ("blocked", "unknown", None), ("warned", "unknown", None), ("free", "unknown", None)]
    assert [(c.address, c.severity) for c in checks] == [
        ("model.blocked", "error"), ("model.warned", "warning"), ("model.free", "warning")]
    assert "Budget hard (on_exceed: block) counts it" in checks[0].message
    assert all("has no provider 'my-vllm'" in c.message and "declare its price" in c.message for c in checks)
    assert all("Its spend is not metered" in c.message for c in checks[1:])
