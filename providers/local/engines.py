"""How each engine is started as an OpenAI-compatible server on this machine."""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import sys
from typing import Any

from providers.local.process import HOST

# engine -> (what must be importable or on PATH, how to install it)
_NEEDS = {
    "llama-cpp": "llama-cpp-python with its server extra is not installed: pip install 'llmctl[local]'",
    "vllm": "vLLM is not installed: pip install vllm (it needs a supported GPU or a CPU build of vLLM)",
}
LOCAL_ENGINES = tuple(_NEEDS)


@functools.cache  # find_spec walks sys.path each time: a plan of 1,000 models asks 1,000 times
def missing(engine: str) -> str | None:
    """Why `engine` cannot run here, or None."""
    if engine == "llama-cpp":
        ok = all(importlib.util.find_spec(module) for module in ("llama_cpp", "uvicorn", "sse_starlette"))
    elif engine == "vllm":
        ok = shutil.which("vllm") is not None
    else:
        return f"engine '{engine}' has no local runner: use one of {', '.join(LOCAL_ENGINES)} on a local target"
    return None if ok else _NEEDS[engine]


def command(spec: dict[str, Any], port: int) -> list[str]:
    """The command line serving `spec` on `port`; `spec` is a local_process resource's spec."""
    args = spec.get("engine_args", {})
    if spec["engine"] == "llama-cpp":
        # interrupt_requests False: by default a new request cuts off the stream in progress.
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", spec["model"], "--model_alias", spec["served_name"],
               "--host", HOST, "--port", str(port), "--interrupt_requests", "False"]
        if spec.get("context_length"):
            cmd += ["--n_ctx", str(spec["context_length"])]
        if "n_threads_batch" not in args:
            # The server's default prefill threads is every core while decode uses half; with replicas side by
            # side, spinning llama.cpp threads oversubscribe the cores and time to first token jumps to seconds.
            cmd += ["--n_threads_batch", str(max((os.cpu_count() or 2) // 2, 1))]
        return cmd + [item for key, value in args.items() for item in (f"--{key}", str(value))]
    cmd = [shutil.which("vllm") or "vllm", "serve", spec["model"], "--served-model-name", spec["served_name"],
           "--host", HOST, "--port", str(port)]
    if spec.get("revision"):
        cmd += ["--revision", spec["revision"]]
    if spec.get("context_length"):
        cmd += ["--max-model-len", str(spec["context_length"])]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [] if value is False else [flag, str(value)]
    return cmd
