"""The GPU memory fit check: the numbers a reviewer reads in the plan."""
from __future__ import annotations

from llmctl.config.schema import Model
from llmctl.cost.fit import GIB, check_fit, kv_cache_bytes, weights_bytes

QWEN_7B = {"num_hidden_layers": 28, "num_key_value_heads": 4, "head_dim": 128, "hidden_size": 3584}
LLAMA_70B = {"num_hidden_layers": 80, "num_key_value_heads": 8, "head_dim": 128, "hidden_size": 8192}


def model(**fields) -> Model:
    return Model.model_validate({"name": "m", "source": "hf://org/repo", "engine": "vllm", **fields})


def test_a_7b_model_fits_one_a10g_with_the_numbers_shown() -> None:
    qwen = model(context_length=8192, engine_args={"dtype": "bfloat16"}, replicas={"min": 1, "max": 3},
                 autoscale={"metric": "concurrency", "target": 8})
    weights = weights_bytes(qwen, 7_615_616_512, 2, None)
    fit = check_fit(qwen, weights, kv_cache_bytes(qwen, QWEN_7B), "A10G", 24, 1)
    # 7.6e9 × 2 B = 14.2 GiB; KV 2 × 28 × 4 × 128 × 2 B × 8192 tokens × 8 sequences = 3.5 GiB; + 1.5 GiB overhead.
    assert (fit.weights_gib, fit.kv_cache_gib, fit.needs_gib, fit.usable_gib) == (14.19, 3.5, 19.19, 21.6)
    assert fit.fits and fit.share == 0.888
    assert "needs 19.2 GiB" in fit.message and "24 GiB × 1 × 0.90 = 21.6 GiB → fits, 89%" in fit.message


def test_a_70b_model_does_not_fit_one_a10g_and_the_message_says_what_would() -> None:
    llama = model(context_length=8192)
    fit = check_fit(llama, weights_bytes(llama, 70_553_706_496, 2, None), kv_cache_bytes(llama, LLAMA_70B),
                    "A10G", 24, 1)
    assert not fit.fits
    assert fit.needs_gib > 130 and "does not fit: use gpu count 7" in fit.message


def test_engine_args_change_the_arithmetic() -> None:
    fp8 = model(engine_args={"dtype": "fp8", "gpu_memory_utilization": 0.5})
    assert weights_bytes(fp8, 1_000_000_000, 2, None) == 1_000_000_000
    assert check_fit(fp8, 10 * GIB, 0, "L4", 24, 1).usable_gib == 12.0


def test_a_quantised_file_counts_as_its_size_and_no_architecture_means_no_kv_estimate() -> None:
    gguf = model(engine="llama-cpp", context_length=2048)
    assert weights_bytes(gguf, None, None, 100_000_000) == 100_000_000
    assert kv_cache_bytes(gguf, None) == 0
