"""What an eval run found: every sample's answer and verdicts, each case's outcome, each eval's pass rate. Kept in
state (the last applied run is the baseline of the next) and rendered by the reports."""
from __future__ import annotations

from pydantic import BaseModel, Field


class AssertionResult(BaseModel):
    type: str
    passed: bool
    reason: str
    score: float | None = None


class SampleResult(BaseModel):
    answer: str | None = Field(description="None when the request failed.")
    error: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    assertions: list[AssertionResult] = Field(default_factory=list)
    cached: bool = False

    @property
    def passed(self) -> bool:
        return self.error is None and all(a.passed for a in self.assertions)


class CaseResult(BaseModel):
    id: str = Field(description="A hash of the case: the same case keeps its id across runs and datasets.")
    label: str = Field(description="What was asked, shortened, for reports.")
    passed: bool = Field(description="A majority of its samples passed every assertion.")
    regression: bool = Field(False, description="It passed in the baseline run and fails now.")
    samples: list[SampleResult]


class EvalResult(BaseModel):
    eval: str
    model: str
    at: str
    pass_rate: float
    required: float
    baseline: bool
    on_failure: str
    cases: list[CaseResult]

    @property
    def regressions(self) -> list[CaseResult]:
        return [case for case in self.cases if case.regression]

    @property
    def passed(self) -> bool:
        return self.pass_rate >= self.required and not (self.baseline and self.regressions)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.eval}"


class EvalReport(BaseModel):
    project: str
    environment: str
    results: list[EvalResult] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def for_state(self) -> dict[str, EvalResult]:
        return {result.key: result for result in self.results}
