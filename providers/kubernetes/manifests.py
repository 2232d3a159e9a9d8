"""Plain Kubernetes YAML from a captured Kubernetes program: what `kubectl apply -f` would take."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from providers.pulumi_support.capture import Captured

# Top-level fields in the order manifests are written; within objects, `name` (then `namespace`, `type`) leads
# and the rest follow alphabetically, so a file is the same whatever order Pulumi's wire format returned.
_FIRST = ("apiVersion", "kind", "metadata", "spec", "data")
_NESTED_FIRST = ("name", "namespace", "type")


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None  # JSON and other multi-line text as a readable block
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifests(captured: list[Captured]) -> dict[str, str]:
    """File name (`deployment-llama-k8s.yaml`) -> one YAML document, for every Kubernetes object captured."""
    files: dict[str, str] = {}
    for resource in captured:
        inputs = resource.inputs
        if not resource.type.startswith("kubernetes:") or "kind" not in inputs or "apiVersion" not in inputs:
            continue  # the provider itself, or anything that is not an object
        obj = _ordered(_ints(inputs), _FIRST)
        name = f"{obj['kind'].lower()}-{obj.get('metadata', {}).get('name', resource.name)}.yaml"
        files[name] = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return files


def write_manifests(captured: list[Captured], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in manifests(captured).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def _ints(value: Any) -> Any:
    """Numbers come back from Pulumi's wire format as floats: whole ones are ints in a manifest."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _ints(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_ints(item) for item in value]
    return value


def _ordered(value: Any, first: tuple[str, ...] = _NESTED_FIRST) -> Any:
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    if not isinstance(value, dict):
        return value
    keys = [key for key in first if key in value] + sorted(key for key in value if key not in first)
    return {key: _ordered(value[key]) for key in keys}
