"""The attention shape from a transformers config.json."""
from __future__ import annotations

from llmctl.lock import architecture_from_config


def test_architecture_from_config_reads_nested_and_legacy_configs() -> None:
    assert architecture_from_config({"text_config": {"num_hidden_layers": 4, "hidden_size": 64,
                                                     "num_attention_heads": 8, "num_key_value_heads": 2}}) == {
        "num_hidden_layers": 4, "hidden_size": 64, "num_key_value_heads": 2, "head_dim": 8}
    assert architecture_from_config({"n_layer": 12, "n_embd": 768, "n_head": 12}) == {
        "num_hidden_layers": 12, "hidden_size": 768, "num_key_value_heads": 12, "head_dim": 64}
    assert architecture_from_config({"model_type": "unknown"}) is None
