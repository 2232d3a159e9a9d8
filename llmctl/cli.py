"""The llmctl command line: parse, call the engine, render, exit. No logic lives here.

Each command imports what it uses when it runs, so `llmctl --help` or `validate` does not pay for the planner,
the price catalog or Pulumi.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import click
import typer

from llmctl import console
from llmctl.config.errors import ConfigError
from llmctl.errors import BudgetExceeded, EvalsFailed, LlmctlError, RolloutAborted, VerificationFailed

if TYPE_CHECKING:
    from llmctl.plan.model import Plan

app = typer.Typer(
    name="llmctl", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Terraform for LLM operations: plan and apply models, prompts, guardrails, budgets and SLOs.",
)

ConfigFile = Annotated[Path, typer.Option("-f", "--file", help="The llmops.yaml to use.", show_default=True)]
Env = Annotated[str | None, typer.Option("--env", help="Override the file's `environment`.")]
LockTimeout = Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for the state lock.")]
AutoApprove = Annotated[bool, typer.Option("--auto-approve", help="Do not ask for confirmation.")]
AllowOverBudget = Annotated[bool, typer.Option("--allow-over-budget",
                                               help="Go ahead although a budget with on_exceed: block is exceeded; "
                                                    "the plan records that it was used.")]
PlanFormat = Literal["text", "json", "markdown"]
DEFAULT_FILE = Path("llmops.yaml")


def _approve(auto_approve: bool, question: str, cancelled: str) -> None:
    """Ask, unless --auto-approve; anything but `yes` cancels with exit 1."""
    if auto_approve:
        return
    console.note(f"\n{question}\n  Only 'yes' will be accepted to approve.\n")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        raise LlmctlError("no answer could be read (no terminal?): pass --auto-approve to go ahead without asking")
    if answer.strip() != "yes":
        console.note(cancelled)
        raise typer.Exit(1)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Where to write llmops.yaml.")] = Path(".")) -> None:
    """Scaffold an llmops.yaml that runs on the local target."""
    from llmctl.scaffold import next_steps, scaffold

    written = scaffold(directory)
    console.note(f"Wrote {written}. {next_steps(written)}")


@app.command()
def validate(file: ConfigFile = DEFAULT_FILE, env: Env = None,
             format: Annotated[Literal["text", "json"], typer.Option("--format")] = "text") -> None:
    """Check the config: schema and references; every problem as FILE:LINE:COL: message."""
    from llmctl.config.load import load

    try:
        loaded = load(file, env)
    except ConfigError as exc:
        if format == "json":
            console.out(json.dumps({"valid": False, "diagnostics": [d.__dict__ for d in exc.diagnostics]}, indent=2))
            raise typer.Exit(1)
        raise
    if format == "json":
        console.out(json.dumps({"valid": True, "diagnostics": []}, indent=2))
    else:
        config = loaded.config
        console.out(f"{file}: valid ({config.project}/{config.environment}: {len(config.models)} models, "
                    f"{len(config.prompts)} prompts, {len(config.targets)} targets)")


@app.command()
def plan(file: ConfigFile = DEFAULT_FILE, env: Env = None,
         out: Annotated[Path | None, typer.Option("--out", help="Save the plan for `llmctl apply PLAN`.")] = None,
         format: Annotated[PlanFormat, typer.Option("--format")] = "text",
         detailed_exitcode: Annotated[bool, typer.Option("--detailed-exitcode",
                                                         help="Exit 2 when there are changes.")] = False,
         allow_over_budget: AllowOverBudget = False,
         refresh_only: Annotated[bool, typer.Option(
             "--refresh-only", help="Only report what changed outside llmctl since the last apply.")] = False,
         lock_timeout: LockTimeout = 30.0) -> None:
    """Show what apply would change and what it will cost."""
    from llmctl.config.load import load
    from llmctl.plan.planner import make_plan, make_refresh_plan
    from llmctl.plan.render import render
    from llmctl.providers import get_provider
    from llmctl.resolve import resolve

    resolved = resolve(load(file, env), allow_over_budget)
    backend = resolved.workspace.backend()
    with backend.lock(lock_timeout, "llmctl plan"):
        result = (make_refresh_plan if refresh_only else make_plan)(resolved, backend.read(), get_provider)
    console.out(render(result, format))
    if out:
        out.write_text(result.model_dump_json(indent=2) + "\n")
        console.note(f"Saved the plan to {out}; apply it with: llmctl apply {out}")
    if result.errors:
        raise typer.Exit(1)
    if result.budget_blocked:
        raise typer.Exit(BudgetExceeded.exit_code)
    if detailed_exitcode and result.has_changes:
        raise typer.Exit(2)


@app.command()
def apply(saved: Annotated[Path | None, typer.Argument(metavar="[PLAN]", help="A plan saved with --out.")] = None,
          file: ConfigFile = DEFAULT_FILE, env: Env = None, auto_approve: AutoApprove = False,
          skip_verify: Annotated[bool, typer.Option("--skip-verify",
                                                    help="Do not load-test changed models against their SLOs.")
                                 ] = False,
          allow_over_budget: AllowOverBudget = False,
          lock_timeout: LockTimeout = 30.0,
          ready_timeout: Annotated[float, typer.Option("--ready-timeout",
                                                       help="Seconds a model server may take to answer.")] = 300.0
          ) -> None:
    """Make the deployment match the config (or carry out a saved plan), then verify the SLOs."""
    from functools import partial

    from llmctl.apply import apply_plan
    from llmctl.config.load import load
    from llmctl.plan.planner import make_plan
    from llmctl.plan.render import render
    from llmctl.providers import get_provider
    from llmctl.resolve import resolve, resolve_saved_plan
    from llmctl.evals.gate import evaluate
    from llmctl.evals.report import render as render_evals
    from llmctl.rollout.report import render as render_rollout
    from llmctl.verify.report import render as render_report
    from llmctl.verify.run import Overrides, verify

    if saved is not None:
        result = _read_plan(saved)
        resolved = resolve_saved_plan(result)
    else:
        resolved = resolve(load(file, env), allow_over_budget)
    backend = resolved.workspace.backend()
    with backend.lock(lock_timeout, "llmctl apply"):
        if saved is None:
            result = make_plan(resolved, backend.read(), get_provider)
            console.out(render(result, "text"))
            if result.errors:
                raise typer.Exit(1)
            if not result.has_changes:
                return
            _approve(auto_approve, "Do you want to perform these actions?", "Apply cancelled.")
        with console.progress("Applying") as update:
            check = None if skip_verify else partial(verify, progress=_loadtest_progress(update), overrides=Overrides())
            grade = None if skip_verify else partial(evaluate, progress=_eval_progress(update))
            try:
                outcome = apply_plan(result, resolved, get_provider, update, ready_timeout, check, grade)
            except VerificationFailed as exc:
                console.out(render_report(exc.report, "text"))  # type: ignore[arg-type]
                raise
            except EvalsFailed as exc:
                console.out(render_evals(exc.report, "text"))  # type: ignore[arg-type]
                raise
            except RolloutAborted as exc:
                console.out(render_rollout(exc.record, "text"))  # type: ignore[arg-type]
                raise
    if outcome.rollout:
        console.out(render_rollout(outcome.rollout, "text"))
        if outcome.rollout.status == "paused":
            console.note(f"\n{outcome.rollout.reason}")
            return
    if outcome.report:
        console.out(render_report(outcome.report, "text"))
    if outcome.evals:
        console.out(render_evals(outcome.evals, "text"))
    if outcome.state.status_reason:  # what on_violation / on_failure: warn let through
        console.note(f"Warning: {outcome.state.status_reason}")
    summary = result.summary
    console.note(f"\nApply complete! {summary.add} added, {summary.change} changed, {summary.destroy} destroyed "
                 f"(state serial {outcome.state.serial}).")
    for model, urls in outcome.state.endpoints.items():
        console.note(f"  {model}: {', '.join(urls)}")


@app.command()
def loadtest(file: ConfigFile = DEFAULT_FILE, env: Env = None,
             model: Annotated[list[str] | None, typer.Option("--model", help="Test this model (repeatable).")] = None,
             users: Annotated[int | None, typer.Option("--users", help="Override the SLO's loadtest users.")] = None,
             duration: Annotated[str | None, typer.Option("--duration", help="Override its duration, e.g. 30s.")
                                 ] = None,
             format: Annotated[PlanFormat, typer.Option("--format")] = "text",
             report_dir: Annotated[Path | None, typer.Option("--report", help="Also write report.json, report.md "
                                                             "and a PNG chart per model here.")] = None,
             lock_timeout: LockTimeout = 30.0) -> None:
    """Run the SLO load test against what is deployed. Exits 4 when an SLO is missed."""
    from llmctl.config.load import load
    from llmctl.resolve import workspace_of
    from llmctl.verify.report import render as render_report
    from llmctl.verify.report import write_report_dir
    from llmctl.verify.run import deployed, parse_overrides, record, verify

    loaded = load(file, env)
    backend = workspace_of(loaded).backend()
    desired, models = deployed(backend.read(), loaded.base_dir, model)
    overrides = parse_overrides(users, duration)
    with console.progress("Load test") as update:
        report = verify(desired, backend.read().endpoints, models, _loadtest_progress(update), overrides)
    with backend.lock(lock_timeout, "llmctl loadtest"):
        record(backend, report)
    console.out(render_report(report, format))
    if report_dir is not None:
        for path in write_report_dir(report, report_dir):
            console.note(f"Wrote {path}")
    if not report.passed:
        raise typer.Exit(VerificationFailed.exit_code)


@app.command(name="eval")
def eval_command(file: ConfigFile = DEFAULT_FILE, env: Env = None,
                 model: Annotated[list[str] | None, typer.Option("--model", help="This model's evals (repeatable).")
                                  ] = None,
                 name: Annotated[list[str] | None, typer.Option("--eval", help="Only this eval (repeatable).")] = None,
                 repeat: Annotated[int | None, typer.Option("--repeat", min=1, help="Samples per case.")] = None,
                 no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask again; do not reuse answers.")
                                     ] = False,
                 format: Annotated[Literal["text", "json", "markdown", "junit"], typer.Option("--format")] = "text",
                 report_dir: Annotated[Path | None, typer.Option(
                     "--report", help="Also write report.json, report.md and junit.xml here.")] = None,
                 lock_timeout: LockTimeout = 30.0) -> None:
    """Run the deployed models' evals through the gateway. Exits 5 when an eval fails."""
    from llmctl.config.load import load
    from llmctl.evals.gate import deployed_evals, evaluate, record
    from llmctl.evals.report import render as render_evals
    from llmctl.evals.report import write_report_dir
    from llmctl.resolve import workspace_of

    workspace = workspace_of(load(file, env))
    backend = workspace.backend()
    state = backend.read()
    resolved, runs = deployed_evals(state, workspace, model, name)
    with console.progress("Evals") as update:
        report = evaluate(resolved, state.endpoints, runs, state.eval_baseline, _eval_progress(update), repeat,
                          not no_cache)
    with backend.lock(lock_timeout, "llmctl eval"):
        record(backend, report)
    console.out(render_evals(report, format, state.eval_baseline))
    if report_dir is not None:
        for path in write_report_dir(report, report_dir, state.eval_baseline):
            console.note(f"Wrote {path}")
    if not report.passed:
        raise typer.Exit(EvalsFailed.exit_code)


