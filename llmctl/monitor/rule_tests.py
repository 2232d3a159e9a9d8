"""A `promtool test rules` file written beside every rule file: synthetic series fed through each kind of alert,
asserting when it fires (with its labels and rendered annotations) and when it stays quiet.

Per SLO target: a burn of every request bad pages (and tickets); a burn at half the budget does not; an outright
burn below the alert's request-rate floor does not. Per budget: an alert_at threshold, the limit, a projected
overrun, and a spend rate that stays within the limit. For health: the gateway and each model down for longer than
`down_for`, and a blip shorter than it; an upstream error spike and a normal error rate; a guardrail block spike
and a steady high block share (no spike).

The series' values are chosen so that each alert's `$value` is exact, so the annotations can be asserted as
rendered.
"""
from __future__ import annotations

import math
import re
from typing import Any

from llmctl.config.schema import Budget, Slo, duration_seconds
from llmctl.desired import Desired
from llmctl.gateway import metrics
from llmctl.monitor.burn import Objective, objectives, windows
from llmctl.monitor.promql import duration as prom_duration
from llmctl.monitor.promql import le, select
from llmctl.monitor.rules import Rule, RuleGroup

RPS = 10.0  # requests per second in the SLO cases
MINUTES = 70  # long enough for the 1h window; the ticket's longer windows see the same 70 minutes
_VALUE = re.compile(r'\{\{ \$value \| (humanizePercentage|printf "%\.2f") \}\}')

Case = dict[str, Any]


def rule_tests(desired: Desired, groups: list[RuleGroup], rule_file: str) -> dict[str, Any]:
    """The test file for `rule_file`, which holds `groups`: cases for the alerts found there."""
    alerts = {(rule.alert, _key(rule)): rule for group in groups for rule in group.rules if rule.alert}
    tests: list[Case] = []
    for model in desired.models.values():
        slo = desired.slos.get(model.slo or "")
        for objective in objectives(slo) if slo else []:
            tests += _slo_cases(alerts, model.name, slo, objective)  # type: ignore[arg-type]
    for budget in desired.budgets.values():
        tests += _budget_cases(alerts, budget)
    tests += _down_cases(desired, alerts)
    tests += _spike_cases(alerts)
    tests += _feedback_cases(alerts)
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}


def _key(rule: Rule) -> tuple[str, ...]:
    """What tells apart alerts of one name: the labels that say what they are about."""
    return tuple(rule.labels.get(k, "") for k in ("model", "slo", "sli", "severity", "budget", "threshold"))


# --- SLO burn ----------------------------------------------------------------------------------------------------


def _slo_cases(alerts: dict, model: str, slo: Slo, objective: Objective) -> list[Case]:
    burns = [alerts[("ErrorBudgetBurn", (model, slo.name, objective.sli, severity, "", ""))]
             for severity in ("page", "ticket")
             if ("ErrorBudgetBurn", (model, slo.name, objective.sli, severity, "", "")) in alerts]
    if not burns:
        return []  # not in this rule file
    what = f"{model} {objective.field}"
    window_s = duration_seconds(slo.window)
    # Half the lowest threshold any burn window alerts at.
    quiet_share = objective.budget * min(burn.factor(window_s) for burn in windows(window_s)) / 2
    return [
        _case(f"{what}: every request bad burns the budget: it pages and tickets",
              _sli_series(model, objective, RPS, 1.0), 60 * (MINUTES - 5),
              [("ErrorBudgetBurn", [_expect(rule, 1.0) for rule in burns])]),
        _case(f"{what}: half the budget's share bad: no alert", _sli_series(model, objective, RPS, quiet_share),
              60 * (MINUTES - 5), [("ErrorBudgetBurn", [])]),
        _case(f"{what}: every request bad, but fewer than {slo.alert_min_rps:g}/s: no page",
              _sli_series(model, objective, slo.alert_min_rps / 2, 1.0), 60 * (MINUTES - 5),
              [("ErrorBudgetBurn", [])]),
    ]


def _sli_series(model: str, objective: Objective, rps: float, bad_share: float) -> list[dict[str, str]]:
    per_min = rps * 60
    bad, good = per_min * bad_share, per_min * (1 - bad_share)
    m = f'model="{model}"'
    if objective.sli == "errors":
        return [_series(f'{metrics.REQUESTS}{{{m},status="500"}}', bad),
                _series(f'{metrics.REQUESTS}{{{m},status="200"}}', good)]
    requests = _series(f'{metrics.REQUESTS}{{{m},status="200"}}', per_min)
    if objective.sli == "goodput":
        return [requests, _series(f'{metrics.SLO_REQUESTS}{{{m},outcome="bad"}}', bad),
                _series(f'{metrics.SLO_REQUESTS}{{{m},outcome="good"}}', good)]
    name = {"ttft": metrics.TTFT_SECONDS, "latency": metrics.REQUEST_SECONDS, "itl": metrics.ITL_SECONDS}[objective.sli]
    assert objective.threshold_s is not None
    return [requests, _series(f'{name}_bucket{{{m},le="{le(objective.threshold_s)}"}}', good),
            _series(f'{name}_count{{{m}}}', per_min)]


