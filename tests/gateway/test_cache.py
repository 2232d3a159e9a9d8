"""The response cache through a real gateway: a deterministic request asked twice is answered the second time from
the cache (marked, metered at $0, whole or streamed whichever way it was stored), never across tenants, never for
a request that is not deterministic, as the client's Cache-Control says, never after what the route serves changed,
and not again once a user rated the cached answer down. What is replayed is what the client was first sent."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.test_app import EXPENSIVE, audited, chat, gateway_spec, guard, route, sse_events, streamed_text
from gateway.upstream import RecordingUpstream, running_gateway
from llmctl.config.schema import Prompt
from llmctl.gateway.auth import hash_key
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import BudgetSpec, CacheSpec, GatewaySpec, KeySpec

pytestmark = pytest.mark.timeout(120)  # a hang guard only

KEYS = [KeySpec(id="support-app", sha256=hash_key("sk-a"), team="support"),
        KeySpec(id="support-batch", sha256=hash_key("sk-b"), team="support"),
        KeySpec(id="analytics", sha256=hash_key("sk-c"), team="data")]
DETERMINISTIC = chat(temperature=0)
MONTHLY = BudgetSpec(name="monthly", limit_usd=1000, period="month", on_exceed="warn")


def _spec(tmp_path: Path, upstream: RecordingUpstream, **fields: Any) -> GatewaySpec:
    return gateway_spec(tmp_path, route("assistant", [upstream.base_url], price=EXPENSIVE, budgets=["monthly"],
                                        **fields.pop("route", {})),
                        keys=KEYS, budgets={"monthly": MONTHLY},
                        cache=CacheSpec(path=str(tmp_path / "cache.sqlite"), ttl_s=3600, max_entries=100), **fields)


def _ask(http: httpx.Client, url: str, key: str = "sk-a", body: dict[str, Any] = DETERMINISTIC,
         **headers: str) -> httpx.Response:
    return http.post(f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}", **headers})


def _cache_counts(url: str) -> dict[str, float]:
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return {s.labels["cache"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "llmctl_gateway_cache_requests_total"}


def test_the_same_deterministic_request_is_answered_from_the_cache_at_no_cost(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        first, second = _ask(http, url), _ask(http, url)
        audited(tmp_path, 2)
        counts = _cache_counts(url)
    assert len(upstream.bodies) == 1
    assert (first.headers["x-llmctl-cache"], second.headers["x-llmctl-cache"]) == ("miss", "hit")
    assert second.json()["choices"] == first.json()["choices"] and second.json()["id"] == second.headers["x-request-id"]
    assert counts == {"miss": 1, "hit": 1}
    ledger = Ledger(tmp_path / "ledger.sqlite")
    usage = ledger.usage(budgets=[MONTHLY])
    ledger.close()
    assert usage["budgets"]["monthly"]["requests"] == 2 and usage["budgets"]["monthly"]["spent_usd"] == 18.0
    assert [line["cache"] for line in audited(tmp_path, 2)] == ["miss", "hit"]


def test_a_whole_answer_is_replayed_as_a_stream_and_a_streamed_one_as_whole(tmp_path: Path) -> None:
    with RecordingUpstream(reply="cached words here") as upstream, \
            running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        _ask(http, url)
        with http.stream("POST", f"{url}/chat/completions", headers={"authorization": "Bearer sk-a"},
                         json={**DETERMINISTIC, "stream": True, "stream_options": {"include_usage": True}}) as hit:
            events = sse_events(hit)
            streamed_hit = hit.headers["x-llmctl-cache"]
        other = {**DETERMINISTIC, "messages": [{"role": "user", "content": "Other"}]}
        with http.stream("POST", f"{url}/chat/completions", headers={"authorization": "Bearer sk-a"},
                         json={**other, "stream": True}) as miss:
            streamed_text(sse_events(miss))
        # A stream's answer is stored once the stream has ended on the gateway's side (after the upstream's body),
        # which the client, having its [DONE], does not wait for.
        audited(tmp_path, 3)
        whole_hit = _ask(http, url, body=other)
    assert streamed_hit == "hit" and streamed_text(events).strip() == "cached words here"
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 7
    assert whole_hit.headers["x-llmctl-cache"] == "hit"
    assert whole_hit.json()["choices"][0]["message"]["content"].strip() == "cached words here"
    assert len(upstream.bodies) == 2


def test_tenants_never_share_an_answer_but_keys_of_one_team_do(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        results = [_ask(http, url, key).headers["x-llmctl-cache"] for key in ("sk-a", "sk-b", "sk-c", "sk-c")]
    assert results == ["miss", "hit", "miss", "hit"]


@pytest.mark.parametrize("body", [chat(), chat(temperature=0.7), chat(temperature=0, n=2),
                                  chat(temperature=0, stream=True, stream_options={"continuous_usage_stats": True})])
def test_a_request_that_may_answer_otherwise_bypasses_the_cache(tmp_path: Path, body: dict[str, Any]) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        results = [_ask(http, url, body=body).headers["x-llmctl-cache"] for _ in range(2)]
    assert results == ["bypass", "bypass"] and len(upstream.bodies) == 2


def test_a_seed_makes_a_request_cacheable(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        results = [_ask(http, url, body=chat(seed=7, temperature=0.9)).headers["x-llmctl-cache"] for _ in range(2)]
    assert results == ["miss", "hit"]


def test_cache_control_no_cache_skips_the_lookup_and_no_store_the_write(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        not_stored = _ask(http, url, **{"cache-control": "no-store"})
        still_miss = _ask(http, url)
        refreshed = _ask(http, url, **{"cache-control": "no-cache"})
        hit = _ask(http, url)
    assert [r.headers["x-llmctl-cache"] for r in (not_stored, still_miss, refreshed, hit)] == [
        "miss", "miss", "miss", "hit"]
    assert len(upstream.bodies) == 3


def test_a_change_of_what_the_route_serves_drops_its_answers(tmp_path: Path) -> None:
    prompt = Prompt(name="answer", version=1, template="Q: {{ q }}", variables=["q"])
    with RecordingUpstream() as upstream, httpx.Client() as http:
        with running_gateway(_spec(tmp_path, upstream, route={"prompt": prompt})) as url:
            assert _ask(http, url).headers["x-llmctl-cache"] == "miss"
            assert _ask(http, url).headers["x-llmctl-cache"] == "hit"
        changed = prompt.model_copy(update={"version": 2, "template": "Question: {{ q }}"})
        with running_gateway(_spec(tmp_path, upstream, route={"prompt": changed})) as url:
            after = _ask(http, url).headers["x-llmctl-cache"]
        with running_gateway(_spec(tmp_path, upstream, route={"prompt": prompt})) as url:
            back = _ask(http, url).headers["x-llmctl-cache"]
    assert after == "miss"
    assert back == "miss"  # the old prompt's answers were dropped when the new one was served, not kept aside


def test_a_cached_answer_rated_down_is_not_replayed_again(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        _ask(http, url)
        hit = _ask(http, url)
        rated = http.post(f"{url}/feedback", headers={"authorization": "Bearer sk-a"},
                          json={"id": hit.headers["x-request-id"], "score": "down"})
        after = _ask(http, url)
    assert hit.headers["x-llmctl-cache"] == "hit" and rated.status_code == 200
    assert after.headers["x-llmctl-cache"] == "miss" and len(upstream.bodies) == 2


def test_what_is_replayed_is_what_the_output_guardrails_let_out(tmp_path: Path) -> None:
    redact = guard(output={"pii": "redact"})
    with RecordingUpstream(reply="write to jane@example.com today") as upstream, \
            running_gateway(_spec(tmp_path, upstream, route={"guardrails": [redact]})) as url, httpx.Client() as http:
        first, second = _ask(http, url), _ask(http, url)
    assert second.headers["x-llmctl-cache"] == "hit"
    for answer in (first, second):
        assert "jane@example.com" not in answer.text and "[REDACTED:EMAIL]" in answer.text
    assert "jane@example.com" not in (tmp_path / "cache.sqlite").read_bytes().decode("utf-8", "replace")


def test_an_answer_older_than_the_ttl_is_asked_again(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, httpx.Client() as http:
        spec = _spec(tmp_path, upstream)
        spec.cache = CacheSpec(path=str(tmp_path / "cache.sqlite"), ttl_s=1e-6, max_entries=100)
        with running_gateway(spec) as url:
            results = [_ask(http, url).headers["x-llmctl-cache"] for _ in range(2)]
    assert results == ["miss", "miss"]
