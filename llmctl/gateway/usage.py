"""What a deployed gateway has metered, read from its ledger by `llmctl status` and `llmctl cost`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.cost.model import CallerSpend, CostReport
from llmctl.errors import LlmctlError
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import GatewaySpec
from llmctl.gateway.store import SchemaTooNew, StoreError
from llmctl.gateway.stores import open_store
from llmctl.state import State


def ledger_usage(spec_path: Path) -> dict[str, Any] | None:
    """Per budget over its current period and per model this month, from the gateway's store whichever it is; None
    before the gateway metered anything. A shared store that cannot be read is an LlmctlError saying why: spend it
    cannot read is not $0."""
    try:
        spec = GatewaySpec.read(spec_path)
    except (OSError, ValueError):
        return None
    if spec.store is None and not Path(spec.db_path).exists():
        return None
    try:
        ledger = Ledger(open_store(spec))
        try:
            return ledger.usage(budgets=spec.budgets.values())
        finally:
            ledger.close()
    except (StoreError, SchemaTooNew, ValueError) as exc:
        raise LlmctlError(f"the spend of the gateway serving {spec_path} cannot be read: {exc}") from exc


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
