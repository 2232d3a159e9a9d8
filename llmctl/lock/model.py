"""The lock's document: what each model source, prompt and eval dataset resolved to, and the versions of the prices
(the GPU catalog, the hosted-API price library)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from llmctl.errors import LlmctlError

LOCK_VERSION = 1


class LockError(LlmctlError):
    """The lock cannot be read or a model cannot be pinned; the message names the model and what to do."""


class ModelLock(BaseModel):
    source: str  # as written in the config
    kind: Literal["hf", "file", "api"]
    revision: str | None = None  # hf: as requested (default "main")
    sha: str | None = None  # hf: the commit it resolved to
    parameters: int | None = None  # hf: from the safetensors headers (else the hub's count); GGUF: its tensors
    dtype: str | None = None  # hf: the dominant weight dtype (BF16); GGUF: its file type (Q4_1)
    bytes_per_param: float | None = None  # of `dtype`
    weights_bytes: int | None = None  # hf: every weight × the bytes of its dtype; file: the file's size
    file_sha256: str | None = None  # file and pkg:// sources
    architecture: dict[str, int] | None = None  # num_hidden_layers, num_key_value_heads, head_dim, hidden_size
    gguf: dict[str, Any] | None = None  # GGUF header fields: architecture, block_count, context_length, ...


class Lock(BaseModel):
    lock_version: Literal[1] = 1
    models: dict[str, ModelLock]
    prompts: dict[str, str]  # prompt name -> sha256 of its system text, template and variables
    datasets: dict[str, str] = {}  # eval name -> sha256 of its JSONL dataset file: a plan shows one that changed
    prices: str | None = None  # the price catalog version the plan used
    api_prices: str | None = None  # the hosted-API price library the plan used ("genai-prices 0.2.3"), if any
