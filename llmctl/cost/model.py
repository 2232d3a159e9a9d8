"""Cost estimates as data: what plans embed and every cost output is rendered from."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from llmctl.cost.fit import Fit

# AWS bills a month as 730 hours; budgets of other periods scale from it.
HOURS = {"day": 24.0, "week": 168.0, "month": 730.0}
MONTH_HOURS = HOURS["month"]
DECLARED = "declared"  # the source of a price the config declares


class ApiPrice(BaseModel):
    """What a hosted (api://) model's tokens cost, and where the figures came from."""

    input_per_1m: float = Field(description="USD per 1M input tokens.")
    output_per_1m: float = Field(description="USD per 1M output tokens.")
    cached_input_per_1m: float | None = Field(None, description="USD per 1M cached input tokens, where known.")
    source: str = Field(description="'declared' (the model's `price`), or 'genai-prices X.Y.Z (provider/model)': "
                        "the library's version and the entry the model matched.")
    caveat: str | None = Field(None, description="Where the library lists other rates than the one used (above a "
                               "number of input tokens, at other times of day).")


class ModelCost(BaseModel):
    model: str
    kind: Literal["instance", "gpu-hour", "api", "local", "unknown"]
    target: str | None = None
    detail: str = Field(description="What is priced, e.g. 'g5.xlarge (1 × A10G, us-east-1, spot)'.")
    hourly_usd: float | None = Field(None, description="Per replica, at the price used (spot when spot).")
    on_demand_hourly_usd: float | None = None
    replicas_min: int = 1
    replicas_max: int = 1
    monthly_min_usd: float | None = None
    monthly_max_usd: float | None = None
    per_1m_output_tokens_usd: float | None = None
    traffic_known: bool = True
    fit: Fit | None = None
    price: ApiPrice | None = Field(None, description="api:// models: the token price used; None when unknown.")
    notes: list[str] = Field(default_factory=list)


class BudgetStatus(BaseModel):
    name: str
    limit_usd: float
    period: str
    on_exceed: str
    projected_min_usd: float
    projected_max_usd: float
    share: float = Field(description="projected_max_usd / limit_usd")
    exceeded: bool
    alerts_crossed: list[float]
    models: list[str]
    teams: list[str] = Field(default_factory=list, description="Teams whose keys' requests count against it, on "
                             "any model: enforced by the gateway request by request, not projected.")
    incomplete: list[str] = Field(default_factory=list, description="Models whose cost is unknown.")
    spent_usd: float | None = Field(None, description="Actual spend this period, as the deployed gateway metered it.")


class CallerSpend(BaseModel):
    """What one team or key has spent this month, as the deployed gateways metered it."""

    scope: Literal["team", "key"]
    name: str
    spent_usd: float
    requests: int
    input_tokens: int
    output_tokens: int
    unpriced_tokens: int = 0


class CostReport(BaseModel):
    catalog_version: str
    prices_as_of: str
    prices_source: str
    models: list[ModelCost]
    monthly_min_usd: float
    monthly_max_usd: float
    budgets: list[BudgetStatus]
    callers: list[CallerSpend] = Field(default_factory=list, description="Spend this month per team and per key, "
                                       "as metered (`llmctl cost` against a deployment).")

    def budget(self, name: str) -> BudgetStatus | None:
        return next((b for b in self.budgets if b.name == name), None)


class PlanCost(BaseModel):
    """Before (the applied config) and after (this plan), and the budget gate's verdict."""

    before_monthly_usd: float = Field(description="Lower bound (minimum replicas) of the applied config.")
    after_monthly_usd: float = Field(description="Lower bound (minimum replicas) after this plan.")
    after_monthly_max_usd: float
    after: CostReport
    blocked_by: list[str] = Field(default_factory=list, description="Budgets with on_exceed: block this plan exceeds.")
    allow_over_budget: bool = False
