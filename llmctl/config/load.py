"""Read llmops.yaml into a validated Config, keeping the line and column of every key for error messages."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmctl.config.errors import ConfigError, Diagnostic
from llmctl.config.references import check_references
from llmctl.config.schema import Config
from llmctl.errors import did_you_mean

DataPath = tuple[str | int, ...]
Positions = dict[DataPath, tuple[int, int]]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load(path: Path, environment: str | None = None) -> LoadedConfig:
    """Load and check `path`; raise ConfigError with every problem found. `environment` overrides the file's."""
    shown = str(path)
    text = _read(path, shown)
    data, positions, duplicates = _parse(text, shown)
    if environment is not None:
        data["environment"] = environment
    problems = duplicates + [_diagnostic(shown, positions, data, error) for error in _validation_errors(data)]
    problems += [
        Diagnostic(shown, *_position(positions, where), message) for where, message in check_references(data)
    ]
    if problems:
        raise ConfigError(problems)
    config = Config.model_validate(data)
    problems = _dataset_problems(config, path, shown, positions)
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(config, path.resolve())


def _dataset_problems(config: Config, path: Path, shown: str, positions: Positions) -> list[Diagnostic]:
    """Each eval's dataset file exists and every line of it is a case (reported at the dataset's own lines)."""
    from llmctl.evals.dataset import dataset_path, read_dataset

    problems = []
    models = [model.name for model in config.models]
    for index, evaluation in enumerate(config.evals):
        if evaluation.dataset is None:
            continue
        where = _position(positions, ("evals", index, "dataset"))
        file = dataset_path(path.parent, evaluation.dataset)
        if not file.is_file():
            problems.append(Diagnostic(shown, *where, f"eval '{evaluation.name}': dataset {evaluation.dataset} "
                                                      f"not found (looked for {file}): paths are relative to the config"))
            continue
        problems += read_dataset(file, str(Path(shown).parent / evaluation.dataset), models)[1]
    return problems


def _read(path: Path, shown: str) -> str:
    if path.is_dir():
        raise ConfigError([Diagnostic(shown, 1, 1, "is a directory: pass the llmops.yaml file inside it with -f")])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Diagnostic(shown, 1, 1, "file not found: create one with `llmctl init` or pass another with -f")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Diagnostic(shown, 1, 1, f"cannot read the file: {exc}")]) from None
    if not text.strip() or all(line.lstrip().startswith("#") or not line.strip() for line in text.splitlines()):
        raise ConfigError(
            [Diagnostic(shown, 1, 1, "the file is empty: it needs at least `version: 1` and `project: NAME`")]
        )
    return text


# libyaml's parser where PyYAML was built with it: 4x faster on a 1,000-model file, with the same marks.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, shown: str) -> tuple[dict[str, Any], Positions, list[Diagnostic]]:
    try:
        return _parse_with(_FAST_LOADER, text, shown)
    except ConfigError:
        if _FAST_LOADER is yaml.SafeLoader:
            raise
    # libyaml's syntax errors say less ("a character that cannot start any token" for a tab): a file that does not
    # parse is parsed again by PyYAML's own parser, whose messages name what it found.
    return _parse_with(yaml.SafeLoader, text, shown)


