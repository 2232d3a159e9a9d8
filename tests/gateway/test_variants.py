"""A prompt A/B test through the gateway: each caller keeps one version, the split follows the weights, and the
assignment outlives the gateway process."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.test_app import gateway_spec, route
from gateway.upstream import RecordingUpstream, running_gateway
from llmctl.config.schema import Prompt
from llmctl.gateway.auth import hash_key
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import KeySpec

pytestmark = pytest.mark.timeout(300)  # a hang guard only

PROMPT = Prompt.model_validate({
    "name": "support", "version": 3, "template": "Q: {{ question }}", "variables": ["question"],
    "variants": [{"version": 4, "template": "Cite the help-center article. Q: {{ question }}", "weight": 20}]})
KEYS = [f"sk-team-{index:02d}" for index in range(50)]


def _spec(tmp_path: Path, upstream: RecordingUpstream):  # type: ignore[no-untyped-def]
    return gateway_spec(tmp_path, route("assistant", [upstream.base_url], prompt=PROMPT),
                        keys=[KeySpec(id=f"team-{index:02d}", sha256=hash_key(key)) for index, key in enumerate(KEYS)])


def _ask(http: httpx.Client, url: str, key: str, **extra: str) -> httpx.Response:
    response = http.post(f"{url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                         json={"model": "assistant", "messages": [], "prompt_variables": {"question": "Refunds?"},
                               **extra})
    assert response.status_code == 200, response.text
    return response


def test_1000_requests_from_50_keys_split_80_20_and_each_key_keeps_its_version(tmp_path: Path) -> None:
    served: dict[str, set[str]] = {key: set() for key in KEYS}
    with RecordingUpstream() as upstream, running_gateway(_spec(tmp_path, upstream)) as url, httpx.Client() as http:
        for _ in range(20):
            for key in KEYS:
                served[key].add(_ask(http, url, key).headers["x-llmctl-prompt-version"])
        metrics = http.get(url.removesuffix("/v1") + "/metrics").text
        templates = Counter(body["messages"][-1]["content"] for body in upstream.bodies)
    assert all(len(versions) == 1 for versions in served.values())  # sticky: one version per key, 20 times over
    split = Counter(version for versions in served.values() for version in versions)
    requests = {version: count * 20 for version, count in split.items()}
    assert abs(requests["3"] / 1000 - 0.8) <= 0.05 and abs(requests["4"] / 1000 - 0.2) <= 0.05, requests
    # What the upstream was sent is each version's template, as often as that version was served.
    assert templates == {"Q: Refunds?": requests["3"], "Cite the help-center article. Q: Refunds?": requests["4"]}
    counted = {sample.labels["prompt_version"]: sample.value for family in text_string_to_metric_families(metrics)
               if family.name == "llmctl_gateway_prompt_requests" for sample in family.samples
               if sample.name.endswith("_total")}
    assert counted == {"3": requests["3"], "4": requests["4"]}


def test_an_assignment_outlives_the_gateway_and_a_user_field_is_its_own_caller(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, httpx.Client() as http:
        with running_gateway(_spec(tmp_path, upstream)) as url:
            before = {key: _ask(http, url, key).headers["x-llmctl-prompt-version"] for key in KEYS[:10]}
            users = {user: _ask(http, url, KEYS[0], user=user).headers["x-llmctl-prompt-version"]
                     for user in ("ann@example.com", "bo", "cy", "di", "ed")}
        with running_gateway(_spec(tmp_path, upstream)) as url:
            assert {key: _ask(http, url, key).headers["x-llmctl-prompt-version"] for key in KEYS[:10]} == before
            assert {user: _ask(http, url, KEYS[0], user=user).headers["x-llmctl-prompt-version"]
                    for user in users} == users
    assert set(users.values()) == {"3", "4"}  # five users of one key: not all on the key's version
    # The ledger keeps digests of callers, never an email or a key name.
    ledger = Ledger(tmp_path / "ledger.sqlite")
    stored = ledger.store.query("SELECT caller FROM assignments")
    ledger.close()
    assert len(stored) == 15 and not any("@" in caller or "team" in caller for (caller,) in stored)


def test_balanced_assignment_keeps_a_small_group_within_one_caller_of_the_weights(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    versions = [ledger.assign("p", f"caller-{index}", [(1, 70), (2, 20), (3, 10)]) for index in range(30)]
    assert Counter(versions) == {1: 21, 2: 6, 3: 3}
    # New weights keep who was assigned, and steer newcomers toward the new split.
    later = [ledger.assign("p", f"caller-{index}", [(1, 50), (2, 50)]) for index in range(40)]
    assert later[:30] == [v if v in (1, 2) else later[index] for index, v in enumerate(versions)]
    # The 21 on version 1 stay there; the 3 whose version 3 is gone and the 10 newcomers all go to version 2.
    assert Counter(later) == {1: 21, 2: 19}
    ledger.close()


def test_callers_forgotten_in_memory_are_still_remembered_by_the_ledger(tmp_path: Path, monkeypatch) -> None:
    from llmctl.gateway import variants

    monkeypatch.setattr(variants, "KNOWN_CALLERS", 5)  # a gateway that has met more callers than it keeps
    ledger = Ledger(tmp_path / "ledger.sqlite")
    picker = variants.Variants(ledger.assign)
    first = [picker.pick(PROMPT.versions(), f"user:{index}").version for index in range(12)]
    assert [picker.pick(PROMPT.versions(), f"user:{index}").version for index in range(12)] == first
    ledger.close()


def test_a_ledger_that_cannot_assign_serves_the_request_by_weight() -> None:
    from llmctl.gateway.store import StoreError
    from llmctl.gateway.variants import Variants

    def locked(*assignment: object) -> int:
        raise StoreError("the store spend.sqlite: database is locked")

    picked = Variants(locked).pick(PROMPT.versions(), "user:ann")
    assert picked.version in (3, 4)
