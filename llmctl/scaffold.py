"""`llmctl init`: a starting llmops.yaml that runs on the local target, with its JSON schema beside it."""
from __future__ import annotations

import shlex
from importlib import resources
from pathlib import Path

from llmctl.config.load import load
from llmctl.errors import LlmctlError
from llmctl.schemas import config_schema

SCHEMA_FILE = "llmops.schema.json"
# A fresh random key in the shell, for the hint: the gateway's keys are the user's own, never written by llmctl.
NEW_KEY = "$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"


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


def next_steps(config: Path) -> str:
    """The commands to run after init: into the config's directory, each gateway key the config reads from the
    environment exported (plan warns and apply refuses while one is unset), then plan."""
    gateway = load(config).config.gateway
    steps = [] if config.parent == Path(".") else [f"cd {shlex.quote(str(config.parent))}"]
    steps += [f"export {key.env}={NEW_KEY}" for key in (gateway.keys if gateway else []) if key.env]
    return "Next: " + " && ".join([*steps, "llmctl plan"])
