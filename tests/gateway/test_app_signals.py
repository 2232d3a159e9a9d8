"""The series the monitoring rules and dashboards are generated against, end to end: a real gateway in front of the
recording doubles, scraped as Prometheus scrapes it. The gaps between streamed tokens, good and bad requests against a
model's SLO, the team of the key, replicas probed with no traffic, and the budgets' periods and spend."""
from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.test_app import EXPENSIVE, audited, chat, client, gateway_spec, guard, route
from gateway.upstream import RecordingUpstream, dead_url, eventually, running_gateway
from llmctl.gateway.auth import hash_key
from llmctl.gateway.metering import Ledger, period_end, period_start
from llmctl.gateway.spec import BudgetSpec, KeySpec, SloTargets

pytestmark = pytest.mark.timeout(120)  # a hang guard only

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def by(found: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of `name`, keyed by the values of the labels `keys`, in that order."""
    return {tuple(dict(labels)[key] for key in keys): number for (sample, labels), number in found.items()
            if sample == name}


def replicas_up(url: str) -> dict[tuple[str, ...], float]:
    found = scrape(url)
    # By their index in the route, never by URL (a label no rule could be written against).
    assert all({label for label, _ in labels} == {"model", "replica"} for sample, labels in found
               if sample == "llmctl_gateway_upstream_up")
    return by(found, "llmctl_gateway_upstream_up", "model", "replica")


# --- inter-token latency -------------------------------------------------------------------------------------------


def test_each_gap_between_streamed_tokens_is_observed(tmp_path: Path) -> None:
    deltas = ["one ", "two ", "three ", "four ", "five "]
    with RecordingUpstream(deltas=deltas, itl_s=0.05) as upstream, running_gateway(
            gateway_spec(tmp_path, route("assistant", [upstream.base_url]))) as url:
        list(client(url).chat.completions.create(**chat(stream=True)))
        client(url).chat.completions.create(**chat())  # a whole answer has no gaps
        audited(tmp_path, 2)
        found = scrape(url)
    # Five text chunks, four gaps (the role event before them and the usage event after carry no text).
    assert value(found, "llmctl_gateway_itl_seconds_count", model="assistant", version="stable") == 4
    assert value(found, "llmctl_gateway_itl_seconds_sum", model="assistant", version="stable") > 0.1  # the double's 50 ms pauses


# --- goodput -------------------------------------------------------------------------------------------------------


def test_requests_to_a_model_with_an_slo_are_counted_good_or_bad(tmp_path: Path) -> None:
    generous = SloTargets(ttft_s=30, latency_s=60, itl_s=30)
    keys = [KeySpec(id="app", sha256=hash_key("sk-app")),
            KeySpec(id="other", sha256=hash_key("sk-other"), models=["plain"]),
            KeySpec(id="limited", sha256=hash_key("sk-limited"), requests_per_minute=1)]
    with RecordingUpstream() as fine, RecordingUpstream(itl_s=0.05) as slow, \
            RecordingUpstream(status=500) as failing, RecordingUpstream(status=400) as refusing, \
            RecordingUpstream(reply="the top secret plan") as secretive, running_gateway(gateway_spec(
                tmp_path,
                route("assistant", [fine.base_url], slo=generous,
                      guardrails=[guard(input={"deny_patterns": ["(?i)forbidden"]})]),
                route("gappy", [slow.base_url], slo=SloTargets(itl_s=0.01)),
                route("late", [slow.base_url], slo=SloTargets(ttft_s=0.02)),
                route("failing", [failing.base_url], slo=generous),
                route("refusing", [refusing.base_url], slo=generous),
                route("guarded", [secretive.base_url], slo=generous,
                      guardrails=[guard(output={"deny_patterns": ["secret"]})]),
                route("plain", [fine.base_url]), keys=keys)) as url:

        def post(key: str = "sk-app", **fields: object) -> int:
            return httpx.post(f"{url}/chat/completions", json=chat(**fields),
                              headers={"authorization": f"Bearer {key}"}).status_code

        statuses = [
            post(), post(stream=True),  # good
            post(model="gappy", stream=True),  # bad: 50 ms between tokens, over its 10 ms
            post(model="gappy"),  # good: a whole answer has no gap between tokens
            post(model="late", stream=True),  # bad: the first token after 50 ms, over its 20 ms
            post(model="failing"),  # bad: the upstream failed (502)
            # not counted: what the client caused
            post(model="refusing"),  # the upstream refused it (400)
            post(messages=[{"role": "user", "content": "forbidden"}]),  # blocked by an input guardrail
            post(model="guarded", stream=True),  # blocked mid-stream by an output guardrail (the stream said 200)
            post("sk-other"),  # a key not allowed the model
            post("sk-limited"), post("sk-limited"),  # good, then over its rate limit
            post(model="plain"),  # no SLO: neither
        ]
        audited(tmp_path, len(statuses))
        found = scrape(url)
    assert statuses == [200, 200, 200, 200, 200, 502, 400, 400, 200, 403, 200, 429, 200]
    assert by(found, "llmctl_gateway_slo_requests_total", "model", "outcome") == {("assistant", "good"): 3, ("assistant", "bad"): 0, ("gappy", "good"): 1, ("gappy", "bad"): 1,
                        ("late", "good"): 0, ("late", "bad"): 1, ("failing", "good"): 0, ("failing", "bad"): 1,
                        ("refusing", "good"): 0, ("refusing", "bad"): 0, ("guarded", "good"): 0,
                        ("guarded", "bad"): 0}


# --- teams ---------------------------------------------------------------------------------------------------------


def test_requests_tokens_and_spend_are_labelled_with_the_keys_team(tmp_path: Path) -> None:
    keys = [KeySpec(id="search-app", sha256=hash_key("sk-search"), team="search"),
            KeySpec(id="batch", sha256=hash_key("sk-batch"))]
    with RecordingUpstream() as upstream, running_gateway(gateway_spec(
            tmp_path, route("assistant", [upstream.base_url], price=EXPENSIVE), keys=keys)) as url:
        client(url, "sk-search").chat.completions.create(**chat())
        client(url, "sk-batch").chat.completions.create(**chat())
        unauthenticated = httpx.post(f"{url}/chat/completions", json=chat())
        audited(tmp_path, 3)
        found = scrape(url)
    assert unauthenticated.status_code == 401
    assert by(found, "llmctl_gateway_requests_total", "key", "team", "status") == {
        ("search-app", "search", "200"): 1, ("batch", "none", "200"): 1, ("unauthenticated", "none", "401"): 1}
    assert value(found, "llmctl_gateway_tokens_total", model="assistant", version="stable", key="search-app", team="search",
                 direction="output") == 7
    assert value(found, "llmctl_gateway_spend_usd_total", model="assistant", version="stable", key="search-app", team="search") == 18
    assert value(found, "llmctl_gateway_spend_usd_total", model="assistant", version="stable", key="batch", team="none") == 18


# --- upstream health -----------------------------------------------------------------------------------------------


def test_replicas_are_probed_with_no_traffic(tmp_path: Path) -> None:
    with RecordingUpstream() as live, ExitStack() as second:
        dying = second.enter_context(RecordingUpstream())
        with running_gateway(gateway_spec(
                tmp_path, route("assistant", [live.base_url, dead_url()]), route("second", [dying.base_url]),
                route("hosted", [dead_url()], kind="api"), probe_interval_s=0.05)) as url:
            assert eventually(lambda: len(replicas_up(url)) == 3), scrape(url)
            # The hosted API is not probed.
            assert replicas_up(url) == {("assistant", "0"): 1, ("assistant", "1"): 0, ("second", "0"): 1}
            second.close()  # the replica stops; nothing is sent to the gateway meanwhile
            assert eventually(lambda: replicas_up(url)[("second", "0")] == 0)
    assert live.bodies == []  # probes only: no completion was ever requested


def test_a_refused_request_connection_marks_the_replica_down_before_any_probe(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(gateway_spec(
            tmp_path, route("assistant", [dead_url(), upstream.base_url]), probe_interval_s=3600)) as url:
        assert client(url).chat.completions.create(**chat()).choices  # the dead replica was tried first
        audited(tmp_path, 1)
        # The live replica has not been probed yet: no series rather than a guess.
        assert replicas_up(url) == {("assistant", "0"): 0}


# --- budgets -------------------------------------------------------------------------------------------------------


def test_every_budget_is_shown_from_the_start_and_follows_the_spend(tmp_path: Path) -> None:
    budgets = {"monthly": BudgetSpec(name="monthly", limit_usd=100, period="month", on_exceed="block"),
               "daily": BudgetSpec(name="daily", limit_usd=50, period="day", on_exceed="warn")}
    with RecordingUpstream() as upstream, running_gateway(gateway_spec(
            tmp_path, route("assistant", [upstream.base_url], price=EXPENSIVE, budgets=["monthly"]),
            budgets=budgets)) as url:
        before = scrape(url)
        client(url).chat.completions.create(**chat())  # 18 tokens at $1 each, against `monthly`
        audited(tmp_path, 1)
        after = scrape(url)
        # Spend another process wrote to the same ledger shows at a scrape, with no request to this gateway.
        other = Ledger(tmp_path / "ledger.sqlite")
        other.record(model="assistant", key_id="anonymous", budgets=["daily"], input_tokens=0, output_tokens=0,
                     usd=2.5)
        other.close()
        assert eventually(lambda: value(scrape(url), "llmctl_budget_spent_usd", budget="daily") == 2.5)
    now = datetime.now(timezone.utc)
    for name, budget in budgets.items():
        assert value(before, "llmctl_budget_spent_usd", budget=name) == 0
        assert value(before, "llmctl_budget_spend_usd_total", budget=name) == 0
        assert value(before, "llmctl_budget_limit_usd", budget=name) == budget.limit_usd
        end = period_end(budget.period, period_start(budget.period, now)).timestamp()
        assert value(before, "llmctl_budget_period_end_timestamp_seconds", budget=name) == end
    assert value(after, "llmctl_budget_spent_usd", budget="monthly") == 18
    assert value(after, "llmctl_budget_spend_usd_total", budget="monthly") == 18
    assert value(after, "llmctl_budget_spent_usd", budget="daily") == 0
