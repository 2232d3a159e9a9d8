"""What a deployed gateway has metered, read from its ledger by `llmctl status` and `llmctl cost`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.cost.model import CallerSpend, CostReport
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import GatewaySpec
from llmctl.state import State


def ledger_usage(spec_path: Path) -> dict[str, Any] | None:
    """Per budget over its current period and per model this month; None before the gateway metered anything."""
    try:
        spec = GatewaySpec.read(spec_path)
    except (OSError, ValueError):
        return None
    if not Path(spec.db_path).exists():
        return None
    ledger = Ledger(Path(spec.db_path))
    try:
        return ledger.usage(budgets=spec.budgets.values())
    finally:
        ledger.close()


def with_actual_spend(report: CostReport, state: State) -> CostReport:
    """The estimate with each budget's spend so far beside it, and each team's and key's spend this month (what
    the state's gateways metered)."""
    usages = [usage for resource in state.resources if "spec_path" in resource.attrs
              if (usage := ledger_usage(Path(resource.attrs["spec_path"]))) is not None]
    spent: dict[str, float] = {}
    callers: dict[tuple[str, str], dict[str, float]] = {}
    for usage in usages:  # several gateways serve disjoint traffic: their figures add up
        for name, budget in usage.get("budgets", {}).items():
            spent[name] = spent.get(name, 0.0) + budget["spent_usd"]
        for scope in ("team", "key"):
            for name, used in usage.get(f"{scope}s", {}).items():
                total = callers.setdefault((scope, name), {})
                for field in ("spent_usd", "requests", "input_tokens", "output_tokens", "unpriced_tokens"):
                    total[field] = total.get(field, 0) + used[field]
    budgets = [budget.model_copy(update={"spent_usd": spent.get(budget.name)}) for budget in report.budgets]
    return report.model_copy(update={"budgets": budgets, "callers": [
        CallerSpend(scope=scope, name=name, **total)  # type: ignore[arg-type]
        for (scope, name), total in sorted(callers.items())]})