def _eval_progress(update: Callable[[str, str], None]) -> Callable[[str, int, int], None]:
    def show(what: str, done: int, total: int) -> None:
        update(f"eval {what}", f"{done} of {total} cases")

    return show


def _loadtest_progress(update: Callable[[str, str], None]) -> Callable[[str, dict[str, Any]], None]:
    def show(model: str, fields: dict[str, Any]) -> None:
        p95 = "-" if fields.get("p95_ms") is None else f"{fields['p95_ms']:.0f} ms"
        update(f"loadtest {model}", f"{fields['elapsed_s']:.0f}s, {fields['requests']} requests "
                                    f"({fields['failures']} failed), latency p95 {p95}")

    return show


@app.command("destroy")
def destroy_command(file: ConfigFile = DEFAULT_FILE, env: Env = None, auto_approve: AutoApprove = False,
                    lock_timeout: LockTimeout = 30.0) -> None:
    """Stop and remove everything recorded in state."""
    from llmctl.apply import destroy, destroy_plan
    from llmctl.config.load import load
    from llmctl.plan.render import render
    from llmctl.providers import get_provider
    from llmctl.resolve import workspace_of

    workspace = workspace_of(load(file, env))
    backend = workspace.backend()
    with backend.lock(lock_timeout, "llmctl destroy"):
        preview = destroy_plan(backend.read(), workspace)
        console.out(render(preview, "text"))
        if not preview.has_changes:
            return
        _approve(auto_approve, "Do you really want to destroy all resources?", "Destroy cancelled.")
        with console.progress("Destroying") as update:
            state = destroy(workspace, get_provider, update)
    console.note(f"\nDestroy complete! {preview.summary.destroy} destroyed (state serial {state.serial}).")


