"""Feedback on answers through a real gateway: every answer names its id, the key that asked can rate it (by that
id or the id in its body) and no other key can (the same 404 as an unknown id), a rating is kept in the ledger
beside the request and counted in /metrics by the version that answered, and a score off the declared scale is
refused with the field it is about."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.test_app import gateway_spec, route
from gateway.upstream import RecordingUpstream, running_gateway
from llmctl.gateway.auth import hash_key
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import FeedbackSpec, KeySpec

pytestmark = pytest.mark.timeout(120)  # a hang guard only

KEYS = [KeySpec(id="app", sha256=hash_key("sk-app")), KeySpec(id="other", sha256=hash_key("sk-other"))]
CHAT = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}


def _post(http: httpx.Client, url: str, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{url}{path}", json=body, headers={"authorization": f"Bearer {key}"})


def _feedback_counts(url: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(httpx.get(url.removesuffix("/v1") + "/metrics").text):
        for sample in family.samples:
            if sample.name == "llmctl_gateway_feedback_total":
                found[(sample.labels["version"], sample.labels["rating"])] = sample.value
    return found


def test_the_key_that_asked_rates_an_answer_and_no_other_key_can(tmp_path: Path) -> None:
    spec = gateway_spec(tmp_path, route("assistant", []), keys=KEYS)
    with RecordingUpstream() as upstream, httpx.Client() as http:
        spec.routes["assistant"].upstreams = [upstream.base_url]
        with running_gateway(spec) as url:
            answer = _post(http, url, "/chat/completions", "sk-app", CHAT)
            request_id = answer.headers["x-request-id"]
            others = _post(http, url, "/feedback", "sk-other", {"id": request_id, "score": "down"})
            unknown = _post(http, url, "/feedback", "sk-app", {"id": "req-000000000000000000000000", "score": "up"})
            rated = _post(http, url, "/feedback", "sk-app", {"id": request_id, "score": "down", "comment": "wrong"})
            by_body_id = _post(http, url, "/feedback", "sk-app", {"id": answer.json()["id"], "score": "up"})
            counts = _feedback_counts(url)
    assert request_id.startswith("req-") and len(request_id) == 28
    assert others.status_code == unknown.status_code == 404
    # Someone else's answer looks exactly like an unknown one.
    assert others.json()["error"]["code"] == unknown.json()["error"]["code"] == "answer_not_found"
    assert rated.status_code == 200 and rated.json() == {"object": "feedback", "id": request_id, "score": -1.0,
                                                         "negative": True}
    assert by_body_id.status_code == 200 and by_body_id.json()["id"] == request_id  # the same answer, re-rated
    assert counts == {("stable", "negative"): 1, ("stable", "positive"): 1}
    ledger = Ledger(Path(spec.db_path))
    assert ledger.ratings(datetime.now(timezone.utc) - timedelta(days=1)) == {
        "assistant": {"ratings": 1, "negative": 0}}  # one rating per answer: the later replaced the first


def test_a_streamed_answer_is_rated_by_its_request_id(tmp_path: Path) -> None:
    with RecordingUpstream() as upstream, running_gateway(gateway_spec(
            tmp_path, route("assistant", [upstream.base_url]))) as url, httpx.Client() as http:
        with http.stream("POST", f"{url}/chat/completions", json={**CHAT, "stream": True}) as streamed:
            request_id = streamed.headers["x-request-id"]
            streamed.read()
        rated = http.post(f"{url}/feedback", json={"id": request_id, "score": 1})
    assert rated.status_code == 200 and rated.json()["negative"] is False


@pytest.mark.parametrize(("score", "status", "negative"), [
    (2, 200, True), (3, 200, False), (5, 200, False), (6, 400, None), ("up", 400, None), (True, 400, None)])
def test_a_range_scale_takes_numbers_in_it_and_below_the_threshold_is_negative(
        tmp_path: Path, score: Any, status: int, negative: bool | None) -> None:
    spec = gateway_spec(tmp_path, route("assistant", []),
                        feedback=FeedbackSpec(scale="range", min=1, max=5, negative_below=3))
    with RecordingUpstream() as upstream, httpx.Client() as http:
        spec.routes["assistant"].upstreams = [upstream.base_url]
        with running_gateway(spec) as url:
            request_id = http.post(f"{url}/chat/completions", json=CHAT).headers["x-request-id"]
            rated = http.post(f"{url}/feedback", json={"id": request_id, "score": score})
    assert rated.status_code == status, rated.text
    if negative is None:
        assert rated.json()["error"]["param"] == "score" and "from 1 to 5" in rated.json()["error"]["message"]
    else:
        assert rated.json()["negative"] is negative


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"score": "up"}', b'{"id": "x", "score": "meh"}',
                                  b'{"id": "x", "score": "up", "comment": 5}'])
def test_a_malformed_rating_is_a_400_naming_what_is_wrong(tmp_path: Path, body: bytes) -> None:
    with RecordingUpstream() as upstream, running_gateway(gateway_spec(
            tmp_path, route("assistant", [upstream.base_url]))) as url:
        refused = httpx.post(f"{url}/feedback", content=body, headers={"content-type": "application/json"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_feedback"


def test_an_answer_older_than_the_window_cannot_be_rated(tmp_path: Path) -> None:
    spec = gateway_spec(tmp_path, route("assistant", []), feedback=FeedbackSpec(window_s=1e-6))
    with RecordingUpstream() as upstream, httpx.Client() as http:
        spec.routes["assistant"].upstreams = [upstream.base_url]
        with running_gateway(spec) as url:
            request_id = http.post(f"{url}/chat/completions", json=CHAT).headers["x-request-id"]
            late = http.post(f"{url}/feedback", json={"id": request_id, "score": "up"})
    assert late.status_code == 404
