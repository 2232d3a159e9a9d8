"""`llmctl init`: a starting llmops.yaml that runs on the local target, with its JSON schema beside it."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.schemas import config_schema

SCHEMA_FILE = "llmops.schema.json"


def template(schema_ref: str) -> str:
    text = resources.files("llmctl").joinpath("templates/llmops.yaml").read_text()
    return text.replace("{schema}", schema_ref, 1)


def scaffold(directory: Path) -> Path:
    """Write DIR/llmops.yaml and DIR/llmops.schema.json (for editors); never overwrite a config."""
    target = directory / "llmops.yaml"
    if target.exists():
        raise LlmctlError(f"{target} already exists: edit it, or init another directory")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(template(SCHEMA_FILE))
    (directory / SCHEMA_FILE).write_text(config_schema())
    return target