@app.command("status")
def status_command(file: ConfigFile = DEFAULT_FILE, env: Env = None,
                   format: Annotated[Literal["text", "json"], typer.Option("--format")] = "text") -> None:
    """What is deployed: endpoints, pids, health, firing alerts. Exits 1 when a replica is not healthy."""
    from llmctl.config.load import load
    from llmctl.providers import get_provider
    from llmctl.resolve import workspace_of
    from llmctl.status import render_status_text, status

    report = status(workspace_of(load(file, env)).backend().read(), get_provider)
    console.out(report.model_dump_json(indent=2) if format == "json" else render_status_text(report))
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
def monitor(file: ConfigFile = DEFAULT_FILE, env: Env = None,
            format: Annotated[Literal["text", "json"], typer.Option("--format", help="json: one snapshot, then exit.")
                              ] = "text",
            once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
            interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes (and "
                                                    "between the two gateway scrapes without Prometheus).")] = 5.0,
            prometheus: Annotated[str | None, typer.Option("--prometheus", metavar="URL", help="Read this Prometheus "
                                                           "instead of the environment's.")] = None) -> None:
    """Live per-model view: request rate, error rate, TTFT/latency p95 against the SLO, error budget left, spend
    against each budget, firing alerts."""
    from llmctl.config.load import load
    from llmctl.monitor.live import monitor_for
    from llmctl.monitor.view import show
    from llmctl.resolve import workspace_of

    loaded = load(file, env)
    found = monitor_for(workspace_of(loaded).backend().read(), loaded.base_dir, prometheus, interval)
    show(found.snapshot, format, once, interval)


