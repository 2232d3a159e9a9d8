"""Comparing a lock with the config: every reason it no longer matches."""
from __future__ import annotations

import hashlib
from pathlib import Path

from huggingface_hub import HfApi

from llmctl.config.schema import Config
from llmctl.desired import Desired
from llmctl.lock import resolve, stale
from llmctl.lock.files import dumps
from lock.configs import PROMPT, QWEN, SMOL, desired


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


def test_an_eval_dataset_is_pinned_by_its_content(tmp_path: Path) -> None:
    config = Config.model_validate({"version": 1, "project": "p", "models": [
        {"name": "bot", "source": "api://openai/gpt-4o-mini", "evals": ["quality"]}],
        "evals": [{"name": "quality", "dataset": "cases.jsonl"}]})
    d = Desired.from_parts(config, tmp_path)
    (tmp_path / "cases.jsonl").write_text('{"vars": {"q": "hours?"}}\n')
    lock = resolve(d, "v1")
    assert lock.datasets == {"quality": hashlib.sha256(b'{"vars": {"q": "hours?"}}\n').hexdigest()}
    assert '"datasets"' in dumps(lock) and stale(lock, d, "v1") == []

    (tmp_path / "cases.jsonl").write_text('{"vars": {"q": "refunds?"}}\n')
    assert stale(lock, d, "v1") == ["eval quality: its dataset changed since it was locked"]
    (tmp_path / "cases.jsonl").unlink()
    assert stale(lock, d, "v1") == ["dataset of eval quality is in llmops.lock but no longer in the config"]


def test_a_config_without_datasets_writes_the_lock_it_always_did(tmp_path: Path, api: HfApi) -> None:
    assert '"datasets"' not in dumps(resolve(desired(tmp_path, {"hosted": "api://openai/gpt-4o"}), "v1", api))


def test_prompt_variants_are_part_of_what_the_lock_pins(tmp_path: Path, api: HfApi) -> None:
    variant = {"version": 2, "template": "A: {{ question }}", "weight": 20}
    plain = resolve(desired(tmp_path, {"hosted": "api://openai/gpt-4o"}), "v1", api)
    with_variant = desired(tmp_path, {"hosted": "api://openai/gpt-4o"}, prompts=[{**PROMPT, "variants": [variant]}])
    assert stale(plain, with_variant, "v1") == ["prompt answer: its text changed since it was locked"]
    reweighted = desired(tmp_path, {"hosted": "api://openai/gpt-4o"},
                         prompts=[{**PROMPT, "variants": [{**variant, "weight": 50}]}])
    assert stale(resolve(with_variant, "v1", api), reweighted, "v1") != []


def test_the_hosted_api_price_library_is_pinned_beside_the_catalog(tmp_path: Path, api: HfApi) -> None:
    d = desired(tmp_path, {"hosted": "api://groq/llama-3.1-8b-instant"})
    lock = resolve(d, "v1", api, api_prices="genai-prices 0.2.2")
    assert '"api_prices": "genai-prices 0.2.2"' in dumps(lock)
    assert stale(lock, d, "v1", "genai-prices 0.2.2") == []
    assert stale(lock, d, "v1", "genai-prices 0.2.3") == [
        "the hosted-API prices changed from genai-prices 0.2.2 to genai-prices 0.2.3"]
    # a lock written before the library was pinned is re-locked once
    assert stale(resolve(d, "v1", api), d, "v1", "genai-prices 0.2.3") == [
        "the hosted-API prices changed from none to genai-prices 0.2.3"]
