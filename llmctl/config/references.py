"""Checks across sections: unique names, references that resolve, fields that only make sense together.

They run on the raw YAML data, beside schema validation, so that a file with a type error and a dangling
reference reports both at once. Values of the wrong type are left to the schema's errors.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

from llmctl.config.schema import DEFAULT_TARGET, SECTIONS, Slo, duration_seconds
from llmctl.config.sources import parse_source
from llmctl.errors import did_you_mean

DataPath = tuple[str | int, ...]
Problem = tuple[DataPath, str]

# Fields that describe infrastructure; a hosted api:// model has none.
_INFRA_FIELDS = ("engine", "engine_args", "target", "gpu", "instance_type", "replicas", "autoscale", "context_length")
# model field -> the section its value names
_SINGLE_REFS = {"prompt": "prompts", "slo": "slos", "budget": "budgets", "rollout": "rollouts"}
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def check_references(data: dict[str, Any]) -> list[Problem]:
    names = {section: _names(data, section) for section in SECTIONS}
    targets = data.get("targets")
    names["targets"] = ([str(key) for key in targets] if isinstance(targets, dict) else []) + [DEFAULT_TARGET]
    problems = [problem for section in SECTIONS for problem in _duplicates(data, section)]
    for index, model in _items(data, "models"):
        problems += _model_problems(model, ("models", index), names)
    for index, prompt in _items(data, "prompts"):
        problems += _prompt_problems(prompt, ("prompts", index))
    gateway = data.get("gateway")
    keys = gateway.get("keys") if isinstance(gateway, dict) else None
    for index, key in enumerate(keys if isinstance(keys, list) else []):
        allowed = key.get("models") if isinstance(key, dict) else None
        for position, model in enumerate(allowed if isinstance(allowed, list) else []):
            message = _dangling(model, "model", names["models"], f"gateway key '{key.get('name', index)}'")
            if message:
                problems.append((("gateway", "keys", index, "models", position), message))
    key_names = [key["name"] for key in keys if isinstance(key, dict) and isinstance(key.get("name"), str)] \
        if isinstance(keys, list) else []
    problems += _team_problems(gateway if isinstance(gateway, dict) else {}, names)
    for index, evaluation in _items(data, "evals"):
        problems += _eval_problems(evaluation, ("evals", index), names["models"])
        message = _dangling(evaluation.get("key"), "gateway key", key_names, f"eval '{evaluation.get('name', index)}'")
        if message:
            problems.append((("evals", index, "key"), f"{message}: declare it in gateway.keys, or leave `key` out to "
                                                      "ask with llmctl's own key"))
    used = {model.get("rollout") for _, model in _items(data, "models")}
    for index, rollout in _items(data, "rollouts"):
        problems += _rollout_problems(rollout, ("rollouts", index), names, used)
    for index, slo in _items(data, "slos"):
        problems += _slo_problems(slo, ("slos", index))
    problems += _monitoring_problems(data.get("monitoring"))
    for index, budget in _items(data, "budgets"):
        scope = budget.get("scope")
        for position, model in enumerate(scope if isinstance(scope, list) else []):
            message = _dangling(model, "model", names["models"], f"budget '{budget.get('name', index)}' scope")
            if message:
                problems.append((("budgets", index, "scope", position), message))
    return problems


def _team_problems(gateway: dict[str, Any], names: dict[str, list[str]]) -> list[Problem]:
    """Each team's budget is declared, and once teams are listed, every key's team is one of them (a team named
    only on a key would have no budget, silently)."""
    problems: list[Problem] = list(_duplicates(gateway, "teams", "team"))
    teams = list(_items(gateway, "teams"))
    for index, team in teams:
        message = _dangling(team.get("budget"), "budget", names["budgets"], f"team '{team.get('name', index)}'")
        if message:
            problems.append((("gateway", "teams", index, "budget"), message))
    declared = sorted({team["name"] for _, team in teams if isinstance(team.get("name"), str)})
    for index, key in _items(gateway, "keys") if teams else ():
        message = _dangling(key.get("team"), "team", declared, f"gateway key '{key.get('name', index)}'")
        if message:
            problems.append((("gateway", "keys", index, "team"), f"{message}: add it to gateway.teams"))
    return [(("gateway", *at) if at[0] == "teams" else at, message) for at, message in problems]


def _items(data: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    items = data.get(section)
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item


def _names(data: dict[str, Any], section: str) -> list[str]:
    return [item["name"] for _, item in _items(data, section) if isinstance(item.get("name"), str)]


def _duplicates(data: dict[str, Any], section: str, kind: str | None = None) -> Iterator[Problem]:
    first: dict[str, int] = {}
    for index, item in _items(data, section):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            yield (section, index, "name"), (
                f"duplicate {kind or SECTIONS[section]} name '{name}' (also {section}[{first[name]}]): names must be unique"
            )
        else:
            first[name] = index


def _dangling(value: Any, kind: str, declared: list[str], where: str) -> str | None:
    if not isinstance(value, str) or value in declared:
        return None
    listed = ", ".join(sorted(declared)) or "none"
    return f"{where} names {kind} '{value}', which is not declared{did_you_mean(value, declared)} (declared: {listed})"


def _model_problems(model: dict[str, Any], at: DataPath, names: dict[str, list[str]]) -> list[Problem]:
    label = f"model '{model.get('name', at[1])}'"
    problems: list[Problem] = []
    for field, section in _SINGLE_REFS.items():
        message = _dangling(model.get(field), SECTIONS[section], names[section], label)
        if message:
            problems.append((at + (field,), message))
    for field, section in (("guardrails", "guardrails"), ("evals", "evals")):
        listed = model.get(field)
        for index, name in enumerate(listed if isinstance(listed, list) else []):
            message = _dangling(name, SECTIONS[section], names[section], label)
            if message:
                problems.append((at + (field, index), message))

    try:
        hosted = isinstance(model.get("source"), str) and parse_source(model["source"]).hosted
    except ValueError:  # the schema reports the source itself; a malformed api:// is still a hosted model
        hosted = model["source"].lower().startswith("api://")
    if hosted:
        problems += [
            (at + (field,), f"{label} is hosted (api://): remove '{field}', it has no infrastructure")
            for field in _INFRA_FIELDS
            if field in model
        ]
        return problems
    message = _dangling(model.get("target"), "target", names["targets"], label)
    if message:
        problems.append((at + ("target",), message))
    if "engine" not in model and "source" in model:
        problems.append((at, f"{label} needs an engine: llama-cpp, vllm or tgi"))
    if "gpu" in model and "instance_type" in model:
        problems.append((at + ("instance_type",), f"{label}: set gpu or instance_type, not both"))
    if "autoscale" in model and not isinstance(model.get("replicas"), dict):
        problems.append((at + ("autoscale",), f"{label}: autoscale needs replicas as {{min, max}}"))
    if "price" in model:
        problems.append((at + ("price",), f"{label}: `price` is for hosted (api://) models: remove it; a model llmctl "
                                          "serves is priced by its target (the GPU catalog, or gpu_hour_usd)"))
    return problems


def _slo_problems(data: dict[str, Any], at: DataPath) -> list[Problem]:
    """An objective whose error budget makes the page alert impossible (its threshold would be a ratio above 1)."""
    from llmctl.monitor.burn import impossible, objectives  # the burn-rate maths lives with the rules it shapes

    try:
        slo = Slo.model_validate(data)
    except ValidationError:
        return []  # the schema reports it
    window_s = duration_seconds(slo.window)
    return [(at + (objective.field,), f"slo '{slo.name}' {objective.field}: {why}")
            for objective in objectives(slo) if (why := impossible(objective, window_s))]


def _eval_problems(evaluation: dict[str, Any], at: DataPath, models: list[str]) -> list[Problem]:
    """Each assertion of an eval, its inline cases' included: a known type and a value that type can use."""
    from llmctl.evals.checks import assertion_problems  # what an assertion's value must be lives with assertions

    label = f"eval '{evaluation.get('name', at[1])}'"
    found = [(at + ("assert", i), a) for i, a in enumerate(_list(evaluation.get("assert")))]
    for c, case in enumerate(_list(evaluation.get("cases"))):
        if isinstance(case, dict):
            found += [(at + ("cases", c, "assert", i), a) for i, a in enumerate(_list(case.get("assert")))]
    return [(where + (field,), f"{label}: {message}") for where, assertion in found if isinstance(assertion, dict)
            for field, message in assertion_problems(assertion, models)]


