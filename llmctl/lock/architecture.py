"""The attention shape the KV-cache estimate needs, from a transformers config.json or a GGUF file's header."""
from __future__ import annotations

from typing import Any

_CONFIG_ALIASES = {"n_layer": "num_hidden_layers", "n_embd": "hidden_size", "n_head": "num_attention_heads"}


def architecture_from_config(config: dict[str, Any]) -> dict[str, int] | None:
    """num_hidden_layers, num_key_value_heads, head_dim and hidden_size from a transformers config.json; the decoder
    of a multimodal model is read from its text_config."""
    for candidate in (config, config.get("text_config"), config.get("llm_config")):
        if not isinstance(candidate, dict):
            continue
        cfg = {_CONFIG_ALIASES.get(k, k): v for k, v in candidate.items()}
        found = _architecture(*(_int(cfg.get(key)) for key in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")))
        if found:
            return found
    return None


def architecture_from_gguf(fields: dict[str, Any]) -> dict[str, int] | None:
    """The same shape from the GGUF header fields the lock keeps (llmctl.lock.local.read_gguf_header)."""
    return _architecture(*(_int(fields.get(key)) for key in (
        "block_count", "embedding_length", "head_count", "head_count_kv", "key_length")))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _architecture(layers: int | None, hidden: int | None, heads: int | None, kv_heads: int | None,
                  head_dim: int | None) -> dict[str, int] | None:
    """The shape the KV-cache estimate needs; KV heads default to attention heads, head_dim to hidden/heads."""
    if layers is None or hidden is None:
        return None
    out = {"num_hidden_layers": layers, "hidden_size": hidden}
    kv_heads = kv_heads or heads
    head_dim = head_dim or (hidden // heads if heads else None)
    if kv_heads:
        out["num_key_value_heads"] = kv_heads
    if head_dim:
        out["head_dim"] = head_dim
    return out
