"""The cost breakdown as text, JSON or Markdown; plans embed the text lines. Nothing is recomputed here."""
from __future__ import annotations

from typing import Literal

from llmctl.cost.model import DECLARED, ApiPrice, BudgetStatus, CallerSpend, CostReport, ModelCost
from llmctl.textfmt import md_cell, plural

Format = Literal["text", "json", "markdown"]


def money(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return "unknown"
    return money(low) if high is None or high == low else f"{money(low)}-{money(high)}"


def _monthly(cost: ModelCost) -> str:
    if cost.monthly_min_usd is None:
        return "unknown traffic" if not cost.traffic_known else "unknown"
    return f"{_range(cost.monthly_min_usd, cost.monthly_max_usd)}/mo"


def _hourly(cost: ModelCost) -> str:
    if cost.hourly_usd is None:
        return ""
    replicas = (f"{cost.replicas_min}" if cost.replicas_min == cost.replicas_max
                else f"{cost.replicas_min}-{cost.replicas_max}")
    spot = (f" (on-demand {money(cost.on_demand_hourly_usd)}/h)"
            if cost.on_demand_hourly_usd and cost.on_demand_hourly_usd != cost.hourly_usd else "")
    return f"{money(cost.hourly_usd)}/h{spot} × {replicas}"


def price_text(price: ApiPrice) -> str:
    """'$0.15 in / $0.6 out per 1M tokens, from genai-prices 0.2.3 (openai/gpt-4o-mini)', or '..., declared'."""
    cached = f" / ${price.cached_input_per_1m:g} cached in" if price.cached_input_per_1m is not None else ""
    origin = price.source if price.source == DECLARED else f"from {price.source}"
    caveat = f"; {price.caveat}" if price.caveat else ""
    return f"${price.input_per_1m:g} in{cached} / ${price.output_per_1m:g} out per 1M tokens, {origin}{caveat}"


def budget_line(budget: BudgetStatus) -> str:
    state = "EXCEEDED" if budget.exceeded else f"{budget.share:.0%}"
    line = (f"budget {budget.name}: {_range(budget.projected_min_usd, budget.projected_max_usd)} of "
            f"{money(budget.limit_usd)}/{budget.period} ({state}, on_exceed: {budget.on_exceed})")
    if budget.alerts_crossed:
        line += ", alerts crossed: " + ", ".join(f"{a:.0%}" for a in budget.alerts_crossed)
    if budget.spent_usd is not None:
        line += f"; spent so far this {budget.period}: {money(budget.spent_usd)} (metered by the gateway)"
    if budget.incomplete:
        line += f"; cannot be complete: no cost for {', '.join(budget.incomplete)}"
    if budget.teams:
        # A team's requests are not part of the declared traffic: the gateway holds them to the limit instead.
        line += (f"; also counts team {', '.join(budget.teams)}'s requests, enforced per request by the gateway and "
                 "not in this projection")
    return line


def cost_lines(report: CostReport, with_source: bool = False) -> list[str]:
    """An Infracost-like breakdown: one row per model, its fit, then each budget."""
    lines = [f"Cost estimate (prices as of {report.prices_as_of}, catalog {report.catalog_version}):"]
    if with_source:
        lines.append(f"  prices: {report.prices_source}")
    width = max((len(f"model.{m.model}") for m in report.models), default=0)
    for cost in report.models:
        parts = [cost.detail, _hourly(cost), _monthly(cost)]
        if cost.per_1m_output_tokens_usd:
            parts.append(f"{money(cost.per_1m_output_tokens_usd)}/1M output tokens")
        lines.append(f"  {f'model.{cost.model}':<{width}}  " + "   ".join(part for part in parts if part))
        if cost.price is not None:
            lines.append(f"  {'':<{width}}  price: {price_text(cost.price)}")
        if cost.fit is not None:
            lines.append(f"  {'':<{width}}  fit: {cost.fit.message}")
        lines += [f"  {'':<{width}}  note: {note}" for note in cost.notes]
    lines.append(f"  {'total':<{width}}  {_range(report.monthly_min_usd, report.monthly_max_usd)}/mo")
    lines += [f"  {budget_line(budget)}" for budget in report.budgets]
    lines += [f"  {caller_line(caller)}" for caller in report.callers]
    return lines


def caller_line(caller: CallerSpend) -> str:
    unpriced = f" ({caller.unpriced_tokens} tokens unpriced)" if caller.unpriced_tokens else ""
    return (f"{caller.scope} {caller.name}: {money(caller.spent_usd)} spent this month{unpriced}, "
            f"{plural(caller.requests, 'request')}, {caller.input_tokens} input / {caller.output_tokens} output "
            "tokens (metered by the gateway)")


def render_cost(report: CostReport, fmt: Format) -> str:
    if fmt == "json":
        return report.model_dump_json(indent=2)
    if fmt == "text":
        return "\n".join(cost_lines(report, with_source=True))
    rows = ["| model | priced as | per hour | per month | $/1M output tokens | fit |", "|---|---|---|---|---|---|"]
    for cost in report.models:
        fit = "" if cost.fit is None else (f"✅ {cost.fit.share:.0%}" if cost.fit.fits else "❌ does not fit")
        per_1m = money(cost.per_1m_output_tokens_usd) if cost.per_1m_output_tokens_usd else ""
        priced_as = f"{cost.detail} at {price_text(cost.price)}" if cost.price is not None else cost.detail
        rows.append("| " + " | ".join(md_cell(cell) for cell in (
            f"`{cost.model}`", priced_as, _hourly(cost), _monthly(cost), per_1m, fit)) + " |")
    budgets = [f"- {md_cell(budget_line(budget))}" for budget in report.budgets]
    budgets += [f"- {md_cell(caller_line(caller))}" for caller in report.callers]
    return "\n".join([f"**Cost:** {_range(report.monthly_min_usd, report.monthly_max_usd)}/mo "
                      f"(prices as of {report.prices_as_of})", "", *rows, "", *budgets])
