"""Comparing a lock with the config: every reason it no longer matches."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

from llmctl.lock import resolve, stale
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
