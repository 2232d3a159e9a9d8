"""One Grafana dashboard per environment, generated from the config with grafana-foundation-sdk's builders.

A row per model rather than one row repeated over a `model` variable: what a model's panels draw depends on its own
config (its SLO's thresholds, which budgets it counts against and their limits, whether it has an SLO or guardrails
at all), and a repeated row can only vary its queries, not its thresholds or which panels exist.

The panels read the gateway's series (`llmctl.gateway.metrics`) and the recording rules; they never recompute an SLI
the rules already record, so the dashboard and the alerts cannot disagree about a burn rate.
"""
from __future__ import annotations

import hashlib
import json
import re
from itertools import count
from string import ascii_uppercase
from typing import Any, TypeVar

from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.gauge import Panel as Gauge
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

from llmctl.config.schema import Budget, Slo, duration_seconds
from llmctl.desired import Desired
from llmctl.gateway.metrics import (
    BUDGET_SPENT,
    GATEWAY_JOB,
    GUARDRAIL_ACTIONS,
    ITL_SECONDS,
    PROMPT_REQUESTS,
    REQUEST_SECONDS,
    REQUESTS,
    SPEND,
    TOKENS,
    TTFT_SECONDS,
    UPSTREAM_ERRORS,
    UPSTREAM_UP,
)
from llmctl.monitor.burn import Objective, objectives, windows
from llmctl.monitor.promql import duration, select
from llmctl.monitor.rules import BAD_RATIO, BUDGET_REMAINING, ENGINE_KV_CACHE, ENGINE_QUEUE

def slo_bad_ratio(window_s: float) -> str:
    return BAD_RATIO.format(window=duration(window_s))


Panel = Timeseries | Stat | Gauge
PanelT = TypeVar("PanelT", Timeseries, Stat, Gauge)
Steps = list[tuple[float | None, str]]  # threshold steps: (from this value up, colour); None is minus infinity

# Variables rather than fixed values: the datasource is whichever Prometheus the user picks in Grafana, and the rate
# window follows the scrape interval Grafana knows for it (at least four scrapes).
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE_INTERVAL = "$__rate_interval"
WIDTH, HEIGHT = 8, 8  # three panels a line of Grafana's 24 columns
# The latency SLO fields are all p95 targets (ttft_p95_ms, latency_p95_ms, itl_p95_ms).
QUANTILE = 0.95
SERVER_ERRORS = 'status=~"5.."'  # 4xx are the client's (rate limits, refusals, bad input), not the model's failures


def dashboard(desired: Desired) -> dict[str, Any]:
    """The environment's dashboard as JSON data: a file for Grafana's provisioning, or the `dashboard` of a call to
    its HTTP API."""
    data: dict[str, Any] = json.loads(JSONEncoder().encode(builder(desired).build()))
    return data


def dashboard_text(desired: Desired) -> str:
    return json.dumps(dashboard(desired), indent=2, sort_keys=True) + "\n"


