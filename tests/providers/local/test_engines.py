"""How each local engine is started: the command line a user would see in the process list and the state file."""
from __future__ import annotations

import sys
from typing import Any

from providers.local.engines import LOCAL_ENGINES, command, missing


def spec(**fields: Any) -> dict[str, Any]:
    base = {"engine": "llama-cpp", "model": "/models/smol.gguf", "served_name": "assistant", "context_length": None,
            "engine_args": {}}
    return {**base, **fields}


def after(cmd: list[str], flag: str) -> str:
    """The value that follows `flag` on the command line."""
    assert flag in cmd, cmd
    return cmd[cmd.index(flag) + 1]


def pairs(cmd: list[str]) -> set[tuple[str, str]]:
    return set(zip(cmd, cmd[1:]))


# --- llama-cpp --------------------------------------------------------------------------------------------------


def test_llama_cpp_runs_the_llama_cpp_server_module_with_this_python() -> None:
    cmd = command(spec(), 8123)
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert after(cmd, "--model") == "/models/smol.gguf"
    assert after(cmd, "--host") == "127.0.0.1"
    assert after(cmd, "--port") == "8123"


def test_llama_cpp_serves_under_the_model_name() -> None:
    assert after(command(spec(served_name="support-bot"), 8000), "--model_alias") == "support-bot"


def test_llama_cpp_never_interrupts_a_stream_for_a_new_request() -> None:
    assert ("--interrupt_requests", "False") in pairs(command(spec(), 8000))


def test_llama_cpp_context_length_becomes_n_ctx() -> None:
    assert after(command(spec(context_length=1024), 8000), "--n_ctx") == "1024"


def test_llama_cpp_without_context_length_leaves_the_engine_default() -> None:
    assert "--n_ctx" not in command(spec(), 8000)


def test_llama_cpp_engine_args_are_passed_as_key_value() -> None:
    cmd = command(spec(engine_args={"n_threads": 2, "chat_format": "chatml", "verbose": False}), 8000)
    assert {("--n_threads", "2"), ("--chat_format", "chatml"), ("--verbose", "False")} <= pairs(cmd)


# --- vllm -------------------------------------------------------------------------------------------------------


def vllm(**fields: Any) -> list[str]:
    return command(spec(engine="vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct", **fields), 8200)


def test_vllm_serves_the_model_under_its_name() -> None:
    cmd = vllm(context_length=2048)
    assert cmd[0].endswith("vllm")
    assert cmd[1:3] == ["serve", "HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert after(cmd, "--served-model-name") == "assistant"
    assert after(cmd, "--max-model-len") == "2048"
    assert after(cmd, "--host") == "127.0.0.1"
    assert after(cmd, "--port") == "8200"


def test_vllm_without_revision_or_context_length_omits_them() -> None:
    cmd = vllm()
    assert "--revision" not in cmd
    assert "--max-model-len" not in cmd


def test_vllm_pins_the_revision() -> None:
    assert after(vllm(revision="0123abcd"), "--revision") == "0123abcd"


def test_vllm_engine_args_use_dashes_and_bare_boolean_flags() -> None:
    cmd = vllm(engine_args={"gpu_memory_utilization": 0.85, "enforce_eager": True, "trust_remote_code": False,
                            "dtype": "half"})
    assert after(cmd, "--gpu-memory-utilization") == "0.85"
    assert after(cmd, "--dtype") == "half"
    assert "--enforce-eager" in cmd
    assert "True" not in cmd
    assert not any("trust" in item for item in cmd)  # False: the flag is left off
    assert not any("_" in item for item in cmd if item.startswith("--"))


# --- missing ----------------------------------------------------------------------------------------------------


def test_unknown_engine_names_the_local_engines() -> None:
    why = missing("tgi")
    assert why is not None
    assert "tgi" in why
    for engine in LOCAL_ENGINES:
        assert engine in why
    assert set(LOCAL_ENGINES) == {"llama-cpp", "vllm"}


def test_installed_llama_cpp_is_not_missing() -> None:
    assert missing("llama-cpp") is None