def _parse_with(loader_class: type, text: str, shown: str) -> tuple[dict[str, Any], Positions, list[Diagnostic]]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Diagnostic(shown, 1, 1, "the file holds no YAML document")])
        positions: Positions = {(): (node.start_mark.line + 1, node.start_mark.column + 1)}
        duplicates: list[Diagnostic] = []
        _index(node, (), positions, duplicates, shown)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = exc.context
        if context and exc.context_mark and exc.context_mark is not mark:
            # e.g. where an unclosed bracket or quote was opened
            context += f" (from line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}):"
        problem = " ".join(part for part in (context, exc.problem) if part)
        raise ConfigError([Diagnostic(shown, line, col, f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Diagnostic(shown, 1, 1, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([Diagnostic(shown, 1, 1, "the top level must be a mapping with version, project, models...")])
    return data, positions, duplicates


def _index(
    node: yaml.Node,
    path: DataPath,
    positions: Positions,
    duplicates: list[Diagnostic],
    shown: str,
    parents: tuple[yaml.Node, ...] = (),
) -> None:
    """Record the position of every mapping key and sequence item; PyYAML would silently keep the last duplicate."""
    if any(node is parent for parent in parents):
        return  # an alias to an enclosing node (`&a [*a]`): already indexed, and endless
    parents += (node,)
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: the constructor reports it as unhashable
            key = key_node.value
            here = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in first:
                duplicates.append(Diagnostic(shown, *here, f"duplicate key '{key}' (first at line {first[key]})"))
                # PyYAML keeps the last value: index it in place of the earlier one
                for stale in [p for p in positions if p[: len(path) + 1] == path + (key,)]:
                    del positions[stale]
            else:
                first[key] = here[0]
            positions[path + (key,)] = here
            _index(value_node, path + (key,), positions, duplicates, shown, parents)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            positions[path + (index,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _index(item, path + (index,), positions, duplicates, shown, parents)


def _validation_errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        return exc.errors(include_url=False)
    return []


def _position(positions: Positions, path: DataPath) -> tuple[int, int]:
    """Where `path` is in the file, or its nearest existing parent (a missing key points at its mapping)."""
    while path not in positions:
        path = path[:-1]
    return positions[path]


def _data_path(data: Any, loc: tuple[str | int, ...], keep_last: bool) -> DataPath:
    """`loc` without the union tags pydantic inserts: parts that do not exist in the data."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            node = None
        else:
            continue
        path.append(part)
    return tuple(path)


def _display(data: Any, path: DataPath) -> str:
    """models[assistant].replicas: list items are shown by name where they have one."""
    text, node = "", data
    for part in path:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node[part], dict) else None
            text += f"[{name}]" if isinstance(name, str) else f"[{part}]"
            node = node[part]
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text or "(top level)"


def _diagnostic(shown: str, positions: Positions, data: dict[str, Any], error: dict[str, Any]) -> Diagnostic:
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    path = _data_path(data, loc, keep_last=kind in ("missing", "extra_forbidden"))
    where = _display(data, path)
    got = error.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        parent = _display(data, path[:-1])
        message = f"unknown field '{path[-1]}' in {parent}{did_you_mean(str(path[-1]), allowed)}"
        if allowed:
            message += f" (allowed: {', '.join(sorted(allowed))})"
    elif kind == "missing":
        message = f"{_display(data, path[:-1])}: missing required field '{path[-1]}'"
    elif kind == "union_tag_invalid":
        path += ("provider",)
        expected = [tag.strip(" '") for tag in str(ctx.get("expected_tags", "")).split(",")]
        message = f"{where}.provider: unknown provider '{ctx.get('tag')}'{did_you_mean(str(ctx.get('tag')), expected)}"
        message += f" (expected one of: {', '.join(expected)})"
    elif kind == "union_tag_not_found":
        message = f"{where}: missing required field 'provider' (one of: local, aws, kubernetes)"
    elif kind == "literal_error":
        expected = [option.strip(" '") for option in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        # no hint when the text matches but the type does not (version: "1")
        hint = did_you_mean(got, [option for option in expected if option != got]) if isinstance(got, str) else ""
        message = f"{where}: {_value(got)} is not allowed{hint} (expected {ctx.get('expected')})"
    else:
        msg = str(error["msg"]).removeprefix("Value error, ")
        message = f"{where}: {msg[0].lower() + msg[1:]}"
        if not isinstance(got, (dict, list)) and kind != "value_error":
            message += f", got {_value(got)}"
    return Diagnostic(shown, *_position(positions, path), message)


def _value(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The field names allowed at `loc`, following pydantic's loc (with its union tags) through the model classes."""
    tp: Any = Config
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    tp = _resolve(tp, None)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _step(tp: Any, part: str | int) -> Any:
    tp = _resolve(tp, part)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if part in tp.model_fields:
            return tp.model_fields[str(part)].annotation
        return tp  # a union tag that named this very class
    origin = typing.get_origin(tp)
    if origin is list:
        return typing.get_args(tp)[0]
    if origin is dict:
        return typing.get_args(tp)[1]
    return None


def _resolve(tp: Any, part: str | int | None) -> Any:
    """Unwrap Annotated and pick the union member a pydantic tag names (or the only model member)."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            chosen = [m for m in members if _tag_of(m) == part] or [
                m for m in members if isinstance(_resolve(m, None), type) and issubclass(_resolve(m, None), BaseModel)
            ]
            if len(chosen) != 1:
                return None
            tp = chosen[0]
            continue
        return tp


def _tag_of(member: Any) -> str | None:
    """A union member's tag: a pydantic Tag annotation, or the Literal value of its `provider` field."""
    for meta in getattr(member, "__metadata__", ()):
        if hasattr(meta, "tag"):
            return meta.tag
    if isinstance(member, type) and issubclass(member, BaseModel) and "provider" in member.model_fields:
        return typing.get_args(member.model_fields["provider"].annotation)[0]
    return None
