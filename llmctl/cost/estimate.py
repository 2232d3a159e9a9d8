"""What the declared models will cost, whether they fit their GPUs, and where each budget stands."""
from __future__ import annotations

from typing import TYPE_CHECKING

from llmctl.checks import Check
from llmctl.config.schema import AwsTarget, KubernetesTarget, LocalTarget, Model
from llmctl.cost.catalog import Catalog, CatalogError
from llmctl.cost.fit import Fit, check_fit, kv_cache_bytes, weights_bytes
from llmctl.cost.hosted import price_of
from llmctl.cost.model import HOURS, MONTH_HOURS, BudgetStatus, CostReport, ModelCost, PlanCost
from llmctl.cost.render import money
from llmctl.desired import Desired
from llmctl.lock import Lock

if TYPE_CHECKING:
    from llmctl.resolve import Resolved


def estimate(desired: Desired, catalog: Catalog, lock: Lock | None) -> tuple[CostReport, list[Check]]:
    """The cost report and the problems found on the way (unknown instance types, models that do not fit...)."""
    checks: list[Check] = []
    models = [_model_cost(model, desired, catalog, lock, checks) for model in desired.models.values()]
    report = CostReport(
        catalog_version=catalog.version, prices_as_of=catalog.as_of, prices_source=catalog.source, models=models,
        monthly_min_usd=round(sum(m.monthly_min_usd or 0 for m in models), 2),
        monthly_max_usd=round(sum(m.monthly_max_usd or 0 for m in models), 2),
        budgets=[_budget(budget_name, desired, models) for budget_name in desired.budgets],
    )
    return report, checks


def _model_cost(model: Model, desired: Desired, catalog: Catalog, lock: Lock | None, checks: list[Check]) -> ModelCost:
    address = f"model.{model.name}"
    try:
        cost = _priced(model, desired, catalog, lock, checks)
    except CatalogError as exc:
        checks.append(_unpriced_hosted(model, desired, exc) if model.parsed_source.hosted else
                      Check(severity="error", address=address, message=str(exc)))
        return ModelCost(model=model.name, kind="unknown", target=model.target, detail="no price", notes=[str(exc)])
    if cost.fit is not None and not cost.fit.fits:
        checks.append(Check(severity="error", address=address, message=f"does not fit: {cost.fit.message}"))
    if model.traffic is None and cost.kind == "api":
        cost.traffic_known = False
        cost.notes.append("unknown traffic: declare traffic to estimate hosted API spend")
    elif model.traffic is None:
        cost.traffic_known = False
        cost.notes.append("unknown traffic: no $/1M tokens")
    return cost


