"""The quickstart with monitoring on, for real: llama.cpp behind the gateway, watched by a real Prometheus. Stopping
the model server fires ModelDown (the rule's `for` scaled down for the test), and destroy stops Prometheus."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from prometheus_api import api, eventually
from support import Run

pytestmark = pytest.mark.integration

MONITORING = """
monitoring:
  prometheus: {run: true, scrape_interval: 1s, evaluation_interval: 1s}
  down_for: 5s
"""


def _state(config: Path) -> dict[str, dict]:
    data = json.loads((config.parent / ".llmctl" / "state" / "quickstart" / "dev.json").read_text())
    return {r["address"]: r for r in data["resources"]}


@pytest.fixture
def watched(llmctl: Run, quickstart: Path):
    quickstart.write_text(quickstart.read_text() + MONITORING)
    yield quickstart
    state = quickstart.parent / ".llmctl" / "state" / "quickstart" / "dev.json"
    pids = [r["attrs"]["pid"] for r in _state(quickstart).values()] if state.exists() else []
    llmctl("destroy", "-f", str(quickstart), "--auto-approve")
    for pid in pids:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_stopped_model_server_fires_model_down_and_destroy_stops_prometheus(llmctl: Run, watched: Path) -> None:
    applied = llmctl("apply", "-f", str(watched), "--auto-approve", "--skip-verify")
    assert applied.returncode == 0, applied.stderr
    resources = _state(watched)
    base = resources["local_prometheus.dev"]["endpoint"]
    gateway_port = resources["local_gateway.dev"]["attrs"]["port"]

    up = eventually(lambda: [t for t in api(f"{base}/api/v1/targets")["activeTargets"] if t["health"] == "up"],
                     "the gateway scraped")
    assert [t["labels"]["instance"] for t in up] == [f"127.0.0.1:{gateway_port}"]
    groups = eventually(lambda: api(f"{base}/api/v1/rules")["groups"], "rules loaded")
    assert {r["health"] for g in groups for r in g["rules"]} == {"ok"}
    eventually(lambda: api(f"{base}/api/v1/query?query=llmctl_gateway_upstream_up%7Bmodel%3D%22assistant%22%7D"
                             )["result"], "the replica's probe series")

    os.kill(resources["local_process.assistant[0]"]["attrs"]["pid"], signal.SIGKILL)
    firing = eventually(lambda: [a for a in api(f"{base}/api/v1/alerts")["alerts"]
                                  if a["labels"]["alertname"] == "ModelDown" and a["state"] == "firing"],
                         "ModelDown firing")
    assert firing[0]["labels"]["model"] == "assistant" and firing[0]["labels"]["severity"] == "page"

    prometheus_pid = resources["local_prometheus.dev"]["attrs"]["pid"]
    destroyed = llmctl("destroy", "-f", str(watched), "--auto-approve")
    assert destroyed.returncode == 0, destroyed.stderr
    assert not psutil.pid_exists(prometheus_pid) or psutil.Process(prometheus_pid).status() == psutil.STATUS_ZOMBIE