# --- budgets -----------------------------------------------------------------------------------------------------


def _budget_cases(alerts: dict, budget: Budget) -> list[Case]:
    name, limit = budget.name, budget.limit_usd
    key = lambda alert, severity, threshold="": (alert, ("", "", "", severity, name, threshold))  # noqa: E731
    exhausted = alerts.get(key("BudgetExhausted", "page" if budget.on_exceed == "block" else "ticket"))
    if exhausted is None:
        return []  # not in this rule file
    projected = alerts[key("BudgetProjectedOverrun", "ticket")]
    spent = select(metrics.BUDGET_SPENT, budget=name)
    cases = []
    if budget.alert_at:
        lowest = min(budget.alert_at)
        crossed = [alerts[key("BudgetThresholdReached", "ticket", f"{s:g}")] for s in sorted(set(budget.alert_at))
                   if s <= lowest]
        cases += [
            _case(f"budget {name}: {lowest:.0%} spent crosses alert_at {lowest:g}",
                  [_flat(spent, lowest * limit)], 60, [("BudgetThresholdReached", [_expect(r, lowest * limit)
                                                                                   for r in crossed])]),
            _case(f"budget {name}: {lowest / 2:.0%} spent: below every alert_at",
                  [_flat(spent, lowest * limit / 2)], 60, [("BudgetThresholdReached", [])]),
        ]
    cases += [
        _case(f"budget {name}: the limit is reached", [_flat(spent, limit)], 60,
              [("BudgetExhausted", [_expect(exhausted, limit)])]),
        _case(f"budget {name}: 99% spent: not exhausted", [_flat(spent, 0.99 * limit)], 60,
              [("BudgetExhausted", [])]),
    ]
    # A full projection window plus the alert's `for` in, with exactly 30 days left: at `per_min` USD a minute the
    # period ends with 10% spent + per_min * 43,200 minutes. (Before 6h of data, rate() over 6h reads low.)
    minutes = 400
    eval_s, left_s = minutes * 60, 30 * 86400
    for title, per_min, fires in (("spending at twice the limit's pace: projected overrun", 2 * limit / 43200, True),
                                  ("spending at a tenth of the limit's pace: no projected overrun",
                                   0.1 * limit / 43200, False)):
        series = [_flat(spent, 0.1 * limit, minutes), _series(select(metrics.BUDGET_SPEND, budget=name), per_min, minutes),
                  _flat(select(metrics.BUDGET_PERIOD_END, budget=name), eval_s + left_s, minutes)]
        value = 0.1 * limit + per_min * left_s / 60
        cases.append(_case(f"budget {name}: {title}", series, eval_s,
                           [("BudgetProjectedOverrun", [_expect(projected, value)] if fires else [])]))
    return cases


# --- health --------------------------------------------------------------------------------------------------------


def _down_cases(desired: Desired, alerts: dict) -> list[Case]:
    down_s = duration_seconds(desired.monitoring.down_for)
    step = max(1, min(60, math.floor(down_s / 4)))  # four samples per `down_for`, so a blip is shorter than it
    samples_down = math.ceil(down_s / step) + 2
    gateway = alerts.get(("GatewayDown", ("", "", "", "page", "", "")))
    if gateway is None:
        return []  # not in this rule file
    up = f'up{{job="{metrics.GATEWAY_JOB}",instance="127.0.0.1:8080"}}'
    cases = [
        _case("the gateway stops answering scrapes for longer than down_for: it pages",
              [{"series": up, "values": f"1x3 0x{samples_down}"}], (4 + samples_down) * step,
              [("GatewayDown", [_expect(gateway, 0.0, {"job": metrics.GATEWAY_JOB, "instance": "127.0.0.1:8080"})])],
              step),
        _case("one failed scrape, shorter than down_for: no alert",
              [{"series": up, "values": "1x3 0 1x8"}], 12 * step, [("GatewayDown", [])], step),
        _case("one gateway replica of two down for longer than down_for: the other serves, no page",
              [{"series": up, "values": f"1x3 0x{samples_down}"},
               {"series": up.replace("8080", "8081"), "values": f"1x{3 + samples_down}"}],
              (4 + samples_down) * step, [("GatewayDown", [])], step),
    ]
    for model in desired.models.values():
        rule = alerts.get(("ModelDown", (model.name, "", "", "page", "", "")))
        if rule is None:
            continue
        def replica(index: int) -> str:
            return f'{metrics.UPSTREAM_UP}{{model="{model.name}",replica="{index}"}}'
        cases += [
            _case(f"model {model.name}: its only replica fails every probe for longer than down_for: it pages",
                  [{"series": replica(0), "values": f"1x3 0x{samples_down}"}], (4 + samples_down) * step,
                  [("ModelDown", [_expect(rule, 0.0)])], step),
            _case(f"model {model.name}: one replica down, one up: not down",
                  [{"series": replica(0), "values": f"1x3 0x{samples_down}"},
                   {"series": replica(1), "values": f"1x{3 + samples_down}"}], (4 + samples_down) * step,
                  [("ModelDown", [])], step),
        ]
    return cases


