"""A rollout's two versions behind one model name: callers split by weight and kept on their version, the new one
only ever gaining callers as its weight grows, a version that is down never chosen, and every signal labelled with
the version that served it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.test_app import gateway_spec, route
from gateway.upstream import RecordingUpstream, dead_url, running_gateway
from llmctl.config.schema import Prompt
from llmctl.gateway.auth import hash_key
from llmctl.gateway.spec import VERIFY_KEY_ID, CanarySpec, KeySpec

pytestmark = pytest.mark.timeout(300)  # a hang guard only

USERS = [f"user-{index}" for index in range(100)]


def _served(url: str, users: list[str], rounds: int = 1) -> dict[str, set[str]]:
    """Which upstream model each user's requests reached."""
    served: dict[str, set[str]] = {user: set() for user in users}
    with httpx.Client() as http:
        for _ in range(rounds):
            for user in users:
                response = http.post(f"{url}/chat/completions", json={
                    "model": "assistant", "user": user, "messages": [{"role": "user", "content": "Hi"}]})
                assert response.status_code == 200, response.text
                served[user].add(response.json()["model"])
    return served


def _spec(tmp_path: Path, stable: RecordingUpstream, canary_url: str, weight: int):  # type: ignore[no-untyped-def]
    return gateway_spec(tmp_path, route("assistant", [stable.base_url], upstream_model="v1",
                                        canary=CanarySpec(upstreams=[canary_url], upstream_model="v2", weight=weight)))


def test_callers_split_by_weight_keep_their_version_and_the_metrics_tell_the_versions_apart(tmp_path: Path) -> None:
    with RecordingUpstream() as stable, RecordingUpstream() as canary, \
            running_gateway(_spec(tmp_path, stable, canary.base_url, 30)) as url:
        served = _served(url, USERS, rounds=3)
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert all(len(models) == 1 for models in served.values())  # each user on one version, three times over
    split = Counter(next(iter(models)) for models in served.values())
    assert 15 <= split["v2"] <= 45 and split["v1"] + split["v2"] == 100  # a hash split of 100 callers at 30%
    assert len(canary.bodies) == 3 * split["v2"] and {b["model"] for b in canary.bodies} == {"v2"}
    requests = Counter()
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "llmctl_gateway_requests_total":
                requests[sample.labels["version"]] += sample.value
    assert requests == {"stable": 3 * split["v1"], "canary": 3 * split["v2"]}


def test_raising_the_weight_only_moves_callers_to_the_new_version(tmp_path: Path) -> None:
    with RecordingUpstream() as stable, RecordingUpstream() as canary:
        on_canary = {}
        for weight in (10, 50, 100):
            with running_gateway(_spec(tmp_path, stable, canary.base_url, weight)) as url:
                on_canary[weight] = {user for user, models in _served(url, USERS).items() if models == {"v2"}}
    assert on_canary[10] <= on_canary[50] <= on_canary[100] == set(USERS)
    assert len(on_canary[10]) < len(on_canary[50]) < 100


def test_a_version_that_is_down_is_not_chosen(tmp_path: Path) -> None:
    with RecordingUpstream() as stable, running_gateway(_spec(tmp_path, stable, dead_url(), 100)) as url:
        health = httpx.get(url.removesuffix("/v1") + "/health").json()  # probes now: the canary refuses
        served = _served(url, USERS[:20])
    assert all(models == {"v1"} for models in served.values())
    [stable_entry, canary_entry] = health["routes"]["assistant"]["upstreams"]
    assert (stable_entry["version"], stable_entry["healthy"]) == ("stable", True)
    assert (canary_entry["version"], canary_entry["healthy"]) == ("canary", False)


def test_only_llmctls_own_key_can_ask_for_a_version_and_every_answer_names_the_one_that_served(tmp_path: Path) -> None:
    keys = [KeySpec(id="app", sha256=hash_key("sk-app")), KeySpec(id=VERIFY_KEY_ID, sha256=hash_key("sk-llmctl"))]
    with RecordingUpstream() as stable, RecordingUpstream() as canary, \
            running_gateway(_spec(tmp_path, stable, canary.base_url, 0).model_copy(update={"keys": keys})) as url, \
            httpx.Client() as http:
        def ask(key: str, version: str) -> httpx.Response:
            return http.post(f"{url}/chat/completions", headers={"authorization": f"Bearer {key}",
                                                                  "x-llmctl-version": version},
                             json={"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]})

        llmctl, app = ask("sk-llmctl", "canary"), ask("sk-app", "canary")
        metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert (llmctl.json()["model"], llmctl.headers["x-llmctl-version"]) == ("v2", "canary")
    assert (app.json()["model"], app.headers["x-llmctl-version"]) == ("v1", "stable")  # at weight 0, whatever it asks
    spend = {(s.labels["key"], s.labels["version"]) for f in text_string_to_metric_families(metrics)
             for s in f.samples if s.name == "llmctl_gateway_tokens_total"}
    assert {("llmctl-verify", "canary"), ("app", "stable")} <= spend


def test_without_a_rollout_answers_carry_no_version_header(tmp_path: Path) -> None:
    with RecordingUpstream() as stable, \
            running_gateway(gateway_spec(tmp_path, route("assistant", [stable.base_url]))) as url:
        response = httpx.post(f"{url}/chat/completions", headers={"x-llmctl-version": "canary"},
                              json={"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200 and "x-llmctl-version" not in response.headers


def test_a_prompt_rollout_serves_the_new_prompt_to_the_canary_share_from_the_same_replicas(tmp_path: Path) -> None:
    old = Prompt(name="answer", version=1, template="Old: {{ q }}", variables=["q"])
    new = Prompt(name="answer", version=2, template="New: {{ q }}", variables=["q"])
    with RecordingUpstream() as upstream:
        rendered = {}
        for weight in (0, 100):
            spec = gateway_spec(tmp_path, route("assistant", [upstream.base_url], prompt=old, canary=CanarySpec(
                upstreams=[upstream.base_url], upstream_model="upstream-model", weight=weight, prompt=new)))
            with running_gateway(spec) as url:
                answer = httpx.post(f"{url}/chat/completions", json={
                    "model": "assistant", "user": "someone", "prompt_variables": {"q": "why?"}, "messages": []})
            assert answer.status_code == 200, answer.text
            rendered[weight] = (upstream.bodies[-1]["messages"][-1]["content"],
                                answer.headers["x-llmctl-prompt-version"], answer.headers["x-llmctl-version"])
    assert rendered == {0: ("Old: why?", "1", "stable"), 100: ("New: why?", "2", "canary")}
