"""Prometheus rules generated from the config: what the SLOs and budgets promise, as recording rules and alerts.

Per model and SLO target: the share of bad events over each burn window (recorded), the error budget left over the
SLO's window, and multi-window, multi-burn-rate alerts (`burn.py`). Per budget: alert_at thresholds, the limit
reached, and a spend rate that would pass the limit before the period ends. For the environment: the gateway or a
model down, upstream error spikes, guardrail block spikes. Every alert is labelled with its `kind` (what
`monitoring.routes` route on), a `severity`, and what it is about; its annotations give the measured value, the
limit, and a runbook line.
"""
from __future__ import annotations

from collections.abc import Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmctl.config.schema import Budget, Model, Slo, duration_seconds
from llmctl.desired import Desired
from llmctl.gateway import metrics
from llmctl.monitor.burn import Objective, objectives, windows
from llmctl.monitor.engines import saturation
from llmctl.monitor.promql import duration as prom_duration
from llmctl.monitor.promql import le, select

# Recording rules other parts read (dashboards, `llmctl monitor`): names in the `level:metric:operations` form.
BAD_RATIO = "llmctl:slo_bad:ratio_rate{window}"  # {model, slo, sli}: share of bad events over the window
BAD_EVENTS = "llmctl:slo_bad_events:rate5m"  # {model, slo, sli}: bad events per second
EVENTS = "llmctl:slo_events:rate5m"  # {model, slo, sli}: events the objective counts, per second
BUDGET_REMAINING = "llmctl:slo_budget_remaining:ratio"  # {model, slo, sli}: 1 = untouched, 0 = spent, < 0 overspent
REQUEST_RATE = "llmctl:requests:rate{window}"  # {model}: requests per second the SLIs count
ENGINE_QUEUE = "llmctl:engine_queue:requests"  # {model}: requests waiting in the engine
ENGINE_KV_CACHE = "llmctl:engine_kv_cache:ratio"  # {model}: share of the KV cache in use

SLI_TEXT = {"errors": "requests failed", "ttft": "requests over the {threshold} TTFT threshold",
            "latency": "requests over the {threshold} latency threshold",
            "itl": "token gaps over the {threshold} inter-token threshold",
            "goodput": "requests missing a per-request target"}
# Health alerts: share of requests failing upstream, and of requests blocked by one guardrail rule.
UPSTREAM_ERROR_SHARE = 0.10
GUARDRAIL_BLOCK_SHARE = 0.05
GUARDRAIL_SPIKE_FACTOR = 3.0
# Users' ratings: a share of negative ones over an hour, once there are enough ratings for a share to mean something.
NEGATIVE_FEEDBACK_SHARE = 0.3
MIN_RATINGS_PER_HOUR = 10
BUDGET_PROJECTION_WINDOW = "6h"
SHORTEST_S = 300.0  # the 5m ratio, which the window's ratio averages  # the spend rate a projection extrapolates
RUNBOOK = {
    "slo": "`llmctl monitor` shows which target burns; `llmctl status` shows the last change: if the burn started "
           "with it, re-apply the previous llmops.yaml; if the engine is saturated, add replicas.",
    "budget": "`llmctl cost` and `llmctl monitor` show which model and key spend; raise limit_usd, lower traffic "
              "or move the model to a cheaper one.",
    "down": "`llmctl status` shows the process and its log; `llmctl apply` restarts what is gone.",
    "errors": "the gateway log names the upstream failures; `llmctl status` shows replica health.",
    "guardrails": "the audit log (.llmctl/gateway/audit.jsonl) names the rule and key: an attack or a broken "
                  "client; tune the rule if the blocks are false positives.",
    "feedback": "the ratings' version and prompt_version labels say whether a rollout or prompt variant brought "
                "it: `llmctl rollout abort`, or re-apply the previous prompt; `llmctl eval` to see answers.",
}


