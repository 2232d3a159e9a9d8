"""The evals as apply and `llmctl eval` run them: routes from the resolved config, lock and endpoints."""
from __future__ import annotations

from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.evals.model import EvalReport, EvalResult
from llmctl.evals.run import Progress, make_setup, run_evals
from llmctl.gateway.build import prices
from llmctl.resolve import Resolved, resolve_applied
from llmctl.state import LocalBackend, State
from llmctl.workspace import Workspace


def evaluate(resolved: Resolved, endpoints: dict[str, list[str]], models: list[str],
             baseline: dict[str, EvalResult], progress: Progress, names: list[str] | None = None,
             repeat: int | None = None, use_cache: bool = True) -> EvalReport:
    setup = make_setup(resolved.desired, resolved.lock, endpoints, prices(resolved), resolved.workspace.run_dir,
                       baseline, use_cache)
    return run_evals(setup, models, names, repeat, progress)


def deployed_evals(state: State, workspace: Workspace, models: list[str] | None) -> tuple[Resolved, list[str]]:
    """What is deployed, and which of its models to evaluate: those named, else every one with evals."""
    if not state.desired or not state.endpoints:
        raise LlmctlError("nothing is deployed in this environment: run `llmctl apply` first")
    resolved = resolve_applied(workspace, Desired.from_parts(state.desired, workspace.config_dir), state.lock)
    desired = resolved.desired
    if models:
        unknown = [name for name in models if not state.endpoints.get(name)]
        if unknown:
            raise LlmctlError(f"model {', '.join(unknown)} has no endpoint in state (deployed: "
                              f"{', '.join(sorted(state.endpoints)) or 'none'})")
        return resolved, models
    found = [name for name, model in desired.models.items() if model.evals and state.endpoints.get(name)]
    if not found:
        raise LlmctlError("no deployed model names an eval: add `evals: [NAME]` to a model and apply")
    return resolved, found


def record(backend: LocalBackend, report: EvalReport) -> None:
    """Keep each eval's last run in state (the next run's baseline); results are observations: the serial stays."""
    state = backend.read()
    state.evals = {**state.evals, **report.for_state()}
    backend.write(state)
