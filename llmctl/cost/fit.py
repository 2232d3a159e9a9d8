"""Will a model fit its GPUs? Weights + KV cache at full context × expected concurrency + runtime overhead, against
GPU memory × count × the share of it the engine takes."""
from __future__ import annotations

import math

from pydantic import BaseModel

from llmctl.config.schema import Model

GIB = 1024**3
# The share of GPU memory each engine takes by default: vLLM's gpu_memory_utilization default; TGI's
# cuda_memory_fraction is 1.0 but it keeps a margin for its warm-up, taken here as the same 0.90.
ENGINE_UTILISATION = {"vllm": 0.90, "tgi": 0.90, "llama-cpp": 1.0}
# CUDA context, activations and graph capture, beside weights and KV cache: a conservative estimate.
RUNTIME_OVERHEAD_GIB = 1.5
# engine_args dtype names -> bytes per parameter
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2, "auto": 2,
               "fp8": 1, "int8": 1, "int4": 0.5}
KV_BYTES = 2  # fp16/bf16 KV cache


class Fit(BaseModel):
    model: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    utilisation: float
    usable_gib: float
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    needs_gib: float
    concurrency: int
    fits: bool
    share: float
    suggestion: str | None = None

    @property
    def message(self) -> str:
        verdict = f"fits, {self.share:.0%}" if self.fits else "does not fit" + (
            f": {self.suggestion}" if self.suggestion else "")
        return (f"needs {self.needs_gib:.1f} GiB (weights {self.weights_gib:.1f} + KV cache {self.kv_cache_gib:.1f} + "
                f"overhead {self.overhead_gib:.1f}), {self.gpu_count} × {self.gpu} has {self.gpu_memory_gib:g} GiB × "
                f"{self.gpu_count} × {self.utilisation:.2f} = {self.usable_gib:.1f} GiB → {verdict}")


def expected_concurrency(model: Model) -> int:
    """Sequences resident at once: the autoscaler's concurrency target, else one full-context sequence."""
    if model.autoscale and model.autoscale.metric == "concurrency":
        return max(1, math.ceil(model.autoscale.target))
    return 1


def weights_bytes(model: Model, parameters: int | None, bytes_per_param: float | None,
                  file_bytes: int | None) -> float | None:
    """Quantised files count as their size; otherwise parameters × the dtype the engine is told to use."""
    if file_bytes is not None and parameters is None:
        return float(file_bytes)
    if parameters is None:
        return None
    dtype = str(model.engine_args.get("dtype", "")).lower()
    per_param = DTYPE_BYTES.get(dtype) if dtype else None
    return parameters * (per_param or bytes_per_param or 2)


def kv_cache_bytes(model: Model, architecture: dict[str, int] | None) -> float:
    if not architecture or not model.context_length:
        return 0.0
    per_token = 2 * architecture["num_hidden_layers"] * architecture["num_key_value_heads"] * \
        architecture["head_dim"] * KV_BYTES
    return float(per_token * model.context_length * expected_concurrency(model))


def check_fit(model: Model, weights: float, kv_cache: float, gpu: str, gpu_memory_gib: float, gpu_count: int,
              bigger: str | None = None) -> Fit:
    """`bigger` names a larger offer to suggest when it does not fit."""
    utilisation = float(model.engine_args.get("gpu_memory_utilization", ENGINE_UTILISATION.get(model.engine or "", 0.9)))
    usable = gpu_memory_gib * gpu_count * utilisation
    needs = weights / GIB + kv_cache / GIB + RUNTIME_OVERHEAD_GIB
    fits = needs <= usable
    suggestion = None
    if not fits:
        counts = math.ceil(needs / (gpu_memory_gib * utilisation))
        suggestion = f"use gpu count {counts}" + (f" or {bigger}" if bigger else "")
    return Fit(model=model.name, gpu=gpu, gpu_count=gpu_count, gpu_memory_gib=gpu_memory_gib, utilisation=utilisation,
               usable_gib=round(usable, 2), weights_gib=round(weights / GIB, 2), kv_cache_gib=round(kv_cache / GIB, 2),
               overhead_gib=RUNTIME_OVERHEAD_GIB, needs_gib=round(needs, 2), concurrency=expected_concurrency(model),
               fits=fits, share=round(needs / usable, 3) if usable else math.inf, suggestion=suggestion)