def _rollout_problems(rollout: dict[str, Any], at: DataPath, names: dict[str, list[str]],
                      used: set[Any]) -> list[Problem]:
    label = f"rollout '{rollout.get('name', at[1])}'"
    problems: list[Problem] = []
    if rollout.get("name") not in used:
        problems.append((at, f"{label} is used by no model: name it in a model's `rollout`, or remove it"))
    strategy = rollout.get("strategy", "canary")
    steps = [step for step in _list(rollout.get("steps")) if isinstance(step, dict)]
    if strategy == "canary":
        weights = [step.get("weight") for step in steps]
        if not steps:
            problems.append((at, f"{label}: a canary needs `steps`, e.g. [{{weight: 10, duration: 5m}}, "
                                 "{weight: 100}]"))
        elif all(isinstance(w, int) for w in weights):
            if weights[-1] != 100:
                problems.append((at + ("steps",), f"{label}: the steps' weights end at {weights[-1]}, not 100: add "
                                                  "a last step {weight: 100}, which promotes"))
            rising = all(a < b for a, b in zip(weights, weights[1:]))
            if not rising:
                problems.append((at + ("steps",), f"{label}: the steps' weights must rise ({', '.join(map(str, weights))})"))
        for index, step in enumerate(steps):
            if step.get("weight") != 100 and step.get("duration") is None and not step.get("pause"):
                problems.append((at + ("steps", index), f"{label}: step {index + 1} (weight {step.get('weight')}) has "
                                 "no duration and no pause: give it a duration to analyse over, or pause: true"))
    elif steps:
        problems.append((at + ("steps",), f"{label}: {strategy} takes no steps (only canary does)"))
    if strategy != "blue_green":
        problems += [(at + (field,), f"{label}: `{field}` is for blue_green only")
                     for field in ("preview", "keep_previous") if field in rollout]
    analysis = rollout.get("analysis")
    if isinstance(analysis, dict):
        message = _dangling(analysis.get("slo"), "slo", names["slos"], f"{label} analysis")
        if message:
            problems.append((at + ("analysis", "slo"), message))
        for index, name in enumerate(_list(analysis.get("evals"))):
            message = _dangling(name, "eval", names["evals"], f"{label} analysis")
            if message:
                problems.append((at + ("analysis", "evals", index), message))
    return problems


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _monitoring_problems(monitoring: Any) -> list[Problem]:
    if not isinstance(monitoring, dict):
        return []
    receivers = [r for r in monitoring.get("receivers") or [] if isinstance(r, dict)]
    problems = list(_duplicates({"receivers": receivers}, "receivers", "receiver"))
    problems = [(("monitoring",) + path, message) for path, message in problems]
    declared = [r["name"] for r in receivers if isinstance(r.get("name"), str)]
    routes = monitoring.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            message = _dangling(route.get("to"), "receiver", declared, f"monitoring route {index + 1}")
            if message:
                problems.append((("monitoring", "routes", index, "to"),
                                 f"{message}: declare it in monitoring.receivers, or route to a declared one"))
    alertmanager = monitoring.get("alertmanager")
    if isinstance(alertmanager, dict) and alertmanager.get("run") is True and not declared:
        problems.append((("monitoring", "alertmanager", "run"),
                         "an Alertmanager with no receivers would route alerts nowhere: declare monitoring.receivers "
                         "(and routes), or set run: false"))
    return problems


