"""The evals as apply and `llmctl eval` run them: routes from the resolved config, lock and endpoints."""
from __future__ import annotations

from llmctl.desired import Desired
from llmctl.errors import LlmctlError, did_you_mean
from llmctl.evals.model import EvalReport, EvalResult
from llmctl.evals.run import Progress, make_setup, run_evals
from llmctl.gateway.build import prices
from llmctl.resolve import Resolved, resolve_applied
from llmctl.state import LocalBackend, State
from llmctl.workspace import Workspace


def evaluate(resolved: Resolved, endpoints: dict[str, list[str]], runs: list[str],
             baseline: dict[str, EvalResult], progress: Progress, repeat: int | None = None,
             use_cache: bool = True, versions: dict[str, str] | None = None) -> EvalReport:
    setup = make_setup(resolved.desired, resolved.lock, endpoints, prices(resolved), resolved.workspace.run_dir,
                       baseline, use_cache, versions)
    return run_evals(setup, runs, repeat, progress)


def deployed_evals(state: State, workspace: Workspace, models: list[str] | None,
                   names: list[str] | None) -> tuple[Resolved, list[str]]:
    """What is deployed, and the MODEL/EVAL runs asked for: of the models named (else every deployed one), their
    evals named (else all of them)."""
    if not state.desired or not state.endpoints:
        raise LlmctlError("nothing is deployed in this environment: run `llmctl apply` first")
    resolved = resolve_applied(workspace, Desired.from_parts(state.desired, workspace.config_dir), state.lock)
    desired = resolved.desired
    unknown = [name for name in models or [] if not state.endpoints.get(name)]
    if unknown:
        raise LlmctlError(f"model {', '.join(unknown)} has no endpoint in state (deployed: "
                          f"{', '.join(sorted(state.endpoints)) or 'none'})")
    declared = {evaluation for model in desired.models.values() for evaluation in model.evals}
    missing = [name for name in names or [] if name not in declared]
    if missing:
        raise LlmctlError(f"no deployed model names eval {', '.join(missing)}{did_you_mean(missing[0], declared)} "
                          f"(deployed evals: {', '.join(sorted(declared)) or 'none'})")
    runs = [f"{name}/{evaluation}" for name, model in desired.models.items()
            if state.endpoints.get(name) and (not models or name in models)
            for evaluation in model.evals if not names or evaluation in names]
    if not runs:
        raise LlmctlError("no deployed model names an eval" + (f" among {', '.join(models)}" if models else "")
                          + ": add `evals: [NAME]` to a model and apply")
    return resolved, runs


def record(backend: LocalBackend, report: EvalReport) -> None:
    """Keep each eval's last run in state (the next run's baseline); results are observations: the serial stays."""
    state = backend.read()
    state.evals = {**state.evals, **report.for_state()}
    backend.write(state)
