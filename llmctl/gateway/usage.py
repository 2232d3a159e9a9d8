"""What a deployed gateway has metered, read from its ledger by `llmctl status` and `llmctl cost`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.cost.model import CostReport
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
    """The estimate with each budget's spend so far beside it (what the state's gateways metered)."""
    spent = _spent_by_budget(state)
    budgets = [budget.model_copy(update={"spent_usd": spent.get(budget.name)}) for budget in report.budgets]
    return report.model_copy(update={"budgets": budgets})


def _spent_by_budget(state: State) -> dict[str, float]:
    """USD each budget has spent this period, over every gateway in the state."""
    spent: dict[str, float] = {}
    for resource in state.resources:
        usage = ledger_usage(Path(resource.attrs["spec_path"])) if "spec_path" in resource.attrs else None
        for name, budget in (usage or {}).get("budgets", {}).items():
            spent[name] = spent.get(name, 0.0) + budget["spent_usd"]
    return spent
