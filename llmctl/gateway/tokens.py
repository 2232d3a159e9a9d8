"""Token counting for the gateway: the model's own tokenizer where llmctl can build it, else a documented estimate.

`counter_for(TokenizerSpec(kind="gguf"))` rebuilds a GGUF model's byte-level BPE tokenizer with the Hugging Face
`tokenizers` library from the vocabulary, merges and pre-tokenizer named in the file's metadata, so the count is the
one llama.cpp itself makes (tests compare them token for token). Tokenizers llmctl cannot rebuild (SentencePiece
"llama" GGUFs, unknown pre-tokenizers, unreadable files) fall back to the estimate, and the counter says so in
`exact` and `name`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

from llmctl.gateway.spec import TokenizerSpec
from llmctl.gguf import read_gguf

log = logging.getLogger(__name__)


class TokenCounter(Protocol):
    exact: bool
    name: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class EstimateCounter:
    """ceil(UTF-8 bytes / 4).

    Four characters per token is the usual figure for English with GPT-2 style byte-level BPEs (OpenAI's rule of
    thumb); for English text bytes and characters are the same. Counting bytes rather than characters keeps the
    estimate closer for everything else: byte-level BPEs see UTF-8 bytes, so Cyrillic, CJK and emoji cost more
    tokens per character, and bytes grow with them where characters do not (against SmolLM2's tokenizer the
    character estimate misses CJK by -83%, the byte estimate by -54%). Code, numbers and non-English text still
    come out low; English prose comes out somewhat high.
    """

    name: str = "estimate: ceil(utf-8 bytes / 4)"
    exact: bool = False

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / 4)


@dataclass(frozen=True)
class TokenizersCounter:
    tokenizer: Tokenizer
    name: str
    exact: bool = True

    def count(self, text: str) -> int:
        # Special tokens are neither added (BOS) nor parsed from the text: the count is of the text itself.
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


ESTIMATE = EstimateCounter()


def counter_for(spec: TokenizerSpec | None) -> TokenCounter:
    if spec is None:
        return ESTIMATE
    return _load(spec.kind, spec.path)


@cache  # one tokenizer per file for the life of the process: a gateway serves many requests per model
def _load(kind: str, path: str) -> TokenCounter:
    try:
        if kind == "tokenizer_json":
            return TokenizersCounter(Tokenizer.from_file(path), name=f"tokenizer.json: {path}")
        return _from_gguf(Path(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exceptions; a bad file must not stop the gateway
        log.warning("cannot load the %s tokenizer %s (%s); counting tokens with the estimate", kind, path, exc)
        return EstimateCounter(name=f"{ESTIMATE.name} ({kind} tokenizer unreadable)")


# --- GGUF byte-level BPE ---------------------------------------------------------------------------------------------

# Pre-tokenizer regexes by `tokenizer.ggml.pre`, as llama.cpp's llm_tokenizer_bpe applies them (in order, each
# splitting the pieces the previous one left, matches kept as pieces of their own).
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]


@dataclass(frozen=True)
class _PreTokenizer:
    regexes: list[str]
    ignore_merges: bool = False  # a word that is itself in the vocabulary is one token, whatever the merges say


_PRE: dict[str, _PreTokenizer] = {
    "default": _PreTokenizer(_DEFAULT),
    **dict.fromkeys(["gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"], _PreTokenizer([_GPT2])),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
                    _PreTokenizer([r"\p{N}", _GPT2])),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"], _PreTokenizer([_LLAMA3], True)),
    **dict.fromkeys(["dbrx", "smaug-bpe"], _PreTokenizer([_LLAMA3])),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"], _PreTokenizer([_QWEN2])),
}


def _from_gguf(path: Path) -> TokenCounter:
    meta = read_gguf_tokenizer(path)
    model, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre") or "default"
    if model != "gpt2" or pre not in _PRE or not meta.get("tokenizer.ggml.merges"):
        log.warning("%s: tokenizer %r with pre-tokenizer %r is not supported; counting tokens with the estimate",
                    path, model, pre)
        return EstimateCounter(name=f"{ESTIMATE.name} (unsupported GGUF tokenizer {model}/{pre})")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or []
    user_defined = [token for token, kind in zip(tokens, types) if kind == _USER_DEFINED]
    return TokenizersCounter(_bpe(tokens, meta["tokenizer.ggml.merges"], _PRE[pre], user_defined),
                             name=f"gguf {model}/{pre}: {path.name}")


def _bpe(tokens: list[str], merges: list[str], pre: _PreTokenizer, user_defined: list[str]) -> Tokenizer:
    vocab = {token: i for i, token in enumerate(tokens)}
    # llama.cpp splits a merge at the first space after its first character (a merge of " " itself starts with one).
    pairs = [(merge[:cut], merge[cut + 1:]) for merge in merges if (cut := merge.find(" ", 1)) > 0]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in pre.regexes]
        # The regexes above already split the text: ByteLevel only maps bytes to the vocabulary's characters.
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    # llama.cpp matches user-defined tokens (stored as raw text) in any text, before BPE; control tokens such as
    # <|im_start|> only when asked to parse specials, which a count of the text itself does not.
    tokenizer.add_tokens([AddedToken(token, normalized=False, special=False) for token in user_defined])
    return tokenizer


_USER_DEFINED = 4  # tokenizer.ggml.token_type value (llama_token_type LLAMA_TOKEN_TYPE_USER_DEFINED)
_WANTED = frozenset({"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                     "tokenizer.ggml.token_type", "tokenizer.ggml.merges"})


def read_gguf_tokenizer(path: Path) -> dict[str, Any]:
    """The tokenizer.ggml.{model,pre,tokens,token_type,merges} metadata of a GGUF file (absent keys are absent)."""
    with path.open("rb") as f:
        return read_gguf(f, _WANTED.__contains__).metadata