@app.command()
def cost(file: ConfigFile = DEFAULT_FILE, env: Env = None,
         format: Annotated[PlanFormat, typer.Option("--format")] = "text") -> None:
    """The cost breakdown and budget headroom of the config. Exits 3 when a blocking budget is exceeded."""
    from llmctl.config.load import load
    from llmctl.cost.render import render_cost
    from llmctl.gateway.usage import with_actual_spend
    from llmctl.resolve import resolve

    resolved = resolve(load(file, env))
    report, checks = resolved.cost
    report = with_actual_spend(report, resolved.workspace.backend().read())
    console.out(render_cost(report, format))
    for check in [*resolved.notes, *checks]:
        console.note(f"{check.severity.capitalize()}: [{check.address}] {check.message}")
    if any(check.severity == "error" for check in checks):
        raise typer.Exit(1)
    if any(b.exceeded and b.on_exceed == "block" for b in report.budgets):
        raise typer.Exit(BudgetExceeded.exit_code)


@app.command("lock")
def lock_command(file: ConfigFile = DEFAULT_FILE, env: Env = None,
                 update: Annotated[bool, typer.Option("--update", help="Re-resolve every model, not only new ones.")
                                   ] = False) -> None:
    """Pin model revisions, sizes, prompt hashes and the prices (GPU catalog, hosted-API price library) in
    llmops.lock."""
    from llmctl.config.load import load
    from llmctl.lock import lock_path
    from llmctl.resolve import resolve

    loaded = load(file, env)
    resolved = resolve(loaded, update=update)
    lock = resolved.lock
    hosted = f", hosted-API prices {lock.api_prices}" if lock and lock.api_prices else ""
    console.note(f"Wrote {lock_path(loaded.path)} ({len(lock.models) if lock else 0} models, "
                 f"prices {resolved.catalog.version}{hosted}).")
    for check in resolved.notes:
        console.note(check.message)


