"""What `llmctl monitor` shows: per model the request rate, the error rate and the p95 latencies against its SLO, the
error budget left; each budget's spend against its limit; the firing alerts.

Two sources answer behind one interface. Prometheus (the environment's, or one named with --prometheus) answers
instant queries over the shortest window the rules record, reading the recording rules `rules.py` generates where
they exist, and lists its alerts. Without one, two scrapes of the gateway's /metrics some seconds apart give rates and
percentiles from their differences; error budgets and alerts need Prometheus's history and rules, so that view says
so instead of showing zeros.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field, computed_field

from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.gateway import metrics
from llmctl.monitor.burn import objectives
from llmctl.monitor.promql import duration, select
from llmctl.monitor.rules import BAD_RATIO, BUDGET_REMAINING, REQUEST_RATE, SHORTEST_S
from llmctl.state import State

# The state resource of the environment's own Prometheus (local target); its `endpoint` is the server's base URL.
PROMETHEUS_RESOURCE = "local_prometheus"
QUANTILE = 0.95
# The per-request latency SLIs and the gateway histogram each is read from.
HISTOGRAMS = {"ttft": metrics.TTFT_SECONDS, "latency": metrics.REQUEST_SECONDS, "itl": metrics.ITL_SECONDS}
# As the rules count them: client errors (auth, rate limits, budget refusals, guardrail blocks) are not the service
# failing, so they are neither requests the SLIs count nor errors.
COUNTED = 'status!~"4.."'
FAILED = 'status=~"5.."'
# Labels every alert of ours carries that say nothing about what it is about.
_ROUTING_LABELS = {"alertname", "severity", "kind", "project", "environment"}
_TIMEOUT_S = 10.0
# What to do about a Prometheus that does not answer, by where its URL came from.
RESTART = "`llmctl apply` starts the environment's Prometheus again"
CHECK_URL = "check the --prometheus URL"


# --- the snapshot ------------------------------------------------------------------------------------------------


class Reading(BaseModel):
    value: float | None = Field(None, description="None: nothing was measured in the window (no requests).")
    slo: float | None = Field(None, description="The bound the model's SLO sets, if any.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def over(self) -> bool:
        return self.value is not None and self.slo is not None and self.value > self.slo


class ModelView(BaseModel):
    model: str
    slo: str | None
    requests_per_s: float = Field(description="Requests the SLIs count (client errors left out).")
    error_rate: Reading
    ttft_p95_s: Reading
    latency_p95_s: Reading
    itl_p95_s: Reading
    error_budget_left: dict[str, float | None] | None = Field(
        description="Per SLI of its SLO, the share of the error budget left over the SLO's window (1: untouched, "
                    "below 0: overspent; None: no data yet). None: this source cannot tell.")


class BudgetView(BaseModel):
    budget: str
    period: str
    limit_usd: float
    spent_usd: float | None = Field(description="Spent in the current period; None: the gateway does not export it.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def over(self) -> bool:
        return self.spent_usd is not None and self.spent_usd >= self.limit_usd


class Alert(BaseModel):
    name: str
    severity: str | None
    labels: dict[str, str] = Field(description="Every label but the alert's name and severity.")
    summary: str | None
    active_since: str | None

    @property
    def about(self) -> str:
        """What it is about (`model=chat sli=errors`), without the labels every alert of ours carries."""
        return " ".join(f"{k}={v}" for k, v in self.labels.items() if k not in _ROUTING_LABELS)


class Snapshot(BaseModel):
    project: str
    environment: str
    source: Literal["prometheus", "gateway"]
    url: str
    at: str
    window_s: float = Field(description="The span rates and percentiles are measured over.")
    models: list[ModelView]
    budgets: list[BudgetView]
    alerts: list[Alert] | None = Field(description="Firing alerts; None: this source cannot see alerts.")
    notes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Readings:
    """What a source measured; a model, SLI or budget missing from a mapping had nothing to measure."""

    window_s: float
    requests_per_s: dict[str, float]
    error_rate: dict[str, float]
    p95_s: dict[str, dict[str, float]]  # SLI -> model -> seconds
    spent_usd: dict[str, float]
    budget_left: dict[str, dict[str, float]] | None  # model -> SLI -> share left; None: the source cannot tell
    alerts: list[Alert] | None
    notes: tuple[str, ...] = ()


class Source(Protocol):
    kind: Literal["prometheus", "gateway"]
    url: str

    def read(self) -> Readings: ...


@dataclass
class Monitor:
    desired: Desired
    source: Source

    def snapshot(self) -> Snapshot:
        readings = self.source.read()
        desired = self.desired
        return Snapshot(project=desired.project, environment=desired.environment, source=self.source.kind,
                        url=self.source.url, at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        window_s=readings.window_s, models=[_model_view(desired, name, readings)
                                                            for name in desired.models],
                        budgets=[BudgetView(budget=name, period=budget.period, limit_usd=budget.limit_usd,
                                            spent_usd=readings.spent_usd.get(name))
                                 for name, budget in desired.budgets.items()],
                        alerts=readings.alerts, notes=list(readings.notes))


def _model_view(desired: Desired, name: str, readings: Readings) -> ModelView:
    model = desired.models[name]
    slo = desired.slos.get(model.slo) if model.slo else None
    targets = objectives(slo) if slo else []
    thresholds = {objective.sli: objective.threshold_s for objective in targets}

    def p95(sli: str) -> Reading:
        return Reading(value=readings.p95_s.get(sli, {}).get(name), slo=thresholds.get(sli))

    left = None if readings.budget_left is None else readings.budget_left.get(name, {})
    return ModelView(model=name, slo=slo.name if slo else None,
                     requests_per_s=readings.requests_per_s.get(name, 0.0),
                     error_rate=Reading(value=readings.error_rate.get(name), slo=slo.error_rate if slo else None),
                     ttft_p95_s=p95("ttft"), latency_p95_s=p95("latency"), itl_p95_s=p95("itl"),
                     error_budget_left=None if left is None else {o.sli: left.get(o.sli) for o in targets})


# --- choosing the source -----------------------------------------------------------------------------------------


def monitor_for(state: State, config_dir: Path, prometheus: str | None, gap_s: float) -> Monitor:
    """What is deployed, read from `prometheus`, else the environment's Prometheus, else the gateway itself. The
    thresholds are the applied config's: the rules Prometheus evaluates were generated from it."""
    if state.desired is None or not state.desired.models:
        raise LlmctlError(f"no model is deployed in {state.project}/{state.environment}: run `llmctl apply` first")
    desired = Desired.from_parts(state.desired, config_dir)
    if prometheus:
        return Monitor(desired, PrometheusSource(prometheus, state.project, state.environment, CHECK_URL))
    url = prometheus_url(state)
    if url:
        return Monitor(desired, PrometheusSource(url, state.project, state.environment, RESTART))
    gateways = [metrics_url(r.endpoint) for r in state.resources if r.serves and r.endpoint]
    if not gateways:
        raise LlmctlError(f"no gateway is recorded in the state of {state.project}/{state.environment}, and no "
                          "Prometheus: run `llmctl apply` to start the gateway, or pass --prometheus URL")
    return Monitor(desired, GatewaySource(gateways, gap_s))


