"""Errors a user can act on. The CLI prints their message (never a traceback) and exits with `exit_code`."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmctlError(Exception):
    """A failure caused by input, state or the environment; the message says what to do."""

    exit_code = 1


class BudgetExceeded(LlmctlError):
    exit_code = 3


class VerificationFailed(LlmctlError):
    """An SLO was missed; `report` is what the load test measured, for rendering."""

    exit_code = 4

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class EvalsFailed(LlmctlError):
    """An eval's answers fell below its pass rate (or regressed); `report` is what it found, for rendering."""

    exit_code = 5

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class RolloutAborted(LlmctlError):
    """A rollout's new version failed a step's analysis and was stopped: exit 4, or 5 when an eval failed (as an
    apply whose SLO or evals failed); `record` is the decision record, for rendering."""

    def __init__(self, message: str, record: object, eval_failed: bool) -> None:
        super().__init__(message)
        self.record = record
        self.exit_code = EvalsFailed.exit_code if eval_failed else VerificationFailed.exit_code


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """' did you mean 'x'?' when a close option exists, else ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