def _spike_cases(alerts: dict) -> list[Case]:
    errors = alerts.get(("UpstreamErrorSpike", ("", "", "", "ticket", "", "")))
    blocks = alerts.get(("GuardrailBlockSpike", ("", "", "", "ticket", "", "")))
    if errors is None or blocks is None:
        return []  # not in this rule file
    requests = _series(f'{metrics.REQUESTS}{{model="m",status="200"}}', 600, 1440)
    failing = f'{metrics.UPSTREAM_ERRORS}{{model="m",reason="connect"}}'
    blocked = f'{metrics.GUARDRAIL_ACTIONS}{{model="m",rule="pii",action="block"}}'
    return [
        _case("20% of requests fail upstream for 15m: ticket", [requests, _series(failing, 120, 20)], 15 * 60,
              [("UpstreamErrorSpike", [_expect(errors, 0.2, {"model": "m"})])]),
        _case("1% of requests fail upstream: no alert", [requests, _series(failing, 6, 20)], 15 * 60,
              [("UpstreamErrorSpike", [])]),
        _case("blocks jump from none to 20% of requests: ticket",
              [requests, {"series": blocked, "values": "0x1400 0+120x40"}], 1440 * 60,
              [("GuardrailBlockSpike", [_expect(blocks, 0.2, {"model": "m", "rule": "pii"})])]),
        _case("a steady 20% of requests blocked all day: not a spike", [requests, _series(blocked, 120, 1440)],
              1440 * 60, [("GuardrailBlockSpike", [])]),
    ]


def _feedback_cases(alerts: dict) -> list[Case]:
    rule = alerts.get(("NegativeFeedbackHigh", ("", "", "", "ticket", "", "")))
    if rule is None:
        return []
    negative = f'{metrics.FEEDBACK}{{model="m",version="stable",prompt_version="",rating="negative"}}'
    positive = f'{metrics.FEEDBACK}{{model="m",version="stable",prompt_version="",rating="positive"}}'
    return [
        _case("half of 120 ratings an hour are negative for 15m: ticket",
              [_series(negative, 1, 120), _series(positive, 1, 120)], 90 * 60,
              [("NegativeFeedbackHigh", [_expect(rule, 0.5, {"model": "m"})])]),
        _case("every rating negative, but 6 in an hour: no alert", [_series(negative, 0.1, 120)], 90 * 60,
              [("NegativeFeedbackHigh", [])]),
        _case("a tenth of the ratings negative: no alert", [_series(negative, 0.2, 120), _series(positive, 1.8, 120)],
              90 * 60, [("NegativeFeedbackHigh", [])]),
    ]


# --- building blocks -------------------------------------------------------------------------------------------


def _case(name: str, series: list[dict[str, str]], eval_s: float, expected: list[tuple[str, list[dict]]],
          step_s: float = 60) -> Case:
    return {"name": name, "interval": prom_duration(step_s), "input_series": series,
            "alert_rule_test": [{"eval_time": prom_duration(eval_s), "alertname": alert, "exp_alerts": exp}
                                for alert, exp in expected]}


def _series(selector: str, per_step: float, steps: int = MINUTES) -> dict[str, str]:
    """A counter growing by `per_step` each step, from 0."""
    return {"series": selector, "values": f"0+{per_step:.10g}x{steps}"}


def _flat(selector: str, value: float, steps: int = 5) -> dict[str, str]:
    return {"series": selector, "values": f"{value:.10g}x{steps}"}


def _expect(rule: Rule, value: float, series_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"exp_labels": {**rule.labels, **(series_labels or {})},
            "exp_annotations": {k: _render(v, value) for k, v in rule.annotations.items()}}


def _render(template: str, value: float) -> str:
    """The annotation as Prometheus renders it, for the two value formats the rules use."""
    def one(match: re.Match[str]) -> str:
        if match.group(1) == "humanizePercentage":
            return f"{value * 100:.4g}%"  # Go's humanize of a number below 1000 is %.4g
        return f"{value:.2f}"
    return _VALUE.sub(one, template)
