"""JSON schemas generated from the pydantic models: the config contract and the plan format."""
from __future__ import annotations

import json

from llmctl.config.schema import Config
from llmctl.plan.model import Plan

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> str:
    return _dump({"$schema": SCHEMA_DIALECT, **Config.model_json_schema()})


def plan_schema() -> str:
    return _dump({"$schema": SCHEMA_DIALECT, **Plan.model_json_schema()})


def _dump(schema: dict) -> str:
    return json.dumps(schema, indent=2) + "\n"