def _priced(model: Model, desired: Desired, catalog: Catalog, lock: Lock | None, checks: list[Check]) -> ModelCost:
    if model.parsed_source.hosted:
        price = price_of(model)
        monthly = None
        if model.traffic:
            per_request = (model.traffic.input_tokens * price.input_per_1m
                           + model.traffic.output_tokens * price.output_per_1m) / 1e6
            monthly = round(per_request * model.traffic.requests_per_day * MONTH_HOURS / 24, 2)
        return ModelCost(model=model.name, kind="api", detail=model.source, price=price, monthly_min_usd=monthly,
                         monthly_max_usd=monthly,
                         per_1m_output_tokens_usd=price.output_per_1m if model.traffic else None)

    target = desired.targets[model.target or ""]
    low, high = (model.replicas, model.replicas) if isinstance(model.replicas, int) else (
        model.replicas.min, model.replicas.max)
    gpu_count = model.gpu.count if model.gpu else 1
    fit_gpu: tuple[str, float, int] | None = None
    if isinstance(target, AwsTarget):
        if model.instance_type:
            offer = catalog.instance("aws", target.region, model.instance_type, target.spot)
        else:
            if model.gpu is None:
                raise CatalogError(f"model '{model.name}' on aws target '{model.target}' needs gpu or instance_type")
            offer = catalog.for_gpu("aws", target.region, model.gpu.type, gpu_count, target.spot)
        on_demand = catalog.instance("aws", target.region, offer.instance_type, False) if offer.spot else offer
        kind, hourly, detail = "instance", offer.price_per_hour, (
            f"{offer.instance_type} ({offer.gpu_count} × {offer.gpu_name}, {target.region}, "
            f"{'spot' if offer.spot else 'on-demand'})")
        on_demand_hourly = on_demand.price_per_hour
        if offer.gpu_name:
            fit_gpu = (offer.gpu_name, offer.gpu_memory_gib, offer.gpu_count)
            fit = _fit(model, lock, fit_gpu)
            if fit is not None and not fit.fits:
                fit = _fit(model, lock, fit_gpu, _bigger(catalog, target.region, fit.needs_gib, fit.utilisation))
    else:
        assert isinstance(target, (LocalTarget, KubernetesTarget))
        fit = None
        rate = target.gpu_hour_usd
        if isinstance(target, KubernetesTarget) and model.gpu is not None:
            info = catalog.gpu(model.gpu.type)
            fit_gpu = (info.name, info.memory_gib, gpu_count)
        if rate is None and isinstance(target, KubernetesTarget):
            return ModelCost(model=model.name, kind="unknown", target=model.target, replicas_min=low,
                             replicas_max=high, detail=f"{gpu_count} × {model.gpu.type if model.gpu else 'GPU'}",
                             fit=_fit(model, lock, fit_gpu),
                             notes=[f"no price: set gpu_hour_usd on target '{model.target}'"])
        fit = _fit(model, lock, fit_gpu)
        kind = "gpu-hour" if rate is not None else "local"
        hourly = (rate or 0.0) * gpu_count
        on_demand_hourly = hourly
        detail = f"{gpu_count} GPU × ${rate:g}/h" if rate is not None else "this machine"
    monthly_min, monthly_max = round(hourly * low * MONTH_HOURS, 2), round(hourly * high * MONTH_HOURS, 2)
    per_1m = None
    if model.traffic and model.traffic.requests_per_day and hourly:
        tokens_per_month = model.traffic.requests_per_day * MONTH_HOURS / 24 * model.traffic.output_tokens / 1e6
        per_1m = round(monthly_min / tokens_per_month, 4)
    return ModelCost(model=model.name, kind=kind, target=model.target, detail=detail, hourly_usd=hourly,  # type: ignore[arg-type]
                     on_demand_hourly_usd=on_demand_hourly, replicas_min=low, replicas_max=high,
                     monthly_min_usd=monthly_min, monthly_max_usd=monthly_max, per_1m_output_tokens_usd=per_1m,
                     fit=fit)


def _unpriced_hosted(model: Model, desired: Desired, reason: CatalogError) -> Check:
    """A hosted model neither the config nor genai-prices prices: an error only where a budget that blocks counts
    it (the gateway could not stop spend it cannot see); elsewhere its tokens are metered without spend."""
    blocking = [name for name in desired.budgets_of(model.name) if desired.budgets[name].on_exceed == "block"]
    declare = ("declare its price on the model, e.g. `price: {input_per_1m: 0.2, output_per_1m: 0.6}` (USD per 1M "
               "tokens)")
    if blocking:
        return Check(severity="error", address=f"model.{model.name}", message=(
            f"no price for {model.source}: {reason}. Budget {', '.join(blocking)} (on_exceed: block) counts it, so "
            f"its spend must be known: {declare}"))
    return Check(severity="warning", address=f"model.{model.name}", message=(
        f"no price for {model.source}: {reason}. Its spend is not metered (the gateway counts its tokens only): "
        f"{declare}"))


def _bigger(catalog: Catalog, region: str, needs_gib: float, utilisation: float) -> str | None:
    """The cheapest on-demand instance in the region whose GPUs hold what the model needs."""
    roomy = [o for o in catalog.offers if o.provider == "aws" and o.region == region and not o.spot and o.gpu_name
             and o.gpu_memory_gib * o.gpu_count * utilisation >= needs_gib]
    return min(roomy, key=lambda o: o.price_per_hour).instance_type if roomy else None


