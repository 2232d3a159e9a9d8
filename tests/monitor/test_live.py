"""`llmctl monitor` and the alerts of `llmctl status` against a real Prometheus, running the rules generated from the
config and scraping a real GatewayMetrics registry under steady traffic: every round three requests answered and one
failed (500), so the error rate is exactly a quarter; without Prometheus, two scrapes of the same /metrics."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.gateway import metrics
from llmctl.gateway.metrics import GatewayMetrics
from llmctl.gateway.spec import SloThresholds
from llmctl.gateway.spend import BudgetState
from llmctl.monitor import tools
from llmctl.monitor.live import (PROMETHEUS_RESOURCE, RESTART, GatewaySource, ModelView, Monitor, PrometheusSource,
                                 Snapshot, bucket_quantile, firing_alerts)
from llmctl.monitor.rules import rule_files, rules_yaml
from llmctl.monitor.view import plain
from llmctl.resolve import workspace_of
from llmctl.resource import Resource
from llmctl.state import State
from llmctl.status import StatusReport, render_status_text
from support import Run

T = TypeVar("T")

CONFIG = """\
version: 1
project: mon
environment: dev
models:
  - name: chat
    source: api://openai/gpt-4o-mini
    slo: snappy
    budget: monthly
  - name: batch
    source: api://openai/gpt-4o
slos:
  - name: snappy
    ttft_p95_ms: 500
    latency_p95_ms: 2000
    error_rate: 0.01
budgets:
  - name: monthly
    limit_usd: 10
"""
# Each round's observations all fall in one bucket, so p95 is the bucket's lower bound plus 95% of its width.
CHAT_TTFT_S, CHAT_LATENCY_S, BATCH_LATENCY_S = 0.9, 1.2, 0.3
CHAT_TTFT_P95 = 0.75 + 0.95 * (1.0 - 0.75)
CHAT_LATENCY_P95 = 1.0 + 0.95 * (2.0 - 1.0)  # 2.0: the boundary latency_p95_ms adds
BATCH_LATENCY_P95 = 0.25 + 0.95 * (0.5 - 0.25)
SPENT_USD = 12.5
ALWAYS = """\
groups:
  - name: test
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: ticket, kind: test, model: chat, project: mon, environment: dev}
        annotations: {summary: fires from the start}
      - alert: SomeoneElses
        expr: vector(1)
        labels: {severity: page, project: elsewhere}