class Rule(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    record: str | None = None
    alert: str | None = None
    expr: str
    for_: str | None = Field(None, alias="for")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RuleGroup(BaseModel):
    name: str
    interval: str | None = None
    rules: list[Rule]


def rule_files(desired: Desired) -> dict[str, list[RuleGroup]]:
    """The rule groups by file (slos, budgets, health, engines; empty ones left out). Separate files keep each
    promtool test file to the rules it exercises: promtool evaluates every rule of its files at every step."""
    files = {
        "slos": [RuleGroup(name=f"llmctl-slo-{model.name}", rules=list(_slo_rules(desired, model, slo)))
                 for model in desired.models.values() if (slo := _slo_of(desired, model)) and objectives(slo)],
        "budgets": [RuleGroup(name=f"llmctl-budget-{name}", rules=list(_budget_rules(desired, budget)))
                    for name, budget in desired.budgets.items()],
        "health": [RuleGroup(name="llmctl-health", rules=list(_health_rules(desired)))],
        "engines": [RuleGroup(name="llmctl-engines", rules=rules)] if (rules := list(_engine_rules(desired))) else [],
    }
    return {name: groups for name, groups in files.items() if groups}


def rule_groups(desired: Desired) -> list[RuleGroup]:
    return [group for groups in rule_files(desired).values() for group in groups]


class _Dumper(yaml.SafeDumper):
    """Multi-line PromQL as YAML block text, readable in a review, rather than one escaped line."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def rules_yaml(groups: list[RuleGroup]) -> str:
    data = {"groups": [group.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=False)
                       for group in groups]}
    for group in data["groups"]:
        for rule in group["rules"]:
            for empty in [k for k in ("labels", "annotations") if not rule[k]]:
                del rule[empty]
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


# --- SLOs --------------------------------------------------------------------------------------------------------


def _slo_of(desired: Desired, model: Model) -> Slo | None:
    return desired.slos.get(model.slo) if model.slo else None


def _slo_rules(desired: Desired, model: Model, slo: Slo) -> Iterator[Rule]:
    window_s = duration_seconds(slo.window)
    spans = sorted({s for burn in windows(window_s) for s in (burn.long_s, burn.short_s)} | {SHORTEST_S})
    for span in spans:
        yield Rule(record=REQUEST_RATE.format(window=prom_duration(span)), expr=_requests_rate(model.name, span),
                   labels={"model": model.name})
    for objective in objectives(slo):
        labels = {"model": model.name, "slo": slo.name, "sli": objective.sli}
        for span in spans:
            yield Rule(record=BAD_RATIO.format(window=prom_duration(span)),
                       expr=_bad_ratio(model.name, objective, span), labels=labels)
        # Over the whole window, from the 5m event rates summed (a rate over 28 days at every evaluation would read
        # a month of raw samples each time). Rates, not the 5m ratios: an idle 5 minutes is a ratio of 0/0, NaN,
        # which would poison a mean for the whole window; its rates are 0 and add nothing.
        bad, events = _events(model.name, objective, SHORTEST_S)
        yield Rule(record=BAD_EVENTS, expr=bad, labels=labels)
        yield Rule(record=EVENTS, expr=events, labels=labels)
        w = prom_duration(window_s)
        over_window = Rule(record=BAD_RATIO.format(window=w), labels=labels,
                           expr=f"sum_over_time({select(BAD_EVENTS, **labels)}[{w}])\n/\n"
                                f"sum_over_time({select(EVENTS, **labels)}[{w}])")
        yield over_window
        yield Rule(record=BUDGET_REMAINING, labels=labels,
                   expr=f"1 - {select(over_window.record or '', **labels)} / {objective.budget:g}")
        yield from _burn_alerts(desired, model, slo, objective, window_s)


def _requests_rate(model: str, span: float) -> str:
    # Client errors (4xx: auth, rate limits, budget refusals, guardrail blocks) are not the service failing.
    return f'sum by (model) (rate({metrics.REQUESTS}{{model="{model}",status!~"4.."}}[{prom_duration(span)}]))'


def _bad_ratio(model: str, objective: Objective, span: float) -> str:
    bad, events = _events(model, objective, span)
    return f"(\n{bad}\n)\n/\n{events}"


def _events(model: str, objective: Objective, span: float) -> tuple[str, str]:
    """The rates of bad events and of all events an objective counts."""
    w = prom_duration(span)
    if objective.sli == "errors":
        # A model that never failed has no 5xx series at all: its bad rate is 0, not absent.
        events = _requests_rate(model, span)
        return (f'sum by (model) (rate({metrics.REQUESTS}{{model="{model}",status=~"5.."}}[{w}]))\nor\n0 * {events}',
                events)
    if objective.sli == "goodput":
        return (f'sum by (model) (rate({metrics.SLO_REQUESTS}{{model="{model}",outcome="bad"}}[{w}]))',
                f'sum by (model) (rate({metrics.SLO_REQUESTS}{{model="{model}"}}[{w}]))')
    histogram = {"ttft": metrics.TTFT_SECONDS, "latency": metrics.REQUEST_SECONDS, "itl": metrics.ITL_SECONDS}
    name = histogram[objective.sli]
    assert objective.threshold_s is not None
    events = f'sum by (model) (rate({name}_count{{model="{model}"}}[{w}]))'
    within = f'sum by (model) (rate({name}_bucket{{model="{model}",le="{le(objective.threshold_s)}"}}[{w}]))'
    return f"{events}\n-\n{within}", events


def _burn_alerts(desired: Desired, model: Model, slo: Slo, objective: Objective, window_s: float) -> Iterator[Rule]:
    labels = {"model": model.name, "slo": slo.name, "sli": objective.sli}
    for severity in ("page", "ticket"):
        pairs = [burn for burn in windows(window_s) if burn.severity == severity]
        if not pairs:
            continue
        clauses = []
        for burn in pairs:
            limit = burn.factor(window_s) * objective.budget
            long_w, short_w = prom_duration(burn.long_s), prom_duration(burn.short_s)
            clauses.append(
                f"(\n  {select(BAD_RATIO.format(window=long_w), **labels)} > {limit:.6g}\n"
                f"  and {select(BAD_RATIO.format(window=short_w), **labels)} > {limit:.6g}\n"
                f"  and on (model) {select(REQUEST_RATE.format(window=long_w), model=model.name)}"
                f" >= {slo.alert_min_rps:g}\n)")
        what = SLI_TEXT[objective.sli].format(threshold=_ms(objective.threshold_s))
        yield Rule(
            alert="ErrorBudgetBurn",
            expr="\nor\n".join(clauses),
            labels={**_scope(desired), **labels, "severity": severity, "kind": f"slo_{severity}"},
            annotations={
                "summary": f"model {model.name}, SLO {slo.name}: {{{{ $value | humanizePercentage }}}} of {what} "
                           f"over the alert's long window",
                "description": (
                    f"{objective.field} allows {objective.budget:.4g} of them bad over {slo.window}. This {severity}s "
                    "when the error budget burns "
                    + " or ".join(f"{b.factor(window_s):.3g}x too fast ({b.factor(window_s) * objective.budget:.4g} bad "
                                  f"over {prom_duration(b.long_s)} and {prom_duration(b.short_s)}: {b.budget_share:.0%} "
                                  f"of the budget in {prom_duration(b.long_s)})" for b in pairs)
                    + f", at {slo.alert_min_rps:g} requests/s or more."),
                "runbook": RUNBOOK["slo"],
            })


# --- budgets -----------------------------------------------------------------------------------------------------


def _budget_rules(desired: Desired, budget: Budget) -> Iterator[Rule]:
    labels = {**_scope(desired), "budget": budget.name}
    spent = select(metrics.BUDGET_SPENT, budget=budget.name)
    period = f"this {budget.period}"
    for share in sorted(set(budget.alert_at)):
        yield Rule(alert="BudgetThresholdReached", expr=f"{spent} >= {share * budget.limit_usd:.6g}",
                   labels={**labels, "threshold": f"{share:g}", "severity": "ticket", "kind": "budget"},
                   annotations={"summary": f"budget {budget.name}: ${{{{ $value | printf \"%.2f\" }}}} spent {period}, "
                                           f"past {share:.0%} of ${budget.limit_usd:g}",
                                "runbook": RUNBOOK["budget"]})
    blocking = budget.on_exceed == "block"
    yield Rule(alert="BudgetExhausted", expr=f"{spent} >= {budget.limit_usd:.6g}",
               labels={**labels, "severity": "page" if blocking else "ticket", "kind": "budget"},
               annotations={"summary": f"budget {budget.name}: ${{{{ $value | printf \"%.2f\" }}}} spent {period}, "
                                       f"the ${budget.limit_usd:g} limit is reached"
                                       + ("; the gateway refuses its models' requests (429)" if blocking
                                          else "; requests still pass (on_exceed: warn)"),
                            "runbook": RUNBOOK["budget"]})
    rate = f"rate({select(metrics.BUDGET_SPEND, budget=budget.name)}[{BUDGET_PROJECTION_WINDOW}])"
    remaining = f"({select(metrics.BUDGET_PERIOD_END, budget=budget.name)} - time())"
    yield Rule(alert="BudgetProjectedOverrun", for_="30m",
               expr=f"(\n  {spent} + {rate} * {remaining}\n) > {budget.limit_usd:.6g}\n"
                    f"and {spent} < {budget.limit_usd:.6g}",
               labels={**labels, "severity": "ticket", "kind": "budget"},
               annotations={"summary": f"budget {budget.name}: at the last {BUDGET_PROJECTION_WINDOW}'s spend rate, "
                                       f"${{{{ $value | printf \"%.2f\" }}}} by the end of {period}, over the "
                                       f"${budget.limit_usd:g} limit",
                            "runbook": RUNBOOK["budget"]})


# --- health ------------------------------------------------------------------------------------------------------


def _health_rules(desired: Desired) -> Iterator[Rule]:
    scope = _scope(desired)
    down_for = prom_duration(duration_seconds(desired.monitoring.down_for))
    job = f'{{job="{metrics.GATEWAY_JOB}"}}'
    # Pages only when no gateway replica answers: one replica of several down leaves every model reachable.
    yield Rule(alert="GatewayDown", for_=down_for,
               expr=f"up{job} == 0 unless on (job) max by (job) (up{job}) == 1",
               labels={**scope, "severity": "page", "kind": "down"},
               annotations={"summary": f"the {desired.environment} gateway has not answered Prometheus's scrape for "
                                       f"{down_for}: no model is reachable through it",
                            "runbook": RUNBOOK["down"]})
    for model in desired.models.values():
        if model.parsed_source.hosted:
            continue  # nothing of ours to be down; its failures show as upstream errors
        yield Rule(alert="ModelDown", for_=down_for,
                   expr=f"max by (model) ({select(metrics.UPSTREAM_UP, model=model.name)}) == 0",
                   labels={**scope, "model": model.name, "severity": "page", "kind": "down"},
                   annotations={"summary": f"model {model.name}: no replica has answered the gateway's health probe "
                                           f"for {down_for}",
                                "runbook": RUNBOOK["down"]})
    yield Rule(alert="ReplicaDown", for_=down_for, expr=f"{metrics.UPSTREAM_UP} == 0",
               labels={**scope, "severity": "ticket", "kind": "down"},
               annotations={"summary": f"a replica has not answered the gateway's health probe for {down_for}; "
                                       "the others carry its traffic",
                            "runbook": RUNBOOK["down"]})
    requests = f"sum by (model) (rate({metrics.REQUESTS}[5m]))"
    yield Rule(alert="UpstreamErrorSpike", for_="5m",
               expr=f"sum by (model) (rate({metrics.UPSTREAM_ERRORS}[5m]))\n/\n{requests}\n"
                    f"> {UPSTREAM_ERROR_SHARE:g}",
               labels={**scope, "severity": "ticket", "kind": "errors"},
               annotations={"summary": f"{{{{ $value | humanizePercentage }}}} of requests failed upstream over 5m "
                                       f"(alerts above {UPSTREAM_ERROR_SHARE:.0%})",
                            "runbook": RUNBOOK["errors"]})
    def blocks(w: str) -> str:
        return (f'sum by (model, rule) (rate({metrics.GUARDRAIL_ACTIONS}{{action="block"}}[{w}]))\n'
                f"/ on (model) group_left\nsum by (model) (rate({metrics.REQUESTS}[{w}]))")
    yield Rule(alert="GuardrailBlockSpike", for_="10m",
               expr=f"(\n{blocks('15m')}\n) > {GUARDRAIL_BLOCK_SHARE:g}\nand\n(\n{blocks('15m')}\n)"
                    f" > {GUARDRAIL_SPIKE_FACTOR:g} * (\n{blocks('1d')}\n)",
               labels={**scope, "severity": "ticket", "kind": "guardrails"},
               annotations={"summary": f"{{{{ $value | humanizePercentage }}}} of requests blocked by one guardrail "
                                       f"rule over 15m: above {GUARDRAIL_BLOCK_SHARE:.0%} and "
                                       f"{GUARDRAIL_SPIKE_FACTOR:g}x its share over the last day",
                            "runbook": RUNBOOK["guardrails"]})
    ratings = f"sum by (model) (increase({metrics.FEEDBACK}[1h]))"
    negative = f'sum by (model) (increase({metrics.FEEDBACK}{{rating="negative"}}[1h]))'
    yield Rule(alert="NegativeFeedbackHigh", for_="15m",
               expr=f"(\n{negative}\n/\n{ratings}\n) > {NEGATIVE_FEEDBACK_SHARE:g}\nand\n"
                    f"{ratings} >= {MIN_RATINGS_PER_HOUR}",
               labels={**scope, "severity": "ticket", "kind": "feedback"},
               annotations={"summary": f"{{{{ $value | humanizePercentage }}}} of the answers users rated over the "
                                       f"last hour were rated down (alerts above {NEGATIVE_FEEDBACK_SHARE:.0%}, from "
                                       f"{MIN_RATINGS_PER_HOUR} ratings an hour)",
                            "runbook": RUNBOOK["feedback"]})


def _engine_rules(desired: Desired) -> Iterator[Rule]:
    for model in desired.models.values():
        found = saturation(model.engine) if model.engine else None
        if found is None:
            continue
        selector = {"job": metrics.ENGINE_JOB, "model": model.name}
        if found.queue:
            yield Rule(record=ENGINE_QUEUE, labels={"model": model.name},
                       expr=f"sum by (model) ({select(found.queue, **selector)})")
        if found.kv_cache:
            yield Rule(record=ENGINE_KV_CACHE, labels={"model": model.name},
                       expr=f"max by (model) ({select(found.kv_cache, **selector)})")


# --- helpers -----------------------------------------------------------------------------------------------------


def _scope(desired: Desired) -> dict[str, str]:
    return {"project": desired.project, "environment": desired.environment}


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:g} ms"
