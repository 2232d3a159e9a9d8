"""What is deployed now: every replica with its endpoint, pid and health, and the hosted models."""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_serializer
from rich.console import Console
from rich.table import Table

from llmctl.evals.model import EvalResult
from llmctl.evals.report import eval_lines
from llmctl.rollout.model import RolloutRecord
from llmctl.rollout.report import headline
from llmctl.gateway.usage import ledger_usage
from llmctl.monitor.live import FiringAlerts, firing_alerts
from llmctl.provider import Provider
from llmctl.state import State
from llmctl.textfmt import clean, plural
from llmctl.verify.model import ModelVerification


class Replica(BaseModel):
    address: str
    model: str
    target: str
    endpoint: str | None
    pid: int | None
    health: str
    log: str | None


class HostedModel(BaseModel):
    model: str
    source: str


class GatewayStatus(BaseModel):
    address: str
    endpoint: str
    pid: int | None
    endpoints: list[str] = Field(default_factory=list, description="Every replica's, where it runs several; a "
                                 "client may use any.")
    pids: list[int] = Field(default_factory=list)
    health: str
    serves: list[str]
    spend: dict[str, Any] | None = Field(
        None, description="Metered by the gateway: each budget over its current period, each model this month.")


class MonitoringStatus(BaseModel):
    """A monitoring process (Prometheus, Alertmanager) llmctl runs, or a monitoring object it deployed."""

    address: str
    endpoint: str | None
    pid: int | None
    health: str


class StatusReport(BaseModel):
    project: str
    environment: str
    serial: int
    updated_at: str | None
    last_change: str | None
    replicas: list[Replica]
    gateways: list[GatewayStatus] = Field(default_factory=list)
    monitoring: list[MonitoringStatus] = Field(default_factory=list)
    evals: dict[str, EvalResult] = Field(default_factory=dict, description="MODEL/EVAL -> its last run.")
    hosted: list[HostedModel]
    verification: dict[str, ModelVerification]
    alerts: FiringAlerts | None = Field(None, description="What the environment's Prometheus has firing; None: no "
                                        "Prometheus in state.")
    rollout: RolloutRecord | None = Field(None, description="The last rollout, with the weights it left.")

    @field_serializer("rollout")
    def _decision_record(self, rollout: RolloutRecord | None) -> dict[str, Any] | None:
        # The config it rolls out rides in state for `rollout promote`; a status report has no use for it.
        return None if rollout is None else rollout.model_dump(mode="json", exclude={"target", "target_lock"})

    @property
    def healthy(self) -> bool:
        # "unknown" (a cloud resource read without the CLI) is not known to be broken, so it does not fail status
        return not any(item.health.startswith(("unhealthy", "gone"))
                       for item in [*self.replicas, *self.gateways, *self.monitoring])


def status(state: State, get_provider: Callable[[str], Provider]) -> StatusReport:
    models = state.desired.models if state.desired else []
    hosted = [HostedModel(model=model.name, source=model.source) for model in models
              if model.parsed_source.hosted]
    replicas = [
        Replica(address=r.label, model=r.model, target=r.target,
                endpoint=r.endpoint or next(iter(r.attrs.get("endpoints") or []), None),
                pid=r.attrs.get("pid"), health=get_provider(r.provider).health(r), log=r.attrs.get("log"))
        for r in state.resources if not r.serves and not r.owner.startswith("monitoring.")
    ]
    monitoring = [MonitoringStatus(address=r.address, endpoint=r.endpoint, pid=r.attrs.get("pid"),
                                   health=get_provider(r.provider).health(r))
                  for r in state.resources if r.owner.startswith("monitoring.")]
    gateways = [GatewayStatus(address=r.address, endpoint=r.endpoint or "-", pid=r.attrs.get("pid"),
                              endpoints=r.attrs.get("endpoints", []),
                              pids=[p["pid"] for p in r.attrs.get("processes", [])],
                              health=get_provider(r.provider).health(r), serves=r.serves,
                              spend=ledger_usage(Path(r.attrs["spec_path"])))
                for r in state.resources if r.serves]
    return StatusReport(project=state.project, environment=state.environment, serial=state.serial,
                        updated_at=state.updated_at, last_change=state.last_change, replicas=replicas, gateways=gateways,
                        monitoring=monitoring, evals=state.evals, hosted=hosted, alerts=firing_alerts(state),
                        rollout=state.rollout,
                        verification={model: ModelVerification.model_validate(result)
                                      for model, result in state.verification.items()})