def _prompt_problems(prompt: dict[str, Any], at: DataPath) -> list[Problem]:
    template, declared = prompt.get("template"), prompt.get("variables", [])
    if not isinstance(template, str) or not isinstance(declared, list):
        return []
    label = f"prompt '{prompt.get('name')}'"
    templates = [(at + ("template",), label, template)]
    variants = [v for v in _list(prompt.get("variants")) if isinstance(v, dict)]
    templates += [(at + ("variants", i, "template"), f"{label} variant {v.get('version')}", v.get("template"))
                  for i, v in enumerate(variants) if isinstance(v.get("template"), str)]
    problems = [(where, f"{who} uses {{{{ {variable} }}}}, which is not in its variables")
                for where, who, text in templates for variable in dict.fromkeys(_TEMPLATE_VARIABLE.findall(text))
                if variable not in declared]
    seen = {prompt.get("version", 1)}
    for i, variant in enumerate(variants):
        if variant.get("version") in seen:
            problems.append((at + ("variants", i, "version"), f"{label}: version {variant.get('version')} is served "
                             "twice; give each variant a version of its own"))
        seen.add(variant.get("version"))
    weights = [v.get("weight") for v in variants]
    if all(isinstance(w, int) for w in weights) and sum(weights) >= 100:  # type: ignore[arg-type]
        problems.append((at + ("variants",), f"{label}: its variants' weights add up to {sum(weights)}%, leaving "  # type: ignore[arg-type]
                         f"nothing for version {prompt.get('version', 1)}: keep them under 100"))
    return problems
