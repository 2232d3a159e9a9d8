"""Building a lock: entries kept while their source is unchanged, re-resolved on --update or a new source, and
an offline hub."""
from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hub_server import HubServer
from llmctl.lock import LockError, resolve
from lock.configs import QWEN, SMOL, desired, hub_calls


def test_a_second_resolve_keeps_the_lock_without_asking_the_hub(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    d = desired(tmp_path, {"qwen": QWEN, "smol": SMOL})
    first = resolve(d, None, api)
    before = hub_calls(hub)
    hub.move("Qwen/Qwen2.5-7B-Instruct")  # even when main moved: plan never silently re-resolves

    again = resolve(d, None, api, previous=first)

    assert hub_calls(hub) == before
    assert again == first


def test_update_re_resolves_to_the_moved_branch(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    d = desired(tmp_path, {"qwen": QWEN})
    first = resolve(d, None, api)
    new_sha = hub.move("Qwen/Qwen2.5-7B-Instruct", config={**hub.repos["Qwen/Qwen2.5-7B-Instruct"].spec.config,
                                                            "num_hidden_layers": 30})

    updated = resolve(d, None, api, previous=first, update=True)

    assert updated.models["qwen"].sha == new_sha != first.models["qwen"].sha
    assert updated.models["qwen"].architecture["num_hidden_layers"] == 30


def test_a_changed_source_is_re_resolved_and_the_others_kept(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    first = resolve(desired(tmp_path, {"qwen": QWEN, "smol": SMOL}), None, api)
    tag_sha = hub.tag("Qwen/Qwen2.5-7B-Instruct", "v1")
    hub.move("Qwen/Qwen2.5-7B-Instruct")
    before = hub_calls(hub)

    second = resolve(desired(tmp_path, {"qwen": QWEN + "@v1", "smol": SMOL}), None, api, previous=first)

    assert second.models["qwen"].revision == "v1" and second.models["qwen"].sha == tag_sha
    assert second.models["smol"] == first.models["smol"]
    assert all("SmolLM2" not in path for _, path in hub.requests[before:])


def test_offline_with_a_model_not_yet_locked_is_an_error(tmp_path: Path, hub: HubServer, api: HfApi,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve(desired(tmp_path, {"qwen": QWEN}), None, api)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = hub_calls(hub)

    kept = resolve(desired(tmp_path, {"qwen": QWEN}), None, api, previous=first)  # locked: offline is fine
    with pytest.raises(LockError) as caught:
        resolve(desired(tmp_path, {"qwen": QWEN, "smol": SMOL}), None, api, previous=first)

    assert kept == first and hub_calls(hub) == before
    with pytest.raises(LockError, match="^model qwen: .* cannot be re-resolved: the hub is offline"):
        resolve(desired(tmp_path, {"qwen": QWEN}), None, api, previous=first, update=True)
    assert str(caught.value) == (f"model smol: {SMOL} is not in llmops.lock and the hub is offline (HF_HUB_OFFLINE): "
                                 "run llmctl lock with network access")
