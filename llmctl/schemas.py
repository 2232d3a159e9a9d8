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


def config_reference() -> str:
    """The config reference as Markdown tables, one per object, generated from the JSON schema."""
    schema = Config.model_json_schema()
    objects = {"llmops.yaml": schema, **schema["$defs"]}
    parts = []
    for name, definition in objects.items():
        if "properties" not in definition:
            continue
        required = set(definition.get("required", []))
        rows = ["| field | type | default | description |", "|---|---|---|---|"]
        for field, prop in definition["properties"].items():
            default = "required" if field in required else json.dumps(prop["default"]) if "default" in prop else ""
            cells = [f"`{field}`", _type(prop), _cell(default), _cell(prop.get("description", ""))]
            rows.append(f"| {' | '.join(cells)} |")
        doc = (definition.get("description") or "").strip().split("\n")[0]
        parts.append(f"#### {name}\n{doc + chr(10) if doc else ''}\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(prop: dict) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[1]
    if "enum" in prop:
        return " \\| ".join(json.dumps(value) for value in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " \\| ".join(_type(option) for option in prop[key])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if prop.get("type") == "object":
        values = prop.get("additionalProperties") or next(iter(prop.get("patternProperties", {}).values()), None)
        return f"map of name to {_type(values)}" if isinstance(values, dict) else "object"
    return str(prop.get("type", "any"))