def builder(desired: Desired) -> Dashboard:
    board = (Dashboard(f"llmctl: {desired.project} ({desired.environment})")
             .uid(uid(desired.project, desired.environment))
             .tags(["llmctl", desired.project, desired.environment])
             # Regenerated from the config at every apply: an edit made in Grafana would be silently overwritten.
             .readonly()
             .time("now-6h", "now")
             .refresh("1m")
             .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    sections = [(Row("Overview"), overview_panels(desired)),
                *((Row(f"Model {name}"), model_panels(desired, name)) for name in desired.models)]
    ids = count(1)
    for row, panels in sections:
        board.with_row(row.id(next(ids)))
        for panel in panels:
            board.with_panel(panel.id(next(ids)))
    return board


def uid(project: str, environment: str) -> str:
    """Stable per environment, so each apply updates the same dashboard: Grafana allows 40 characters of letters,
    digits, '-' and '_', so a readable prefix plus a hash of the exact names (which may hold '.')."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", f"{project}-{environment}")[:20]
    digest = hashlib.sha256(f"{project}\0{environment}".encode()).hexdigest()[:12]
    return f"llmctl-{readable}-{digest}"


# --- the rows ----------------------------------------------------------------------------------------------------


def overview_panels(desired: Desired) -> list[Panel]:
    return [
        stat("Gateway up", "none", [query(f"sum({select('up', job=GATEWAY_JOB)})", "up")],
             steps=[(None, "red"), (1, "green")],
             description="Gateway processes answering Prometheus's scrape."),
        timeseries("Requests/s by model", "reqps", [query(per_second(REQUESTS, "model"), "{{model}}")]),
        timeseries("Error rate by model", "percentunit", [query(error_ratio("model"), "{{model}}")],
                   description="Share of requests answered with a 5xx."),
        *(budget_gauge(budget) for budget in desired.budgets.values()),
    ]


def model_panels(desired: Desired, name: str) -> list[Panel]:
    model = desired.models[name]
    slo = desired.slos[model.slo] if model.slo else None
    found = {o.sli: o for o in objectives(slo)} if slo else {}
    panels: list[Panel] = [
        timeseries("Requests/s by status", "reqps", [query(per_second(REQUESTS, "status", model=name), "{{status}}")]),
        error_rate(name, found.get("errors")),
        timeseries("Tokens/s", "short", [query(per_second(TOKENS, "direction", model=name), "{{direction}}")]),
        latency("TTFT p95", TTFT_SECONDS, name, found.get("ttft"), "time to the first streamed token"),
        latency("Latency p95", REQUEST_SECONDS, name, found.get("latency"), "whole request latency"),
        latency("ITL p95", ITL_SECONDS, name, found.get("itl"), "gap between streamed tokens"),
    ]
    if slo is not None and found:
        panels.append(budget_remaining(name, slo))
        panels += burn_rate(name, slo, list(found.values()))
    if model.guardrails:  # the gateway only counts actions of the guardrails a model declares
        actions = per_second(GUARDRAIL_ACTIONS, "rule, action", model=name)
        panels.append(timeseries("Guardrail actions/s by rule", "short", [query(actions, "{{rule}}: {{action}}")]))
    panels.append(timeseries("Spend USD/h by team", "currencyUSD",
                             [query(f"{per_second(SPEND, 'team', model=name)} * 3600", "{{team}}")]))
    panels += [budget_spend(desired.budgets[budget]) for budget in desired.budgets_of(name)]
    panels += engine_panels(name)
    panels += version_panels(desired, name)
    panels += later_panels(desired, name)
    return panels


def version_panels(desired: Desired, name: str) -> list[Panel]:
    """A model that rolls out step by step, or whose prompt runs an A/B test, has versions side by side: their
    traffic and errors apart (the `version` and `prompt_version` labels)."""
    model = desired.models[name]
    panels: list[Panel] = []
    if model.rollout and desired.rollouts[model.rollout].strategy != "all_at_once":
        panels.append(timeseries("Requests/s by rollout version", "reqps",
                                 [query(per_second(REQUESTS, "version", model=name), "{{version}}")],
                                 description="stable, and canary while a rollout runs the new version beside it."))
        panels.append(timeseries("Error rate by rollout version", "percentunit",
                                 [query(error_ratio("version", model=name), "{{version}}")]))
    prompt = desired.prompts.get(model.prompt or "")
    if prompt is not None and prompt.variants:
        panels.append(timeseries(f"Requests/s by version of prompt {prompt.name}", "reqps", [query(
            per_second(PROMPT_REQUESTS, "prompt_version", model=name), "v{{prompt_version}}")]))
    return panels


def later_panels(desired: Desired, name: str) -> list[Panel]:
    """Where each model's cache-hit and user-feedback panels join, once the gateway exports those series (a later
    issue): none of them exists yet, and a panel over an invented series would only ever show no data."""
    return []


# --- the panels --------------------------------------------------------------------------------------------------


def error_rate(name: str, objective: Objective | None) -> Timeseries:
    return timeseries("Error rate", "percentunit", [query(error_ratio(model=name), "errors")],
                      description="Share of requests answered with a 5xx; the dashed line is the SLO's error_rate.",
                      steps=line_at(objective.budget) if objective else None)


def error_ratio(by: str | None = None, **labels: str) -> str:
    """The share of 5xx answers; `or ... * 0`: traffic without a single 5xx yet is a ratio of 0, not a gap."""
    errors, every = per_second(REQUESTS, by, SERVER_ERRORS, **labels), per_second(REQUESTS, by, **labels)
    return f"{errors} / {every} or {every} * 0"


def latency(title: str, histogram: str, name: str, objective: Objective | None, what: str) -> Timeseries:
    expr = f"histogram_quantile({QUANTILE}, {per_second(f'{histogram}_bucket', 'le', model=name)})"
    return timeseries(title, "s", [query(expr, "p95")],
                      description=f"95th percentile {what} at the gateway"
                                  + (f"; the dashed line is the SLO's {objective.field}." if objective else "."),
                      steps=line_at(objective.threshold_s) if objective else None)


def budget_remaining(name: str, slo: Slo) -> Stat:
    return stat("Error budget remaining", "percentunit",
                [query(select(BUDGET_REMAINING, model=name, slo=slo.name), "{{sli}}")],
                steps=[(None, "red"), (0, "orange"), (0.25, "green")],
                description=f"Share of each objective's error budget left over the SLO's {slo.window} window "
                            "(below 0: overspent).")


def burn_rate(name: str, slo: Slo, found: list[Objective]) -> list[Timeseries]:
    """The panel, or none when nothing can burn: only zero budgets, or a window shorter than every alert's."""
    window_s = duration_seconds(slo.window)
    alerts = windows(window_s)
    # A zero budget (error_rate: 0, min_goodput: 1) has no rate to burn at: any bad event is infinitely fast.
    burning = [o for o in found if o.budget > 0]
    targets = [query(f"{select(slo_bad_ratio(alert.long_s), model=name, slo=slo.name, sli=o.sli)} / {o.budget:g}",
                     f"{o.sli} over {duration(alert.long_s)}")
               for o in burning for alert in alerts]
    fires = "; ".join(f"{alert.severity} above {alert.factor(window_s):.3g} over {duration(alert.long_s)}"
                      f" (and {duration(alert.short_s)})" for alert in alerts)
    return [timeseries("Burn rate", "short", targets, steps=line_at(1.0),
                       description=f"How fast each objective spends its error budget: at 1 (the dashed line) it lasts "
                                   f"exactly the {slo.window} window. Alerts: {fires}.")] if targets else []


