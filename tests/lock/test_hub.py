"""Pinning hf:// sources against the scripted hub (tests/hub_server.py), the hub's failures, and moved branches."""
from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hub_server import TOKEN, HubServer
from llmctl.lock import LockError, ModelLock, resolve, upstream_moved, write_lock
from lock.configs import LLAMA, QWEN, SMOL, closed_port_url, desired, hub_calls
from support import imported_by


# --- pinning -------------------------------------------------------------------------------------------------------


def test_resolve_pins_sha_parameters_dtype_and_architecture(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    lock = resolve(desired(tmp_path, {"qwen": QWEN, "smol": SMOL}), "prices-2025-01", api)

    qwen = lock.models["qwen"]
    assert qwen.kind == "hf" and qwen.revision == "main"
    assert qwen.sha == hub.sha("Qwen/Qwen2.5-7B-Instruct")
    assert qwen.parameters == 7_615_616_512  # from the four shards' safetensors headers
    assert (qwen.dtype, qwen.bytes_per_param, qwen.weights_bytes) == ("BF16", 2.0, 2 * 7_615_616_512)
    # head_dim is not in Qwen's config.json: hidden_size / num_attention_heads
    assert qwen.architecture == {"num_hidden_layers": 28, "num_key_value_heads": 4, "head_dim": 128,
                                 "hidden_size": 3584}
    smol = lock.models["smol"]  # a single model.safetensors
    assert smol.parameters == 134_515_008 and smol.dtype == "BF16"
    assert smol.architecture == {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_dim": 64,
                                 "hidden_size": 576}
    assert lock.prices == "prices-2025-01"
    assert set(lock.prompts) == {"answer"} and len(lock.prompts["answer"]) == 64
    # the header of each weights file is read by Range, never the weights
    ranged = [path for method, path in hub.requests if method == "GET" and path.endswith(".safetensors")]
    assert len(ranged) == 5


def test_update_of_an_unmoved_branch_asks_only_for_its_sha(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    d = desired(tmp_path, {"qwen": QWEN})
    first = resolve(d, None, api)
    before = hub_calls(hub)

    again = resolve(d, None, api, previous=first, update=True)

    assert again == first
    assert hub.requests[before:] == [("GET", "/api/models/Qwen/Qwen2.5-7B-Instruct/revision/main")]


def test_two_models_of_one_repo_are_resolved_once(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    lock = resolve(desired(tmp_path, {"a": QWEN, "b": QWEN}), None, api)
    assert lock.models["a"] == lock.models["b"]
    assert hub.count("/api/models/") == 1


# --- moved branches ------------------------------------------------------------------------------------------------


def test_upstream_moved_reports_a_moved_branch(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    lock = resolve(desired(tmp_path, {"qwen": QWEN, "smol": SMOL}), None, api)
    old = lock.models["qwen"].sha
    assert upstream_moved(lock, api) == []

    new = hub.move("Qwen/Qwen2.5-7B-Instruct")

    assert upstream_moved(lock, api) == [f"model qwen: main moved from {old[:7]} to {new[:7]} (llmctl lock --update)"]


def test_upstream_moved_skips_commits_api_models_and_an_offline_hub(tmp_path: Path, hub: HubServer, api: HfApi,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sha = hub.sha("Qwen/Qwen2.5-7B-Instruct")
    lock = resolve(desired(tmp_path, {"qwen": f"{QWEN}@{sha}", "hosted": "api://openai/gpt-4o-mini"}), None, api)
    assert lock.models["qwen"].revision == sha and lock.models["hosted"] == ModelLock(
        source="api://openai/gpt-4o-mini", kind="api")
    hub.move("Qwen/Qwen2.5-7B-Instruct")
    before = hub_calls(hub)
    assert upstream_moved(lock, api) == []  # pinned to a commit: nothing can move
    assert hub_calls(hub) == before

    branch = resolve(desired(tmp_path, {"qwen": QWEN}), None, api)
    hub.move("Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = hub_calls(hub)
    assert upstream_moved(branch, api) == []
    assert hub_calls(hub) == before
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert upstream_moved(branch, HfApi(endpoint=closed_port_url(), token=False)) == []


# --- errors --------------------------------------------------------------------------------------------------------


def test_a_missing_repository_names_the_model(tmp_path: Path, api: HfApi) -> None:
    with pytest.raises(LockError, match=r"^model ghost: repository nobody/nothing not found on http://127\.0\.0\.1:"
                                        r"\d+: check the source .*set HF_TOKEN$"):
        resolve(desired(tmp_path, {"ghost": "hf://nobody/nothing"}), None, api)


def test_a_missing_revision_names_the_model(tmp_path: Path, api: HfApi) -> None:
    with pytest.raises(LockError, match=r"^model qwen: revision 'v9' not found in Qwen/Qwen2.5-7B-Instruct on .*"
                                        r"fix the @REVISION"):
        resolve(desired(tmp_path, {"qwen": QWEN + "@v9"}), None, api)


def test_a_gated_repo_without_a_token_says_to_accept_its_license(tmp_path: Path, api: HfApi, hub: HubServer) -> None:
    with pytest.raises(LockError) as caught:
        resolve(desired(tmp_path, {"llama": LLAMA}), None, api)
    assert str(caught.value) == ("model llama: meta-llama/Llama-3.3-70B-Instruct is gated: accept its license on the "
                                 "hub and set HF_TOKEN")
    with pytest.raises(LockError, match="is gated: .* HF_TOKEN \\(the token in use has not been granted access\\)"):
        resolve(desired(tmp_path, {"llama": LLAMA}), None, HfApi(endpoint=hub.url, token="hf_not_granted"))


def test_a_gated_repo_with_a_token_resolves_and_the_token_is_never_written(
        tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the default HfApi: endpoint and token from the environment
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    lock = resolve(desired(tmp_path, {"llama": LLAMA}), None)

    llama = lock.models["llama"]
    assert llama.sha == hub.sha("meta-llama/Llama-3.3-70B-Instruct")
    assert (llama.parameters, llama.dtype) == (70_553_706_496, "BF16")  # 30 shards' headers
    assert llama.architecture == {"num_hidden_layers": 80, "num_key_value_heads": 8, "head_dim": 128,
                                  "hidden_size": 8192}
    write_lock(tmp_path / "llmops.lock", lock)
    assert TOKEN not in (tmp_path / "llmops.lock").read_text()


def test_an_unreachable_hub_names_the_model(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(LockError, match=rf"^model qwen: the hub at {url} is unreachable \(.*\): check the network"):
        resolve(desired(tmp_path, {"qwen": QWEN}), None, HfApi(endpoint=url, token=False))


# --- start-up ------------------------------------------------------------------------------------------------------


def test_importing_the_lock_imports_neither_the_hub_client_nor_the_config_schema() -> None:
    # Reading, writing and comparing a lock is what most commands do; none of it asks the hub. The config schema's
    # pydantic models, the slowest import of llmctl's own, are the callers' to import: the lock only names them.
    imported = imported_by("import llmctl.lock")
    assert "llmctl.lock.hub" in imported
    assert not {name for name in imported if name.partition(".")[0] in {"huggingface_hub", "httpx2", "gguf"}}
    assert "llmctl.config.schema" not in imported
