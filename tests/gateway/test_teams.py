"""Teams through a real gateway: a key's team's budget counts every request the team's keys make, whatever the
model, and once it is spent (on_exceed: block) it refuses that team's keys only; spend, tokens and requests are
kept per team and per key in the ledger that status and cost read."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.test_app import EXPENSIVE, audited, chat, gateway_spec, route
from gateway.upstream import RecordingUpstream, running_gateway
from llmctl.gateway.auth import hash_key
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import BudgetSpec, KeySpec

pytestmark = pytest.mark.timeout(120)  # a hang guard only

KEYS = [KeySpec(id="support-app", sha256=hash_key("sk-support"), team="support", budgets=["support-team"]),
        KeySpec(id="support-batch", sha256=hash_key("sk-batch"), team="support", budgets=["support-team"]),
        KeySpec(id="analytics", sha256=hash_key("sk-data"), team="data")]
TEAM_BUDGET = BudgetSpec(name="support-team", limit_usd=5, period="month", on_exceed="block")


def _ask(http: httpx.Client, url: str, key: str, model: str = "assistant") -> httpx.Response:
    return http.post(f"{url}/chat/completions", json={**chat(), "model": model},
                     headers={"authorization": f"Bearer {key}"})


def test_a_spent_team_budget_refuses_that_teams_keys_only_on_every_model(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, httpx.Client() as http:
        spec = gateway_spec(tmp_path, route("assistant", [upstream.base_url], price=EXPENSIVE),
                            route("helper", [upstream.base_url], price=EXPENSIVE),
                            keys=KEYS, budgets={"support-team": TEAM_BUDGET})
        with running_gateway(spec) as url:
            first = _ask(http, url, "sk-support")  # $18 against the team's $5: over once metered
            audited(tmp_path, 1)
            refused = [_ask(http, url, "sk-support"), _ask(http, url, "sk-batch"), _ask(http, url, "sk-batch", "helper")]
            other_team = _ask(http, url, "sk-data")
    assert first.status_code == 200 and other_team.status_code == 200
    for response in refused:
        assert response.status_code == 429 and response.json()["error"]["type"] == "budget_exceeded"
        assert "budget 'support-team'" in response.json()["error"]["message"]
    ledger = Ledger(Path(spec.db_path))
    usage = ledger.usage(budgets=[TEAM_BUDGET])
    ledger.close()
    assert usage["budgets"]["support-team"]["spent_usd"] == 18.0  # the data team's request is not the team's
    assert {name: (t["spent_usd"], t["requests"]) for name, t in usage["teams"].items()} == {
        "support": (18.0, 1), "data": (18.0, 1)}
    assert {name: k["requests"] for name, k in usage["keys"].items()} == {"support-app": 1, "analytics": 1}