def budget_spend(budget: Budget) -> Timeseries:
    return timeseries(f"Budget {budget.name}", "currencyUSD",
                      [query(budget_spent(budget), f"spent this {budget.period}")],
                      steps=budget_steps(budget),
                      description=f"Spend in the current {budget.period} against the {budget.limit_usd:g} USD limit "
                                  "(dashed; the alert levels below it).")


def budget_gauge(budget: Budget) -> Gauge:
    panel = (Gauge().title(f"Budget {budget.name}").description(f"Spent this {budget.period} of the limit.")
             .datasource(DATASOURCE).height(HEIGHT).span(WIDTH).unit("currencyUSD").min(0).max(budget.limit_usd)
             .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])).thresholds(thresholds(budget_steps(budget))))
    return with_targets(panel, [query(budget_spent(budget), budget.name)])


def budget_spent(budget: Budget) -> str:
    # max, not sum: every gateway replica exports the same ledger total.
    return f"max({select(BUDGET_SPENT, budget=budget.name)})"


def budget_steps(budget: Budget) -> Steps:
    warnings = sorted({share * budget.limit_usd for share in budget.alert_at if share < 1})
    return [(None, "green"), *((level, "orange") for level in warnings), (budget.limit_usd, "red")]


def engine_panels(name: str) -> list[Panel]:
    """Saturation, for every model: an engine that exports no metrics (a hosted model, or llama.cpp without
    --metrics) shows 'no engine metrics' rather than losing the panels."""
    return [
        stat("Replicas up", "none", [query(f"sum({select(UPSTREAM_UP, model=name)})", "up")],
             steps=[(None, "red"), (1, "green")], description="Replicas that answered the gateway's last probe."),
        timeseries("Upstream errors/s by reason", "short",
                   [query(per_second(UPSTREAM_ERRORS, "reason", model=name), "{{reason}}")]),
        timeseries("Engine queue", "short", [query(select(ENGINE_QUEUE, model=name), "waiting requests")],
                   no_value="no engine metrics"),
        timeseries("KV-cache use", "percentunit", [query(select(ENGINE_KV_CACHE, model=name), "KV cache")],
                   no_value="no engine metrics", maximum=1.0),
    ]


# --- building blocks ---------------------------------------------------------------------------------------------


def timeseries(title: str, unit: str, targets: list[Dataquery], *, description: str = "",
               steps: Steps | None = None, no_value: str | None = None, maximum: float | None = None) -> Timeseries:
    """A time series panel; `steps` are drawn as dashed lines (an SLO target, a budget's limit)."""
    panel = (Timeseries().title(title).datasource(DATASOURCE).height(HEIGHT).span(WIDTH).unit(unit).min(0)
             .legend(VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST)
                     .placement(LegendPlacement.BOTTOM))
             # Every series at the hovered instant, largest first: statuses, windows or teams side by side.
             .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))
    with_targets(panel, targets)
    if description:
        panel.description(description)
    if steps is not None:
        panel.thresholds(thresholds(steps))
        panel.thresholds_style(GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED))
    if no_value is not None:
        panel.no_value(no_value)
    if maximum is not None:
        panel.max(maximum)
    return panel


def stat(title: str, unit: str, targets: list[Dataquery], *, steps: Steps, description: str) -> Stat:
    panel = (Stat().title(title).description(description).datasource(DATASOURCE).height(HEIGHT).span(WIDTH)
             .unit(unit).reduce_options(ReduceDataOptions().calcs(["lastNotNull"])).thresholds(thresholds(steps)))
    return with_targets(panel, targets)


def with_targets(panel: PanelT, targets: list[Dataquery]) -> PanelT:
    """Each target gets its own refId (A, B, ... Z, AA, BB, ...): Grafana tells a panel's queries apart by it."""
    for index, target in enumerate(targets):
        panel.with_target(target.ref_id(ascii_uppercase[index % 26] * (index // 26 + 1)))
    return panel


def line_at(value: float) -> Steps:
    return [(None, "green"), (value, "red")]


def thresholds(steps: Steps) -> ThresholdsConfig:
    """Grafana's steps: each colour from its value up; the first step's value is None, meaning minus infinity."""
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in steps])


def query(expr: str, legend: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def per_second(metric: str, by: str | None = None, *matchers: str, **labels: str) -> str:
    """A counter's rate summed over every label but `by` (keys, teams, gateway replicas)."""
    total = f"sum by ({by}) " if by else "sum"
    return f"{total}(rate({select(metric, *matchers, **labels)}[{RATE_INTERVAL}]))"