def _gateway_lines(gateway: GatewayStatus) -> list[str]:
    if len(gateway.endpoints) > 1:
        where = (f"{len(gateway.endpoints)} replicas {', '.join(gateway.endpoints)} ({gateway.health}), pids "
                 f"{', '.join(map(str, gateway.pids))}")
    else:
        where = f"{gateway.endpoint} ({gateway.health}), pid {gateway.pid or '-'}"
    lines = [f"gateway {where}: serves {', '.join(gateway.serves)}"]
    spend = gateway.spend or {}
    for name, budget in spend.get("budgets", {}).items():
        alerts = f"; alerts crossed: {', '.join(f'{a:.0%}' for a in budget['alerts'])}" if budget["alerts"] else ""
        lines.append(f"  budget {name}: ${budget['spent_usd']:.4f} spent this {budget['period']} "
                     f"(since {budget['period_start'][:10]}), {budget['requests']} requests{alerts}")
    if spend.get("unpriced_tokens"):
        lines.append(f"  {spend['unpriced_tokens']} tokens this month could not be priced (no price for their model)")
    for scope in ("team", "key"):
        for name, used in sorted(spend.get(f"{scope}s", {}).items()):
            unpriced = used["unpriced_tokens"]
            priced = f"${used['spent_usd']:.4f}" + (f" ({unpriced} tokens unpriced)" if unpriced else "")
            lines.append(f"  {scope} {name}: {priced} this month, {plural(used['requests'], 'request')}, "
                         f"{used['input_tokens']} input / {used['output_tokens']} output tokens")
    for model, rated in sorted(spend.get("feedback_24h", {}).items()):
        lines.append(f"  {model}: feedback last 24 h: {plural(rated['ratings'], 'rating')}, "
                     f"{rated['negative'] / rated['ratings']:.0%} negative")
    return lines


def _alert_lines(found: FiringAlerts) -> list[str]:
    if found.alerts is None:
        return [f"alerts: unknown: {found.error}"]
    if not found.alerts:
        return [f"alerts: none firing (Prometheus {found.prometheus})"]
    # Labels and annotations are Prometheus's text: no escape sequence of theirs reaches the terminal.
    return [f"alerts firing (Prometheus {found.prometheus}):",
            *(clean(f"  {alert.severity or '-'} {alert.name}{f' {alert.about}' if alert.about else ''}: "
                    f"{alert.summary or '-'} (since {alert.active_since or '-'})") for alert in found.alerts)]


def render_status_text(report: StatusReport) -> str:
    lines = [f"{report.project}/{report.environment}: state serial {report.serial}"
             f"{f', last change: {report.last_change}' if report.last_change else ''}"
             f"{f' at {report.updated_at}' if report.updated_at else ''}"]
    if not report.replicas and not report.hosted:
        lines.append("Nothing is deployed.")
    if report.rollout is not None:
        lines.append(headline(report.rollout) + (" (`llmctl rollout status` shows its decision record)"))
    if report.replicas:
        table = Table(box=None, pad_edge=False)
        for column in ("MODEL", "REPLICA", "ENDPOINT", "PID", "HEALTH"):
            table.add_column(column)
        for replica in report.replicas:
            table.add_row(replica.model, replica.address, replica.endpoint or "-", str(replica.pid or "-"),
                          replica.health)
        console = Console(width=200, no_color=True, highlight=False, file=io.StringIO())
        with console.capture() as captured:
            console.print(table)
        lines.append(captured.get().rstrip())
    lines += [line for gateway in report.gateways for line in _gateway_lines(gateway)]
    lines += [f"{item.address} {item.endpoint or '-'} ({item.health}), pid {item.pid or '-'}"
              for item in report.monitoring]
    lines += [f"{model.model}: hosted ({model.source}), no infrastructure" for model in report.hosted]
    for model, result in report.verification.items():
        measured = ", ".join(f"{c.target} {'n/a' if c.measured is None else f'{c.measured:g}'}" for c in result.checks)
        lines.append(f"{model}: last load test {result.at}: SLO {result.slo} {'passed' if result.passed else 'MISSED'}"
                     f"{f' ({measured})' if measured else ''}, {result.summary.rps:g} req/s")
    for result in report.evals.values():
        lines += eval_lines(result, limit=5)
    if report.alerts is not None:
        lines += _alert_lines(report.alerts)
    return "\n".join(lines)
