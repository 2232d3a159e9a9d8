"""What a plan says about rollouts before anything changes: one in progress, and what this version cannot roll out."""
from __future__ import annotations

from llmctl.checks import Check
from llmctl.desired import Desired
from llmctl.resource import ResourceChange
from llmctl.rollout.model import RolloutRecord


def checks(desired: Desired, rolling: dict[str, str], resource_changes: list[ResourceChange],
           current: RolloutRecord | None) -> list[Check]:
    found = []
    if current is not None and current.in_progress:
        found.append(Check(severity="error", address=f"model.{current.model}", message=(
            f"rollout '{current.rollout}' of model {current.model} is {current.status} at step {current.step + 1} "
            f"({current.weight}% on the new version): finish it with `llmctl rollout promote` or go back with "
            "`llmctl rollout abort` before applying another change")))
    for name, rollout in rolling.items():
        model = desired.models[name]
        provider = desired.targets[model.target].provider if model.target else None
        if provider != "local":
            found.append(Check(severity="error", address=f"model.{name}", message=(
                f"rollout '{rollout}' runs the new version beside the stable one on the local target only in this "
                f"version of llmctl ({model.target} is {provider}): use a rollout with strategy: all_at_once here")))
        if desired.rollouts[rollout].keep_previous:
            found.append(Check(severity="warning", address=f"rollout.{rollout}", message=(
                "keep_previous is not carried out yet: the old version stops as soon as the new one is promoted")))
    if len(rolling) > 1:
        found.append(Check(severity="error", address=f"model.{sorted(rolling)[1]}", message=(
            f"this plan rolls out {len(rolling)} models ({', '.join(sorted(rolling))}); a rollout decides on one "
            "model's figures: change one at a time")))
    others = sorted({c.owner for c in resource_changes if c.owner.startswith("model.")}
                    - {f"model.{name}" for name in rolling})
    if rolling and others:
        found.append(Check(severity="error", address=others[0], message=(
            f"this plan rolls out model {', '.join(sorted(rolling))} and also changes {', '.join(others)}, which "
            "its analysis would not judge: apply that change separately")))
    return found