"""
DEADLINE_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """A gateway's /metrics as Prometheus scrapes it: a real GatewayMetrics registry, observed under steady traffic.
    A round and a scrape never interleave, so every scrape sees whole rounds and the ratios are exact."""

    def __init__(self) -> None:
        self.metrics = GatewayMetrics(SloThresholds(request_seconds=[2.0], ttft_seconds=[0.5]))
        # The budgets as the gateway reads them from its ledger at each scrape (no replicas are probed here).
        self.metrics.watch(lambda: [], lambda: [BudgetState("monthly", 10.0, SPENT_USD, time.time() + 86400)])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with gateway._lock:
                    body = gateway.metrics.render()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _round(self) -> None:
        with self._lock:
            for status in (200, 200, 200, 500):
                self.metrics.request("chat", "anonymous", "none", status, CHAT_LATENCY_S)
                self.metrics.ttft("chat", CHAT_TTFT_S)
            self.metrics.request("batch", "anonymous", "none", 200, BATCH_LATENCY_S)

    def _traffic(self) -> None:
        while not self._stop.wait(0.1):
            self._round()

    def __enter__(self) -> Gateway:
        self._round()  # here, where a failure fails the test at once rather than silently ending the thread
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._traffic, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def _eventually(read: Callable[[], T], ready: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + DEADLINE_S
    last = read()
    while not ready(last):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {DEADLINE_S:g} s; last: {last}")
        time.sleep(0.5)
        last = read()
    return last


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> Desired:
    config = tmp_path_factory.mktemp("config") / "llmops.yaml"
    config.write_text(CONFIG)
    return Desired.from_config(load(config))


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with Gateway() as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, desired: Desired, gateway: Gateway) -> Iterator[str]:
    """A real Prometheus scraping the gateway every second and evaluating the config's rules and ALWAYS."""
    binary = tools.find("prometheus")
    if binary is None:
        pytest.fail(f"prometheus is not installed: {tools.INSTALL_HINT}")
    directory = tmp_path_factory.mktemp("prometheus")
    rules = []
    for name, groups in rule_files(desired).items():
        (directory / f"{name}.rules.yml").write_text(rules_yaml(groups))
        rules.append(str(directory / f"{name}.rules.yml"))
    (directory / "always.rules.yml").write_text(ALWAYS)
    (directory / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [*rules, str(directory / "always.rules.yml")],
        "scrape_configs": [{"job_name": metrics.GATEWAY_JOB,
                            "static_configs": [{"targets": [gateway.url.removeprefix("http://")]}]}]}))
    url = f"http://127.0.0.1:{_free_port()}"
    log = directory / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(binary), f"--config.file={directory / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={directory / 'data'}",
                                    f"--web.listen-address={url.removeprefix('http://')}"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        _eventually(lambda: _ready(url, process, log), bool, "Prometheus was not ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"Prometheus exited ({process.returncode}):\n{log.read_text()}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _models(snapshot: Snapshot) -> tuple[ModelView, ModelView]:
    by_name = {model.model: model for model in snapshot.models}
    return by_name["chat"], by_name["batch"]


def _complete(snapshot: Snapshot) -> bool:
    """Prometheus has scraped the traffic twice, recorded every rule and fired the generated burn alert."""
    chat, batch = _models(snapshot)
    left = chat.error_budget_left or {}
    return (None not in (chat.error_rate.value, batch.error_rate.value, chat.ttft_p95_s.value,
                         batch.latency_p95_s.value, snapshot.budgets[0].spent_usd)
            and bool(left) and None not in left.values()
            and any(alert.name == "ErrorBudgetBurn" for alert in snapshot.alerts or []))


@pytest.fixture(scope="module")
def settled(prometheus: str, desired: Desired) -> Snapshot:
    monitor = Monitor(desired, PrometheusSource(prometheus, "mon", "dev", RESTART))
    return _eventually(monitor.snapshot, _complete, "the snapshot was not complete")


def test_prometheus_snapshot_reads_the_traffic_rules_and_alerts(settled: Snapshot) -> None:
    chat, batch = _models(settled)
    assert (settled.source, settled.window_s) == ("prometheus", 300)
    assert chat.slo == "snappy" and batch.slo is None
    assert chat.requests_per_s > 0 and batch.requests_per_s > 0
    assert chat.error_rate.value == pytest.approx(0.25) and chat.error_rate.slo == 0.01 and chat.error_rate.over
    assert batch.error_rate.value == 0 and batch.error_rate.slo is None and not batch.error_rate.over
    assert chat.ttft_p95_s.value == pytest.approx(CHAT_TTFT_P95) and chat.ttft_p95_s.over
    assert chat.latency_p95_s.value == pytest.approx(CHAT_LATENCY_P95) and not chat.latency_p95_s.over
    assert (chat.latency_p95_s.slo, chat.ttft_p95_s.slo) == (2.0, 0.5)
    assert batch.latency_p95_s.value == pytest.approx(BATCH_LATENCY_P95) and batch.ttft_p95_s.value is None
    # 1 - bad share / allowed share: a quarter failed of 1% allowed; every TTFT over 500 ms of 5% allowed.
    assert chat.error_budget_left == {"ttft": pytest.approx(1 - 1 / 0.05), "latency": pytest.approx(1.0),
                                      "errors": pytest.approx(1 - 0.25 / 0.01)}
    assert batch.error_budget_left == {}
    [monthly] = settled.budgets
    assert (monthly.spent_usd, monthly.limit_usd, monthly.over) == (SPENT_USD, 10, True)


def test_prometheus_snapshot_lists_this_environments_firing_alerts(settled: Snapshot) -> None:
    alerts = settled.alerts or []
    names = {alert.name for alert in alerts}
    assert {"AlwaysFiring", "ErrorBudgetBurn"} <= names and "SomeoneElses" not in names
    [always] = [alert for alert in alerts if alert.name == "AlwaysFiring"]
    assert (always.severity, always.summary, always.about) == ("ticket", "fires from the start", "model=chat")
    assert always.active_since
    assert {(a.labels["sli"], a.severity) for a in alerts if a.name == "ErrorBudgetBurn"} >= {
        ("errors", "page"), ("ttft", "page")}


def test_plain_text_marks_what_is_over(settled: Snapshot) -> None:
    text = plain(settled)
    chat = next(line for line in text.splitlines() if line.startswith("chat "))
    assert "25% (SLO 1%) !" in chat and "ms (SLO 500 ms) !" in chat and "1.95 s (SLO 2.00 s)" in chat
    assert "errors -2400% !" in chat and "latency 100%" in chat
    assert "$12.50 (125%) !" in text and "AlwaysFiring" in text and "\x1b[" not in text


def test_gateway_alone_gives_rates_and_percentiles_from_two_scrapes(desired: Desired, gateway: Gateway) -> None:
    snapshot = Monitor(desired, GatewaySource([f"{gateway.url}/metrics"], gap_s=2)).snapshot()
    chat, batch = _models(snapshot)
    assert snapshot.source == "gateway" and snapshot.window_s >= 2
    assert chat.requests_per_s > 0 and batch.requests_per_s > 0
    assert chat.error_rate.value == pytest.approx(0.25) and chat.error_rate.over
    assert chat.ttft_p95_s.value == pytest.approx(CHAT_TTFT_P95)
    assert chat.latency_p95_s.value == pytest.approx(CHAT_LATENCY_P95)
    assert batch.latency_p95_s.value == pytest.approx(BATCH_LATENCY_P95)
    assert snapshot.budgets[0].spent_usd == SPENT_USD
    # What only Prometheus knows is said to be unknown, not shown as zero.
    assert chat.error_budget_left is None and snapshot.alerts is None
    assert "Prometheus" in snapshot.notes[0]
    text = plain(snapshot)
    assert "needs Prometheus" in text and "not visible without Prometheus" in text


def test_bucket_quantile_is_prometheus_histogram_quantile() -> None:
    inf = float("inf")
    assert bucket_quantile(0.95, [(0.1, 0), (0.5, 10), (inf, 10)]) == pytest.approx(0.1 + 0.95 * 0.4)
    assert bucket_quantile(0.5, [(1.0, 4), (inf, 4)]) == pytest.approx(0.5)  # from 0 in the first bucket
    assert bucket_quantile(0.95, [(1.0, 1), (inf, 10)]) == 1.0  # in +Inf: the highest finite bound
    assert bucket_quantile(0.95, [(1.0, 0), (inf, 0)]) is None


# --- llmctl status and the command line --------------------------------------------------------------------------


def _deploy(config_dir: Path, gateway: Gateway | None, prometheus: str | None) -> Path:
    """The state an apply of CONFIG records, with the gateway and Prometheus (those given) answering there."""
    config = config_dir / "llmops.yaml"
    config.write_text(CONFIG)
    loaded = load(config)
    backend = workspace_of(loaded).backend()
    resources = []
    if gateway:
        resources.append(Resource(address="local_gateway.dev", type="local_gateway", owner="gateway.dev",
                                  provider="local", target="local", spec={}, endpoint=f"{gateway.url}/v1",
                                  serves=["chat", "batch"]))
    if prometheus:
        resources.append(Resource(address="local_prometheus.dev", type=PROMETHEUS_RESOURCE, owner="monitoring.dev",
                                  provider="local", target="local", spec={}, endpoint=prometheus))
    backend.write(State(project="mon", environment="dev", serial=1, status="applied", lineage=backend.read().lineage,
                        desired=Desired.from_config(loaded).to_config(), resources=resources))
    return config


def _state(config: Path) -> State:
    return workspace_of(load(config)).backend().read()


def test_status_lists_the_firing_alerts(tmp_path: Path, gateway: Gateway, prometheus: str,
                                        settled: Snapshot) -> None:
    found = firing_alerts(_state(_deploy(tmp_path, gateway, prometheus)))
    assert found is not None and found.error is None and found.prometheus == prometheus
    assert "AlwaysFiring" in {alert.name for alert in found.alerts or []}
    report = StatusReport(project="mon", environment="dev", serial=1, updated_at=None, last_change=None, replicas=[],
                          hosted=[], verification={}, alerts=found)
    text = render_status_text(report)
    assert f"alerts firing (Prometheus {prometheus}):" in text
    assert "  ticket AlwaysFiring model=chat: fires from the start (since " in text
    assert json.loads(report.model_dump_json())["alerts"]["alerts"][0]["name"]


def test_status_says_in_one_line_when_prometheus_does_not_answer(tmp_path: Path, gateway: Gateway) -> None:
    gone = f"http://127.0.0.1:{_free_port()}"
    found = firing_alerts(_state(_deploy(tmp_path, gateway, gone)))
    assert found is not None and found.alerts is None
    assert found.error and gone in found.error and "llmctl apply" in found.error
    report = StatusReport(project="mon", environment="dev", serial=1, updated_at=None, last_change=None, replicas=[],
                          hosted=[], verification={}, alerts=found)
    [line] = [line for line in render_status_text(report).splitlines() if "alerts" in line]
    assert line.startswith("alerts: unknown: Prometheus at")
    assert firing_alerts(_state(_deploy(tmp_path, gateway, None))) is None  # no Prometheus: nothing to say


def test_monitor_once_json_reads_the_prometheus_in_state(llmctl: Run, tmp_path: Path, gateway: Gateway,
                                                          prometheus: str, settled: Snapshot) -> None:
    config = _deploy(tmp_path, gateway, prometheus)
    result = llmctl("monitor", "-f", str(config), "--once", "--format", "json")
    assert result.returncode == 0, result.stderr
    snapshot = Snapshot.model_validate_json(result.stdout)
    assert (snapshot.source, snapshot.url) == ("prometheus", prometheus)
    assert _models(snapshot)[0].error_rate.value == pytest.approx(0.25)
    assert "AlwaysFiring" in {alert.name for alert in snapshot.alerts or []}

    text = llmctl("monitor", "-f", str(config), "--once")
    assert text.returncode == 0 and "25% (SLO 1%) !" in text.stdout and "AlwaysFiring" in text.stdout


def test_monitor_without_prometheus_scrapes_the_gateway(llmctl: Run, tmp_path: Path, gateway: Gateway) -> None:
    config = _deploy(tmp_path, gateway, None)
    result = llmctl("monitor", "-f", str(config), "--format", "json", "--interval", "1")
    assert result.returncode == 0, result.stderr
    snapshot = Snapshot.model_validate_json(result.stdout)
    assert (snapshot.source, snapshot.url) == ("gateway", f"{gateway.url}/metrics")
    assert _models(snapshot)[0].error_rate.value == pytest.approx(0.25) and snapshot.alerts is None


def test_monitor_exits_1_saying_what_to_run(llmctl: Run, tmp_path: Path, gateway: Gateway) -> None:
    nothing = tmp_path / "empty" / "llmops.yaml"
    nothing.parent.mkdir()
    nothing.write_text(CONFIG)
    undeployed = llmctl("monitor", "-f", str(nothing), "--once")
    assert undeployed.returncode == 1 and "no model is deployed" in undeployed.stderr
    assert "llmctl apply" in undeployed.stderr
    no_gateway = llmctl("monitor", "-f", str(_deploy(tmp_path / "empty", None, None)), "--once")
    assert no_gateway.returncode == 1 and "no gateway" in no_gateway.stderr and "llmctl apply" in no_gateway.stderr

    config = _deploy(tmp_path, gateway, f"http://127.0.0.1:{_free_port()}")
    down = llmctl("monitor", "-f", str(config), "--once")
    assert down.returncode == 1 and "is not answering" in down.stderr and "llmctl apply" in down.stderr
    wrong = llmctl("monitor", "-f", str(config), "--once", "--prometheus", gateway.url)
    assert wrong.returncode == 1 and "--prometheus" in wrong.stderr
    assert "Traceback" not in undeployed.stderr + no_gateway.stderr + down.stderr + wrong.stderr