def prometheus_url(state: State) -> str | None:
    return next((r.endpoint for r in state.resources if r.type == PROMETHEUS_RESOURCE and r.endpoint), None)


def metrics_url(endpoint: str) -> str:
    """The gateway serves the OpenAI API under /v1 and its metrics at the root."""
    return endpoint.rstrip("/").removesuffix("/v1") + "/metrics"


# --- Prometheus --------------------------------------------------------------------------------------------------


class PrometheusSource:
    kind: Literal["prometheus"] = "prometheus"

    def __init__(self, url: str, project: str, environment: str, fix: str) -> None:
        self.url, self._fix = url.rstrip("/"), fix
        self._scope = {"project": project, "environment": environment}
        self._client = httpx.Client(base_url=self.url, timeout=_TIMEOUT_S)

    def read(self) -> Readings:
        window = duration(SHORTEST_S)
        counted = f"sum by (model) (rate({select(metrics.REQUESTS, COUNTED)}[{window}]))"
        failed = f"sum by (model) (rate({select(metrics.REQUESTS, FAILED)}[{window}]))"
        # The recorded series where the rules record one (models with an SLO); the same sum over the raw counters
        # for the others (`or` keeps the left side's series and adds the right side's other models).
        rate = f"{select(REQUEST_RATE.format(window=window))} or {counted}"
        errors = (f"max by (model) ({select(BAD_RATIO.format(window=window), sli='errors')})"
                  f" or ({failed} or 0 * {counted}) / {counted}")
        return Readings(
            window_s=SHORTEST_S, requests_per_s=self._by_model(rate), error_rate=self._by_model(errors),
            p95_s={sli: self._by_model(f"histogram_quantile({QUANTILE:g}, sum by (model, le) "
                                       f"(rate({histogram}_bucket[{window}])))")
                   for sli, histogram in HISTOGRAMS.items()},
            spent_usd={labels["budget"]: value for labels, value in self.query(metrics.BUDGET_SPENT)
                       if "budget" in labels},
            budget_left=self._budget_left(), alerts=self.alerts())

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples (labels, value), without NaN: a ratio or quantile of no traffic is no data."""
        data = self._get("/api/v1/query", {"query": expr})
        return [(item["metric"], value) for item in data["result"]
                if math.isfinite(value := float(item["value"][1]))]

    def alerts(self) -> list[Alert]:
        """The firing alerts of this project and environment (a shared Prometheus holds others' too)."""
        found = []
        for alert in self._get("/api/v1/alerts")["alerts"]:
            labels: dict[str, str] = alert["labels"]
            if alert["state"] != "firing" or any(labels.get(k, v) != v for k, v in self._scope.items()):
                continue
            found.append(Alert(name=labels.get("alertname", "?"), severity=labels.get("severity"),
                               labels={k: v for k, v in labels.items() if k not in ("alertname", "severity")},
                               summary=alert.get("annotations", {}).get("summary"),
                               active_since=alert.get("activeAt")))
        return found

    def _by_model(self, expr: str) -> dict[str, float]:
        return {labels["model"]: value for labels, value in self.query(expr) if "model" in labels}

    def _budget_left(self) -> dict[str, dict[str, float]]:
        left: dict[str, dict[str, float]] = {}
        for labels, value in self.query(BUDGET_REMAINING):
            left.setdefault(labels.get("model", "?"), {})[labels.get("sli", "?")] = value
        return left

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise LlmctlError(f"Prometheus at {self.url} is not answering ({_why(exc)}): {self._fix}") from None
        try:
            body = response.json()
        except ValueError:
            raise LlmctlError(f"{self.url} is not a Prometheus: {path} answered HTTP {response.status_code} "
                              f"without JSON; {self._fix}") from None
        if body.get("status") != "success":
            raise LlmctlError(f"Prometheus at {self.url} refused {path} {params or ''}: {body.get('error')}")
        return body["data"]


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class FiringAlerts(BaseModel):
    prometheus: str
    alerts: list[Alert] | None = Field(None, description="None: they could not be read (see `error`).")
    error: str | None = None


def firing_alerts(state: State) -> FiringAlerts | None:
    """For `llmctl status`: the environment's firing alerts, or why they could not be read; None without a
    Prometheus in state."""
    url = prometheus_url(state)
    if url is None:
        return None
    try:
        return FiringAlerts(prometheus=url, alerts=PrometheusSource(url, state.project, state.environment,
                                                                         RESTART).alerts())
    except LlmctlError as exc:
        return FiringAlerts(prometheus=url, error=str(exc))


# --- the gateway alone -------------------------------------------------------------------------------------------

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Scrape:
    at: float  # time.monotonic()
    values: dict[SampleKey, float]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class GatewaySource:
    kind: Literal["gateway"] = "gateway"

    def __init__(self, urls: list[str], gap_s: float) -> None:
        self.urls, self.gap_s = urls, gap_s
        self.url = ", ".join(urls)
        self._client = httpx.Client(timeout=_TIMEOUT_S)
        self._last: Scrape | None = None

    def read(self) -> Readings:
        """Rates since the last read; the first read scrapes twice, `gap_s` apart."""
        if self._last is None:
            self._last = self.scrape()
            time.sleep(self.gap_s)
        earlier, later = self._last, self.scrape()
        self._last = later
        return gateway_readings(earlier, later)

    def scrape(self) -> Scrape:
        # Several gateways serve disjoint traffic: their counters add up.
        return scrape_of([self._fetch(url) for url in self.urls])

    def _fetch(self, url: str) -> str:
        try:
            response = self._client.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise LlmctlError(f"the gateway's metrics at {url} cannot be read ({_why(exc)}): `llmctl status` "
                              "shows the gateway; `llmctl apply` starts it again") from None
        return response.text


def scrape_of(texts: Iterable[str]) -> Scrape:
    """Scrapes of gateways' /metrics taken now, their counters added up."""
    values: dict[SampleKey, float] = {}
    for text in texts:
        for sample in _samples(text):
            key = (sample.name, frozenset(sample.labels.items()))
            values[key] = values.get(key, 0.0) + sample.value
    return Scrape(time.monotonic(), values)


def _samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield Sample(sample.name, dict(sample.labels), sample.value)


def gateway_readings(earlier: Scrape, later: Scrape) -> Readings:
    elapsed = later.at - earlier.at
    grown = list(increase(earlier, later))
    counted = _per_model(grown, metrics.REQUESTS, lambda labels: not labels.get("status", "").startswith("4"))
    failed = _per_model(grown, metrics.REQUESTS, lambda labels: labels.get("status", "").startswith("5"))
    note = (f"No Prometheus is known: rates and percentiles are over the {elapsed:.0f} s between two scrapes of the "
            "gateway; error budget left and alerts need Prometheus's rules and history (set "
            "monitoring.prometheus.run: true and run `llmctl apply`, or pass --prometheus URL).")
    return Readings(
        window_s=elapsed, requests_per_s={model: n / elapsed for model, n in counted.items()},
        error_rate={model: failed.get(model, 0.0) / n for model, n in counted.items() if n > 0},
        p95_s={sli: _quantiles(grown, f"{histogram}_bucket") for sli, histogram in HISTOGRAMS.items()},
        spent_usd={s.labels["budget"]: s.value for s in _current(later)
                   if s.name == metrics.BUDGET_SPENT and "budget" in s.labels},
        budget_left=None, alerts=None, notes=(note,))


def _current(scrape: Scrape) -> Iterator[Sample]:
    for (name, labels), value in scrape.values.items():
        yield Sample(name, dict(labels), value)


def increase(earlier: Scrape, later: Scrape) -> Iterator[Sample]:
    """Each counter's growth between the scrapes; a series new since the first grew from 0, and one lower than
    before was reset by a gateway restart, so all of its value is new (as Prometheus's rate() reads it)."""
    for sample in _current(later):
        before = earlier.values.get((sample.name, frozenset(sample.labels.items())), 0.0)
        yield Sample(sample.name, sample.labels, sample.value - before if sample.value >= before else sample.value)


def _per_model(samples: Iterable[Sample], name: str, keep: Callable[[dict[str, str]], bool]
               ) -> dict[str, float]:
    total: dict[str, float] = {}
    for sample in samples:
        if sample.name == name and "model" in sample.labels and keep(sample.labels):
            total[sample.labels["model"]] = total.get(sample.labels["model"], 0.0) + sample.value
    return total


def _quantiles(samples: Iterable[Sample], bucket_name: str) -> dict[str, float]:
    # Summed over the other labels (a rollout's two versions), as Prometheus's `sum by (model, le)` would.
    buckets: dict[str, dict[float, float]] = {}
    for sample in samples:
        if sample.name == bucket_name and "model" in sample.labels:
            per_le = buckets.setdefault(sample.labels["model"], {})
            le = float(sample.labels["le"])
            per_le[le] = per_le.get(le, 0.0) + sample.value
    found = {model: bucket_quantile(QUANTILE, list(counts.items())) for model, counts in buckets.items()}
    return {model: value for model, value in found.items() if value is not None}


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative (le, count) buckets: linear within the bucket that holds the
    rank, from 0 for the first; a rank in the +Inf bucket answers with the highest finite bound. None: no events."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != math.inf or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            return lower if upper == math.inf else lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None
