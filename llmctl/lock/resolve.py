"""Building the lock for a config: each model source pinned (kept from the previous lock while its source is
unchanged), each prompt by the digest of its text."""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from llmctl.config.sources import SourceNotFound, local_path
from llmctl.lock.files import LOCK_FILE
from llmctl.lock.hub import Hub, offline
from llmctl.lock.local import local_size, resolve_file
from llmctl.lock.model import Lock, LockError, ModelLock

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from llmctl.config.schema import Model, Prompt
    from llmctl.desired import Desired


def prompt_digest(prompt: Prompt) -> str:
    """sha256 of what the model is sent: system text, template and variables (not the version number), and the
    variants served beside it with their weights (only when there are some: a prompt without keeps its digest)."""
    sent: dict[str, object] = {"system": prompt.system, "template": prompt.template, "variables": prompt.variables}
    if prompt.variants:
        sent["variants"] = [variant.model_dump(mode="json") for variant in prompt.variants]
    text = json.dumps(sent, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve(desired: Desired, prices: str | None, api: HfApi | None = None, previous: Lock | None = None,
            update: bool = False, api_prices: str | None = None) -> Lock:
    """The lock for `desired`, pinning the price catalog version `prices` and the hosted-API price library
    `api_prices`. Entries of `previous` whose source is unchanged are kept as they are (no network call) unless
    `update`; every other model is resolved: hf:// on the hub through `api` (by default HfApi() for HF_ENDPOINT,
    with HF_TOKEN), files by size and sha256."""
    old_models = previous.models if previous is not None else {}
    hub = Hub(api)
    models: dict[str, ModelLock] = {}
    for name, model in sorted(desired.models.items()):
        old = old_models.get(name)
        if old is not None and not update and old.source == model.source and _still_pinned(old, model, desired):
            models[name] = old
            continue
        models[name] = _resolve_model(name, model, desired, hub, old, update)
    prompts = {name: prompt_digest(prompt) for name, prompt in sorted(desired.prompts.items())}
    return Lock(models=models, prompts=prompts, datasets=dataset_digests(desired), prices=prices,
                api_prices=api_prices)


def dataset_digests(desired: Desired) -> dict[str, str]:
    """sha256 of each eval's dataset file; one that cannot be read is left out (validate reports it)."""
    from llmctl.evals.dataset import dataset_path

    digests = {}
    for name, evaluation in sorted(desired.evals.items()):
        if evaluation.dataset:
            try:
                data = dataset_path(desired.config_dir, evaluation.dataset).read_bytes()
            except OSError:
                continue
            digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _resolve_model(name: str, model: Model, desired: Desired, hub: Hub, old: ModelLock | None,
                   update: bool) -> ModelLock:
    source = model.parsed_source
    if source.scheme == "api":
        return ModelLock(source=model.source, kind="api")
    if source.scheme == "hf":
        if offline():
            if update and old is not None and old.source == model.source:
                raise LockError(f"model {name}: {model.source} cannot be re-resolved: the hub is offline "
                                f"(HF_HUB_OFFLINE): run llmctl lock --update with network access")
            changed = " (its source changed)" if old is not None else ""
            raise LockError(f"model {name}: {model.source} is not in {LOCK_FILE}{changed} and the hub is offline "
                            f"(HF_HUB_OFFLINE): run llmctl lock with network access")
        return hub.resolve(name, model.source, source, old)
    try:
        path = local_path(source, desired.config_dir)
    except SourceNotFound as exc:
        raise LockError(f"model {name}: {exc}") from None
    return resolve_file(model.source, path)


def _still_pinned(old: ModelLock, model: Model, desired: Desired) -> bool:
    """A kept file entry must still describe the file: re-hash when its size changed (a new package version)."""
    if old.kind != "file":
        return True
    size = local_size(model, desired)
    return size is None or size == old.weights_bytes
