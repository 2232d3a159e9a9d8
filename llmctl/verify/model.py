"""What a load test is asked to do, what it measured, and how that compares with an SLO.

These models cross the process boundary to the Locust worker as JSON, and are what every report renders.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Message = dict[str, str]


class LoadSpec(BaseModel):
    """The worker's input."""

    model: str
    served_name: str = Field(description="The `model` field sent in each request.")
    endpoints: list[str] = Field(min_length=1, description="OpenAI base URLs (…/v1); users spread over them.")
    users: int = Field(ge=1)
    spawn_rate: float = Field(gt=0)
    duration_s: float = Field(gt=0)
    max_tokens: int = Field(ge=1)
    prompts: list[list[Message]] = Field(min_length=1, description="Chat message lists, used in turn.")
    request_timeout_s: float = Field(60.0, gt=0, description="A request with no complete answer by then fails.")
    api_key: str | None = Field(None, description="Sent as a bearer token; never written to reports.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request (a rollout's "
                                    "analysis load names the version it is for).")
    max_requests: int | None = Field(None, ge=1, description="Stop once this many requests have started, before "
                                     "the duration when they come sooner; None: run for the duration.")


class Sample(BaseModel):
    """One request, as the client saw it."""

    start_s: float = Field(description="Seconds from the start of the test.")
    endpoint: str
    ok: bool
    ttft_ms: float | None = None
    latency_ms: float
    itl_ms: list[float] = Field(default_factory=list, description="Gaps between successive content chunks.")
    output_tokens: int = 0
    tokens_from_usage: bool = False
    error: str | None = None


class WorkerResult(BaseModel):
    samples: list[Sample]
    elapsed_s: float


class Percentiles(BaseModel):
    p50: float
    p90: float
    p95: float
    p99: float


class LoadSummary(BaseModel):
    requests: int
    failures: int
    error_rate: float
    duration_s: float
    users: int
    rps: float
    output_tokens_per_s: float
    ttft_ms: Percentiles | None
    latency_ms: Percentiles | None
    itl_ms: Percentiles | None
    goodput: float | None = Field(description="Share of requests that met every per-request SLO target.")
    failure_reasons: dict[str, int]


class SloCheck(BaseModel):
    target: str = Field(description="The SLO field, e.g. ttft_p95_ms.")
    limit: float
    measured: float | None
    comparison: Literal["<=", ">="]
    passed: bool


class ModelVerification(BaseModel):
    model: str
    slo: str
    passed: bool
    checks: list[SloCheck]
    summary: LoadSummary
    at: str


class VerificationReport(BaseModel):
    """What `llmctl loadtest` and the apply gate report; samples are kept for charts, not in state."""

    project: str
    environment: str
    results: list[ModelVerification]
    samples: dict[str, list[Sample]] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def for_state(self) -> dict[str, Any]:
        return {result.model: result.model_dump(mode="json") for result in self.results}