rollout_app = typer.Typer(help="A rollout under way: its decision record, and the way on or back.",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")


@rollout_app.command("status")
def rollout_status(file: ConfigFile = DEFAULT_FILE, env: Env = None,
                   format: Annotated[PlanFormat, typer.Option("--format")] = "text") -> None:
    """The last rollout: its weights now, and per step and version the figures compared and the verdict."""
    from llmctl.config.load import load
    from llmctl.resolve import workspace_of
    from llmctl.rollout.report import render

    state = workspace_of(load(file, env)).backend().read()
    if state.rollout is None:
        raise LlmctlError(f"no rollout has run in {state.project}/{state.environment}")
    console.out(render(state.rollout, format))


@rollout_app.command("promote")
def rollout_promote(file: ConfigFile = DEFAULT_FILE, env: Env = None, lock_timeout: LockTimeout = 30.0,
                    skip_evals: Annotated[bool, typer.Option("--skip-evals", help="Do not run the analysis evals.")
                                          ] = False) -> None:
    """Go on with a paused or interrupted rollout from its next step; exits 4 (5: an eval failed) if it aborts."""
    from functools import partial

    from llmctl.apply import promote
    from llmctl.config.load import load
    from llmctl.evals.gate import evaluate
    from llmctl.providers import get_provider
    from llmctl.resolve import workspace_of
    from llmctl.rollout.report import render

    workspace = workspace_of(load(file, env))
    with workspace.backend().lock(lock_timeout, "llmctl rollout promote"):
        with console.progress("Rolling out") as update:
            grade = None if skip_evals else partial(evaluate, progress=_eval_progress(update))
            try:
                outcome = promote(workspace, get_provider, update, grade)
            except RolloutAborted as exc:
                console.out(render(exc.record, "text"))  # type: ignore[arg-type]
                raise
    assert outcome.rollout is not None
    console.out(render(outcome.rollout, "text"))
    if outcome.rollout.status == "paused":
        console.note(f"\n{outcome.rollout.reason}")
    else:
        console.note(f"\nPromoted: model {outcome.rollout.model} serves its new version (state serial "
                     f"{outcome.state.serial}).")


@rollout_app.command("abort")
def rollout_abort(file: ConfigFile = DEFAULT_FILE, env: Env = None, lock_timeout: LockTimeout = 30.0) -> None:
    """Go back: the new version's weight to 0, its servers stopped; only the stable version serves."""
    from llmctl.apply import abort_rollout
    from llmctl.config.load import load
    from llmctl.providers import get_provider
    from llmctl.resolve import workspace_of

    workspace = workspace_of(load(file, env))
    with workspace.backend().lock(lock_timeout, "llmctl rollout abort"):
        with console.progress("Aborting") as update:
            state = abort_rollout(workspace, get_provider, update)
    console.note(f"\nAborted: only the stable version of model {state.rollout.model if state.rollout else '?'} "
                 f"serves (state serial {state.serial}).")


guardrails_app = typer.Typer(help="The guardrails' detectors, measured on your own texts.", no_args_is_help=True)
app.add_typer(guardrails_app, name="guardrails")


@guardrails_app.command("eval")
def guardrails_eval(file: Annotated[Path, typer.Argument(help='JSONL: {"text": "...", "label": 1 or 0} a line.')],
                    format: Annotated[Literal["text", "json"], typer.Option("--format")] = "text") -> None:
    """The prompt-injection detector's recall, false positives and precision at each sensitivity on FILE."""
    from llmctl.gateway.injection_eval import evaluate, render

    console.out(render(evaluate(file), format))


gateway_app = typer.Typer(help="The gateway's own operations.", no_args_is_help=True)
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("migrate-ledger")
def gateway_migrate_ledger(
        file: ConfigFile = DEFAULT_FILE, env: Env = None,
        source: Annotated[Path | None, typer.Option("--from", help="The SQLite ledger; default: the local "
                                                    "gateway's.")] = None,
        format: Annotated[Literal["text", "json"], typer.Option("--format")] = "text") -> None:
    """Move the local gateway's SQLite ledger into the shared store gateway.store declares, once: run again, it
    moves nothing."""
    import os

    from llmctl.config.load import load
    from llmctl.gateway.ledger_move import move_ledger, render_moved, sqlite_ledger, store_of
    from llmctl.resolve import workspace_of

    loaded = load(file, env)
    store = store_of(loaded.config.gateway, loaded.base_dir, os.environ)
    try:
        moved = move_ledger(source or sqlite_ledger(workspace_of(loaded).run_dir), store)
    finally:
        store.close()
    console.out(render_moved(moved, format))


pricing_app = typer.Typer(help="The GPU and API price catalog.", no_args_is_help=True)
app.add_typer(pricing_app, name="pricing")


@pricing_app.command("refresh")
def pricing_refresh(out: Annotated[Path, typer.Option("--out", help="Where to write the snapshot.")],
                    provider: Annotated[list[str], typer.Option("--provider")] = ["aws"]) -> None:  # noqa: B006
    """Fetch gpuhunt's live catalog (needs network) and write a snapshot usable with GPUHUNT_CATALOG_DIR."""
    from llmctl.cost.catalog import refresh_snapshot

    catalog = refresh_snapshot(out, provider)
    console.note(f"Wrote {out}: catalog {catalog.version}, as of {catalog.as_of}.")


@app.command("render")
def render_command(out: Annotated[Path, typer.Option("--out", help="Directory for the files.")],
                   target: Annotated[str | None, typer.Option(
                       "--target", help="A kubernetes target of the config: its manifests.")] = None,
                   monitoring: Annotated[bool, typer.Option(
                       "--monitoring", help="The monitoring files: rules with their promtool tests, "
                       "alertmanager.yml, the Grafana dashboard.")] = False,
                   secrets_dir: Annotated[Path, typer.Option(
                       "--secrets-dir", help="Where the Alertmanager that loads alertmanager.yml finds receiver "
                       "secrets (one file per receiver).")] = Path("/etc/alertmanager/secrets"),
                   file: ConfigFile = DEFAULT_FILE, env: Env = None) -> None:
    """Write a kubernetes target's manifests (--target) and/or the monitoring files (--monitoring), for GitOps."""
    from llmctl.config.load import load
    from llmctl.gitops import render_target
    from llmctl.monitor.bundle import write
    from llmctl.providers import get_provider
    from llmctl.resolve import resolve

    if target is None and not monitoring:
        raise LlmctlError("say what to render: --target NAME (a kubernetes target's manifests) and/or --monitoring")
    resolved = resolve(load(file, env))
    written = render_target(resolved, target, out, get_provider) if target else []
    written += write(resolved.desired, out / "monitoring", secrets_dir) if monitoring else []
    for path in written:
        console.out(str(path))


@app.command()
def schema(out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
           kind: Annotated[Literal["config", "plan", "reference"], typer.Option(
               "--kind", help="config: llmops.yaml's JSON schema; plan: the JSON plan's; reference: Markdown tables.")
           ] = "config") -> None:
    """Write the JSON schema of llmops.yaml (or of the JSON plan, or the config reference)."""
    from llmctl.schemas import config_reference, config_schema, plan_schema

    text = {"config": config_schema, "plan": plan_schema, "reference": config_reference}[kind]()
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def _read_plan(path: Path) -> Plan:
    from llmctl.plan.model import Plan

    try:
        return Plan.model_validate_json(path.read_text())
    except OSError as exc:
        raise LlmctlError(f"{path}: cannot read the saved plan: {exc.strerror}") from None
    except ValueError as exc:
        raise LlmctlError(f"{path}: not a plan saved by `llmctl plan --out` ({str(exc).splitlines()[0]})") from None


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        code = 1  # 2 means "changes" for plan --detailed-exitcode; a typo must not look like that
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.err("Interrupted.")
        code = 1
    except LlmctlError as exc:
        console.err(str(exc) if isinstance(exc, ConfigError) else f"Error: {exc}")
        code = exc.exit_code
    sys.exit(code or 0)
