"""What `llmctl cost` puts beside the estimate from the deployed gateways' ledgers: each budget's spend so far, and
each team's and key's spend, requests and tokens this month, added up over every gateway in state."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.cost.model import CostReport
from llmctl.cost.render import render_cost
from llmctl.gateway.metering import Ledger
from llmctl.errors import LlmctlError
from llmctl.gateway.spec import GatewaySpec, StoreSpec
from llmctl.gateway.store import PostgresStore
from llmctl.gateway.usage import ledger_usage, with_actual_spend
from llmctl.resource import Resource
from llmctl.state import State
from postgres_server import PostgresServer


def _gateway(tmp_path: Path, name: str, spends: list[tuple[str, str | None, float | None]]) -> Resource:
    """A gateway's spec file and ledger, with one request metered per (key, team, usd)."""
    directory = tmp_path / name
    directory.mkdir()
    spec = GatewaySpec(routes={}, db_path=str(directory / "ledger.sqlite"), audit_path=str(directory / "a.jsonl"))
    spec.write(directory / "spec.json")
    ledger = Ledger(Path(spec.db_path))
    for key, team, usd in spends:
        ledger.record(model="assistant", key_id=key, budgets=[], input_tokens=10, output_tokens=5, usd=usd, team=team)
    ledger.close()
    return Resource(address=f"local_gateway.{name}", type="local_gateway", owner=f"gateway.{name}", provider="local",
                    target="laptop", spec={}, attrs={"spec_path": str(directory / "spec.json")})


def test_cost_shows_each_team_and_key_over_every_gateway(tmp_path: Path) -> None:
    state = State(project="p", environment="dev", lineage="l", serial=1, resources=[
        _gateway(tmp_path, "one", [("support-app", "support", 2.0), ("analytics", "data", None)]),
        _gateway(tmp_path, "two", [("support-batch", "support", 1.5)])])
    report = CostReport(catalog_version="c", prices_as_of="2026-01-01", prices_source="s", models=[],
                        monthly_min_usd=0, monthly_max_usd=0, budgets=[])
    found = with_actual_spend(report, state)
    teams = {c.name: (c.spent_usd, c.requests, c.unpriced_tokens) for c in found.callers if c.scope == "team"}
    assert teams == {"support": (3.5, 2, 0), "data": (0.0, 1, 15)}
    assert {c.name for c in found.callers if c.scope == "key"} == {"support-app", "support-batch", "analytics"}
    text = render_cost(found, "text")
    assert "team support: $3.50 spent this month, 2 requests, 20 input / 10 output tokens" in text
    assert "team data: $0.00 spent this month (15 tokens unpriced), 1 request" in text


def test_spend_is_read_from_the_shared_store_and_an_unreadable_one_is_said_not_zeroed(
        tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = GatewaySpec(routes={}, db_path=str(tmp_path / "unused.sqlite"), audit_path=str(tmp_path / "a.jsonl"),
                       store=StoreSpec(dsn_env="LLMCTL_TEST_USAGE_DSN"))
    spec.write(tmp_path / "spec.json")
    ledger = Ledger(PostgresStore(postgres.dsn))
    ledger.record(model="assistant", key_id="app", budgets=[], input_tokens=10, output_tokens=5, usd=0.25)
    ledger.close()
    monkeypatch.setenv("LLMCTL_TEST_USAGE_DSN", postgres.dsn)
    usage = ledger_usage(tmp_path / "spec.json")
    assert usage is not None and usage["keys"]["app"]["spent_usd"] == 0.25
    assert not (tmp_path / "unused.sqlite").exists()
    postgres.stop()
    with pytest.raises(LlmctlError, match="spend of the gateway serving .* cannot be read: the store "
                                          "postgresql://llmctl@127.0.0.1"):
        ledger_usage(tmp_path / "spec.json")
