"""Whether the lock still matches the config, without asking the hub (upstream_moved, in hub.py, asks it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from llmctl.lock.files import LOCK_FILE
from llmctl.lock.local import local_size
from llmctl.lock.model import Lock
from llmctl.lock.resolve import dataset_digests, prompt_digest

if TYPE_CHECKING:
    from llmctl.desired import Desired


def stale(lock: Lock, desired: Desired, prices: str | None, api_prices: str | None = None) -> list[str]:
    """Why `lock` no longer matches the config and the prices this llmctl has (the catalog version `prices`, the
    hosted-API price library `api_prices`): [] when it does. A plan re-locks when this is not empty."""
    reasons: list[str] = []
    for name in sorted(desired.models.keys() | lock.models.keys()):
        model, entry = desired.models.get(name), lock.models.get(name)
        if model is None or entry is None:
            reasons.append(_one_sided("model", name, in_lock=entry is not None))
        elif entry.source != model.source:
            reasons.append(f"model {name}: source changed from {entry.source} to {model.source}")
        elif entry.kind == "file":
            size = local_size(model, desired)
            if size is not None and size != entry.weights_bytes:
                reasons.append(f"model {name}: the file changed since it was locked "
                               f"({entry.weights_bytes} bytes, now {size})")
    for name in sorted(desired.prompts.keys() | lock.prompts.keys()):
        prompt, digest = desired.prompts.get(name), lock.prompts.get(name)
        if prompt is None or digest is None:
            reasons.append(_one_sided("prompt", name, in_lock=digest is not None))
        elif prompt_digest(prompt) != digest:
            reasons.append(f"prompt {name}: its text changed since it was locked")
    digests = dataset_digests(desired)
    for name in sorted(digests.keys() | lock.datasets.keys()):
        if digests.get(name) != lock.datasets.get(name):
            reasons.append(f"eval {name}: its dataset changed since it was locked" if name in digests and name in
                           lock.datasets else _one_sided("dataset of eval", name, in_lock=name in lock.datasets))
    if lock.prices != prices:
        reasons.append(f"the price catalog changed from {lock.prices or 'none'} to {prices or 'none'}")
    if lock.api_prices != api_prices:
        reasons.append(f"the hosted-API prices changed from {lock.api_prices or 'none'} to {api_prices or 'none'}")
    return reasons


def _one_sided(kind: str, name: str, in_lock: bool) -> str:
    """Why an entry in only one of the config and the lock is stale."""
    if in_lock:
        return f"{kind} {name} is in {LOCK_FILE} but no longer in the config"
    return f"{kind} {name} is not in {LOCK_FILE}"
