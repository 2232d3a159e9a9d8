"""A gateway process takes a new spec on SIGHUP, in place: a stream under way finishes as it began, the next
request is served by the new spec, counters carry on, and a spec it cannot take leaves the old one serving."""
from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from gateway.test_app import gateway_spec, route
from gateway.upstream import RecordingUpstream, eventually, gateway_process
from llmctl.config.schema import Prompt

pytestmark = pytest.mark.timeout(120)  # a hang guard only


def _prompt(template: str) -> Prompt:
    return Prompt(name="support", template=template, variables=["question"])


def _health(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/health").json()


def _ask(url: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", timeout=30, json={
        "model": "assistant", "messages": [], "prompt_variables": {"question": "Refunds?"}, "stream": stream})


def _requests_counted(url: str) -> float:
    text = httpx.get(url.removesuffix("/v1") + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmctl_gateway_requests_total{"))


def test_sighup_serves_the_new_spec_without_dropping_a_stream_or_a_count(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    deltas = [f"word{index} " for index in range(10)]
    with RecordingUpstream(deltas=deltas, itl_s=0.1) as upstream:
        old = gateway_spec(tmp_path, route("assistant", [upstream.base_url], prompt=_prompt("Old: {{ question }}")))
        with gateway_process(old, path) as url:
            assert _ask(url).status_code == 200
            streamed: list[str] = []
            reader = threading.Thread(target=lambda: streamed.append(_ask(url, stream=True).text))
            reader.start()
            assert eventually(lambda: len(upstream.bodies) == 2)  # the stream has begun upstream
            new = old.model_copy(update={"routes": {"assistant": route(
                "assistant", [upstream.base_url], prompt=_prompt("New: {{ question }}"))}})
            new.write(path)
            os.kill(url.pid, signal.SIGHUP)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            assert eventually(lambda: _health(url).get("spec_sha256") == sha)
            reader.join(30)
            assert _ask(url).status_code == 200
            counted = _requests_counted(url)
    assert "word9" in streamed[0] and "[DONE]" in streamed[0]  # the stream under way finished
    assert [body["messages"][-1]["content"] for body in upstream.bodies] == [
        "Old: Refunds?", "Old: Refunds?", "New: Refunds?"]
    assert counted == 3  # the counters were not reset by the reload


def test_a_spec_it_cannot_take_in_place_leaves_the_old_one_serving(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    with RecordingUpstream() as upstream:
        old = gateway_spec(tmp_path, route("assistant", [upstream.base_url], prompt=_prompt("Old: {{ question }}")))
        with gateway_process(old, path) as url:
            before = _health(url)["spec_sha256"]
            old.model_copy(update={"db_path": str(tmp_path / "elsewhere.sqlite")}).write(path)
            os.kill(url.pid, signal.SIGHUP)
            log = path.with_suffix(".log")
            assert eventually(lambda: "the spec was not reloaded" in log.read_text())
            assert _health(url)["spec_sha256"] == before
            assert _ask(url).status_code == 200
    assert "restart the gateway" in log.read_text()


def test_a_budget_lowered_by_a_reload_refuses_from_the_next_request(tmp_path: Path) -> None:
    from llmctl.gateway.spec import BudgetSpec, Price

    path = tmp_path / "spec.json"
    price = Price(usd_per_1m_input=10_000, usd_per_1m_output=0, basis="test")  # $0.11 a request (11 tokens)

    def spec(limit_usd: float):  # type: ignore[no-untyped-def]
        return gateway_spec(tmp_path, route("assistant", [upstream.base_url], price=price, budgets=["team"]),
                            budgets={"team": BudgetSpec(name="team", limit_usd=limit_usd, period="month",
                                                        on_exceed="block")})

    def ask(url: str) -> httpx.Response:
        return httpx.post(f"{url}/chat/completions", timeout=30,
                          json={"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]})

    with RecordingUpstream() as upstream, gateway_process(spec(100), path) as url:
        assert ask(url).status_code == 200
        spec(0.10).write(path)
        os.kill(url.pid, signal.SIGHUP)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert eventually(lambda: _health(url).get("spec_sha256") == sha)
        refused = ask(url)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
