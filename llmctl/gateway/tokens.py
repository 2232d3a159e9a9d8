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
import mmap
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

from llmctl.gateway.spec import TokenizerSpec

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


# GGUF value types (the GGUF spec): scalars by struct format, then string and array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_GGUF_MAGIC = b"GGUF"
_USER_DEFINED = 4  # tokenizer.ggml.token_type value (llama_token_type LLAMA_TOKEN_TYPE_USER_DEFINED)
_WANTED = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
           "tokenizer.ggml.merges")


def read_gguf_tokenizer(path: Path) -> dict[str, Any]:
    """The tokenizer.ggml.{model,pre,tokens,token_type,merges} metadata of a GGUF file (absent keys are absent).

    A direct read of the key/value section: gguf.GGUFReader decodes every value of the file into numpy views and
    takes about 4 s on SmolLM2-135M; this takes about 0.1 s. llmctl.lock.read_gguf_header skips arrays, and the
    vocabulary is one."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _GgufKv(data).read(_WANTED)


class _GgufKv:
    def __init__(self, data: mmap.mmap) -> None:
        if data[:4] != _GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        version = struct.unpack_from("<I", data, 4)[0]
        self.order = "<" if version & 0xFFFF else ">"  # big-endian files exist, rarely
        if struct.unpack_from(self.order + "I", data, 4)[0] < 2:
            raise ValueError("GGUF v1 is not supported")
        self.data, self.pos = data, 8

    def read(self, wanted: tuple[str, ...]) -> dict[str, Any]:
        self._unpack("Q")  # tensor count
        out: dict[str, Any] = {}
        for _ in range(self._unpack("Q")):
            key = self._string()
            value = self._value(self._unpack("I"), keep=key in wanted)
            if key in wanted:
                out[key] = value
                if len(out) == len(wanted):
                    break
        return out

    def _unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(self.order + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(self.order + fmt)
        return value

    def _string(self, keep: bool = True) -> str | None:
        length = self._unpack("Q")
        start, self.pos = self.pos, self.pos + length
        if self.pos > len(self.data):
            raise ValueError("truncated GGUF file")
        return self.data[start:self.pos].decode("utf-8") if keep else None

    def _value(self, kind: int, keep: bool) -> Any:
        if kind in _SCALARS:
            return self._unpack(_SCALARS[kind])
        if kind == _STRING:
            return self._string(keep)
        if kind != _ARRAY:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = self._unpack("I"), self._unpack("Q")
        if item in _SCALARS:  # one unpack for the whole array (token types: 49k of them for SmolLM2)
            fmt = f"{self.order}{count}{_SCALARS[item]}"
            values = list(struct.unpack_from(fmt, self.data, self.pos)) if keep else None
            self.pos += struct.calcsize(fmt)
            return values
        values = [self._value(item, keep) for _ in range(count)]
        return values if keep else None