def _fit(model: Model, lock: Lock | None, gpu: tuple[str, float, int] | None, bigger: str | None = None) -> Fit | None:
    """Only models with a known size on a known GPU; llama.cpp on CPU has no GPU to fit."""
    entry = lock.models.get(model.name) if lock else None
    if gpu is None or entry is None:
        return None
    weights = weights_bytes(model, entry.parameters, entry.bytes_per_param, entry.weights_bytes)
    if weights is None:
        return None
    name, memory, count = gpu
    return check_fit(model, weights, kv_cache_bytes(model, entry.architecture), name, memory, count, bigger)


def _budget(name: str, desired: Desired, models: list[ModelCost]) -> BudgetStatus:
    budget = desired.budgets[name]
    members = [m for m in models if name in desired.budgets_of(m.model)]
    scale = HOURS[budget.period] / MONTH_HOURS
    low = round(sum(m.monthly_min_usd or 0 for m in members) * scale, 2)
    high = round(sum(m.monthly_max_usd or 0 for m in members) * scale, 2)
    return BudgetStatus(
        name=name, limit_usd=budget.limit_usd, period=budget.period, on_exceed=budget.on_exceed,
        projected_min_usd=low, projected_max_usd=high, share=round(high / budget.limit_usd, 4),
        exceeded=high > budget.limit_usd,
        alerts_crossed=[a for a in budget.alert_at if high >= a * budget.limit_usd],
        models=[m.model for m in members],
        teams=sorted(team.name for team in (desired.gateway.teams if desired.gateway else []) if team.budget == name),
        incomplete=[m.model for m in members if m.monthly_max_usd is None or not (m.traffic_known or m.kind != "api")],
    )


def plan_cost(resolved: Resolved, applied: Desired | None, applied_lock: Lock | None
              ) -> tuple[PlanCost, list[Check]]:
    """The cost before (what is applied, with the lock it was applied with) and after (the plan), and the budget
    gate's checks."""
    after, checks = resolved.cost
    checks = [*resolved.notes, *checks]
    before = estimate(applied, resolved.catalog, applied_lock)[0] if applied else None
    blocked = [b.name for b in after.budgets if b.exceeded and b.on_exceed == "block"]
    for budget in after.budgets:
        previous = before.budget(budget.name) if before else None
        if budget.exceeded:
            pushers = sorted((m for m in after.models if m.model in budget.models),
                             key=lambda m: -(m.monthly_max_usd or 0))
            over = ", ".join(f"model.{m.model} ({money(m.monthly_max_usd)}/mo)" for m in pushers if m.monthly_max_usd)
            action = ("the plan is blocked: lower replicas or instance size, or pass --allow-over-budget"
                      if budget.on_exceed == "block" and not resolved.allow_over_budget else
                      "allowed by --allow-over-budget" if budget.on_exceed == "block" else "on_exceed: warn")
            grew = f", was {money(previous.projected_max_usd)}" if previous else ""
            checks.append(Check(severity="warning", address=f"budget.{budget.name}", message=(
                f"projected {money(budget.projected_max_usd)}/{budget.period}{grew} exceeds the limit "
                f"{money(budget.limit_usd)} ({budget.share:.0%}), pushed over by {over}: {action}")))
        if budget.incomplete:
            checks.append(Check(severity="warning", address=f"budget.{budget.name}", message=(
                f"cannot be complete: no cost known for {', '.join(budget.incomplete)} (declare traffic, and a "
                f"price where a model has none)")))
    return PlanCost(
        before_monthly_usd=before.monthly_min_usd if before else 0.0, after_monthly_usd=after.monthly_min_usd,
        after_monthly_max_usd=after.monthly_max_usd, after=after, blocked_by=blocked,
        allow_over_budget=resolved.allow_over_budget,
    ), checks
