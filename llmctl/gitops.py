"""`llmctl render`: a target's resources as files for GitOps, from providers that can write them."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmctl.errors import LlmctlError, did_you_mean
from llmctl.provider import Provider
from llmctl.resolve import Resolved


def render_target(resolved: Resolved, target: str, directory: Path, get_provider: Callable[[str], Provider]
                  ) -> list[Path]:
    desired = resolved.desired
    if target not in desired.targets:
        raise LlmctlError(f"no target '{target}' in the config{did_you_mean(target, desired.targets)} "
                          f"(targets: {', '.join(sorted(desired.targets)) or 'none'})")
    provider = get_provider(desired.targets[target].provider)
    render = getattr(provider, "render", None)
    if render is None:
        raise LlmctlError(f"target '{target}' uses provider '{provider.name}', which has no manifests to render "
                          "(kubernetes targets do)")
    return list(render(resolved, target, directory))
