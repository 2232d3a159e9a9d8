"""Configs the lock's tests resolve, and helpers to count the scripted hub's requests and reach a closed port."""
from __future__ import annotations

import socket
from pathlib import Path

from hub_server import HubServer
from llmctl.config.schema import Config
from llmctl.desired import Desired

QWEN = "hf://Qwen/Qwen2.5-7B-Instruct"
LLAMA = "hf://meta-llama/Llama-3.3-70B-Instruct"
SMOL = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = {"name": "answer", "system": "Be brief.", "template": "Answer: {{ question }}", "variables": ["question"]}


def desired(config_dir: Path, models: dict[str, str], prompts: list[dict] | None = None) -> Desired:
    entries = [{"name": name, "source": source, **({} if source.startswith("api://") else {"engine": "vllm"})}
               for name, source in models.items()]
    config = Config.model_validate({"version": 1, "project": "p", "models": entries,
                                    "prompts": [PROMPT] if prompts is None else prompts})
    return Desired.from_parts(config, config_dir)


def hub_calls(hub: HubServer) -> int:
    return len(hub.requests)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
