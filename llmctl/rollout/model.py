"""A rollout's decision record: per step and version, the figures compared and the verdict. State keeps the last
one (`State.rollout`), which is how `llmctl rollout status|promote|abort` and `plan` find a rollout in progress."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from llmctl.config.schema import Config
from llmctl.lock import Lock

RolloutStatus = Literal["running", "paused", "promoted", "aborted"]
IN_PROGRESS: tuple[RolloutStatus, ...] = ("running", "paused")


class VersionFigures(BaseModel):
    """One version's traffic over a step's window, as the gateway counted it (`/metrics`, before and after)."""

    requests: int = Field(description="Answered, whatever the status.")
    errors: int = Field(description="Answered with a 5xx: the version failed them.")
    refused: int = Field(0, description="Answered with a 4xx, the client's doing (its key, limits, input): they say "
                         "nothing of the version and count towards neither min_requests nor the error rate.")
    driven: int = Field(0, description="Of the requests, those llmctl sent itself because real traffic was short "
                        "of min_requests.")
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    itl_p95_ms: float | None = None
    goodput: float | None = Field(None, description="Share of SLO-counted requests within every target.")
    cost_per_request_usd: float | None = None
    ratings: int | None = Field(None, description="Users' ratings of its answers in the window (POST /v1/feedback); "
                                "None: none.")
    negative_feedback_share: float | None = Field(None, description="Of those ratings, the share negative.")


class Comparison(BaseModel):
    """One figure of the new version held to a limit: an SLO target, or stable's figure with the allowed increase."""

    name: str = Field(description="e.g. ttft_p95_ms, error_rate, cost_per_request_usd, eval.quality")
    canary: float | None
    stable: float | None = None
    limit: float | None = None
    comparison: Literal["<=", ">="] = "<="
    passed: bool
    note: str | None = Field(None, description="Why it passed without a figure, or what the figure means.")


class StepRecord(BaseModel):
    index: int = Field(description="0-based position in the rollout's steps.")
    weight: int
    started_at: str
    ended_at: str | None = None
    stable: VersionFigures | None = None
    canary: VersionFigures | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    verdict: Literal["passed", "failed", "running"] = "running"
    reason: str | None = None


class RolloutRecord(BaseModel):
    model: str
    rollout: str = Field(description="The strategy's name in `rollouts:`.")
    strategy: Literal["canary", "blue_green"]
    kind: Literal["model", "prompt"] = Field("model", description="model: the new version runs on new servers; "
                                             "prompt: only its prompt changed, and the stable servers serve both.")
    status: RolloutStatus
    weight: int = Field(description="Percent of callers the new version serves now.")
    step: int = Field(description="The step under way, or the last one decided.")
    weights: list[int] = Field(description="Every step's weight, in order.")
    steps: list[StepRecord] = Field(default_factory=list)
    reason: str | None = Field(None, description="Why it was aborted or paused.")
    eval_failed: bool = Field(False, description="It was aborted because an eval of the new version failed.")
    started_at: str
    updated_at: str | None = None
    from_serial: int = Field(description="The state serial the stable version was applied at.")
    target: Config = Field(description="The config being rolled out: what promote applies.")
    target_lock: Lock | None = None

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS
