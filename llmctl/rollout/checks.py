"""What a plan says about rollouts before anything changes."""
from __future__ import annotations

from llmctl.checks import Check
from llmctl.desired import Desired


def checks(desired: Desired) -> list[Check]:
    """Apply carries out all_at_once only so far: a model whose rollout asks for a canary or a blue-green switch is
    refused at plan rather than changed all at once behind a config that says otherwise."""
    return [Check(severity="error", address=f"model.{name}", message=(
        f"rollout '{model.rollout}' is a {desired.rollouts[model.rollout].strategy} rollout, which this version of "
        "llmctl cannot carry out yet (it changes a model all at once): remove `rollout` from the model, or use a "
        "rollout with strategy: all_at_once"))
        for name, model in desired.models.items()
        if model.rollout and desired.rollouts[model.rollout].strategy != "all_at_once"]
