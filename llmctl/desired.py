"""Desired: the config normalised for planning: named entries keyed by name, defaults filled, targets resolved."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from llmctl.config.load import LoadedConfig
from llmctl.config.schema import (
    DEFAULT_TARGET,
    SECTIONS,
    Budget,
    Config,
    Eval,
    Gateway,
    Guardrail,
    LocalTarget,
    Model,
    Monitoring,
    Prompt,
    Rollout,
    Slo,
    Target,
)

if TYPE_CHECKING:
    from llmctl.lock import ModelLock


@dataclass(frozen=True)
class Canary:
    """A model's new version while a rollout runs it beside the stable one (which `Desired.models` holds)."""

    model: Model
    lock: ModelLock | None  # its pinned entry: the stable version keeps the applied one
    weight: int  # percent of callers it serves
    prompt: Prompt | None = None  # its prompt, when it differs from the stable version's
    servers: bool = True  # False: a prompt rollout, served by the stable version's own servers


@dataclass(frozen=True)
class Desired:
    project: str
    environment: str
    config_dir: Path
    targets: dict[str, Target]
    models: dict[str, Model]
    prompts: dict[str, Prompt]
    guardrails: dict[str, Guardrail]
    budgets: dict[str, Budget]
    slos: dict[str, Slo]
    evals: dict[str, Eval] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    gateway: Gateway | None = None  # declared settings; a gateway with defaults runs when None
    monitoring: Monitoring = field(default_factory=Monitoring)  # defaults when the section is omitted
    # A rollout under way: model name -> its new version, run beside the stable one. Never in a config or a plan.
    canaries: dict[str, Canary] = field(default_factory=dict)

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> "Desired":
        return cls.from_parts(loaded.config, loaded.base_dir)

    @classmethod
    def from_parts(cls, config: Config, config_dir: Path) -> "Desired":
        models = {}
        for model in config.models:
            if model.target is None and not model.parsed_source.hosted:
                model = model.model_copy(update={"target": DEFAULT_TARGET})
            models[model.name] = model
        targets = dict(config.targets)
        if any(m.target == DEFAULT_TARGET for m in models.values()) and DEFAULT_TARGET not in targets:
            targets[DEFAULT_TARGET] = LocalTarget(provider="local")
        return cls(
            project=config.project,
            environment=config.environment,
            config_dir=config_dir,
            targets=targets,
            models=models,
            prompts={p.name: p for p in config.prompts},
            guardrails={g.name: g for g in config.guardrails},
            budgets={b.name: b for b in config.budgets},
            slos={s.name: s for s in config.slos},
            evals={e.name: e for e in config.evals},
            rollouts={r.name: r for r in config.rollouts},
            gateway=config.gateway,
            monitoring=config.monitoring or Monitoring(),
        )

    @classmethod
    def empty(cls, project: str, environment: str, config_dir: Path) -> "Desired":
        return cls(project, environment, config_dir, {}, {}, {}, {}, {}, {})

    def objects(self) -> dict[str, dict[str, Any]]:
        """Every declared object by plan address (`model.assistant`), as plain JSON data."""
        objects = {f"target.{name}": _data(target) for name, target in self.targets.items()}
        for section, kind in SECTIONS.items():
            for name, entry in getattr(self, section).items():
                objects[f"{kind}.{name}"] = _data(entry)
        if self.gateway is not None:
            objects[f"gateway.{self.environment}"] = _data(self.gateway)
        if self.monitoring != Monitoring():
            objects[f"monitoring.{self.environment}"] = _data(self.monitoring)
        return dict(sorted(objects.items()))

    def budgets_of(self, model: str) -> list[str]:
        """The budgets a model's spend counts against: the one it names and those whose scope lists it."""
        return [name for name, budget in self.budgets.items()
                if self.models[model].budget == name or model in budget.scope]

    def models_on(self, target: str) -> list[Model]:
        return [model for model in self.models.values() if model.target == target]

    def to_config(self) -> Config:
        """The normalised config (defaults filled, the built-in target declared): what plans and state record."""
        return config_from_objects(self.project, self.environment, self.objects())


def config_from_objects(project: str, environment: str, objects: dict[str, dict[str, Any]]) -> Config:
    """A Config from declared objects by plan address (as `Desired.objects` gives them)."""
    return Config.model_validate({
        "version": 1,
        "project": project,
        "environment": environment,
        "targets": {a.split(".", 1)[1]: o for a, o in objects.items() if a.startswith("target.")},
        **{section: [o for a, o in objects.items() if a.startswith(f"{kind}.")] for section, kind in SECTIONS.items()},
        "gateway": next((o for a, o in objects.items() if a.startswith("gateway.")), None),
        "monitoring": next((o for a, o in objects.items() if a.startswith("monitoring.")), None),
    })


def _data(entry: BaseModel) -> dict[str, Any]:
    return entry.model_dump(mode="json", exclude_none=True, by_alias=True)
