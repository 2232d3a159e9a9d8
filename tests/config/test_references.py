"""Checks across sections: unique names, references that resolve, fields that only make sense together."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmctl.config.errors import ConfigError, Diagnostic
from llmctl.config.load import load

Expected = list[tuple[int, int, list[str]]]


def diagnostics(tmp_path: Path, text: str) -> list[Diagnostic]:
    path = tmp_path / "llmops.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert all(d.file == str(path) for d in caught.value.diagnostics)
    return caught.value.diagnostics


def check(diags: list[Diagnostic], expected: Expected) -> None:
    shown = "\n".join(map(str, diags))
    assert [(d.line, d.col) for d in diags] == [(line, col) for line, col, _ in expected], shown
    for diagnostic, (_, _, words) in zip(diags, expected):
        for word in words:
            assert word in diagnostic.message, f"{word!r} not in: {diagnostic}"


def case(text: str, *expected: tuple[int, int, list[str]], id: str):  # noqa: A002
    return pytest.param(text, list(expected), id=id)


# --- duplicate names ---------------------------------------------------------------------------------------------

DUPLICATE_NAMES = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
          - name: b
            source: hf://a/b
            engine: vllm
          - name: a
            source: hf://a/c
            engine: tgi
        """,
        (10, 5, ["duplicate model name 'a'", "also models[0]", "must be unique"]),
        id="models",
    ),
    case(
        """\
        version: 1
        project: x
        prompts:
          - {name: p, template: hi}
          - {name: p, template: hello}
        """,
        (5, 6, ["duplicate prompt name 'p'", "also prompts[0]"]),
        id="prompts",
    ),
    case(
        """\
        version: 1
        project: x
        guardrails:
          - name: g
          - name: g
            input: {pii: block}
        """,
        (5, 5, ["duplicate guardrail name 'g'", "also guardrails[0]"]),
        id="guardrails",
    ),
    case(
        """\
        version: 1
        project: x
        budgets:
          - name: b
            limit_usd: 10
          - name: b
            limit_usd: 20
        """,
        (6, 5, ["duplicate budget name 'b'", "also budgets[0]"]),
        id="budgets",
    ),
    case(
        """\
        version: 1
        project: x
        slos:
          - name: s
          - name: t
          - name: s
            error_rate: 0.01
        """,
        (6, 5, ["duplicate slo name 's'", "also slos[0]"]),
        id="slos",
    ),
]


@pytest.mark.parametrize(("text", "expected"), DUPLICATE_NAMES)
def test_duplicate_name(tmp_path, text, expected):
    check(diagnostics(tmp_path, text), expected)


def test_same_name_in_different_sections_is_fine(tmp_path):
    path = tmp_path / "llmops.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            project: x
            models:
              - {name: chat, source: hf://a/b, engine: vllm, slo: chat, budget: chat, prompt: chat, guardrails: [chat]}
            prompts: [{name: chat, template: hi}]
            guardrails: [{name: chat}]
            budgets: [{name: chat, limit_usd: 1}]
            slos: [{name: chat}]
            """
        ),
        encoding="utf-8",
    )
    assert load(path).config.models[0].slo == "chat"


# --- dangling references ------------------------------------------------------------------------------------------

DECLARED = """\
    version: 1
    project: x
    targets:
      laptop: {provider: local}
    prompts:
      - {name: support-answer, template: hi}
    guardrails:
      - name: default
      - name: strict
    budgets:
      - {name: team-monthly, limit_usd: 100}
    slos:
      - name: interactive
    models:
      - name: a
        source: hf://a/b
        engine: vllm
"""  # the model's fields start on line 18, column 5

DANGLING = [
    pytest.param(
        "target: lapton",
        (18, 5),
        ["model 'a' names target 'lapton'", "not declared", "did you mean 'laptop'?", "(declared: laptop, local)"],
        id="target",
    ),
    pytest.param(
        "prompt: support-answr",
        (18, 5),
        ["names prompt 'support-answr'", "did you mean 'support-answer'?", "(declared: support-answer)"],
        id="prompt",
    ),
    pytest.param(
        "slo: interactiv",
        (18, 5),
        ["names slo 'interactiv'", "did you mean 'interactive'?", "(declared: interactive)"],
        id="slo",
    ),
    pytest.param(
        "budget: team-monthy",
        (18, 5),
        ["names budget 'team-monthy'", "did you mean 'team-monthly'?", "(declared: team-monthly)"],
        id="budget",
    ),
    pytest.param(
        "guardrails: [default, strictt]",
        (18, 27),
        ["names guardrail 'strictt'", "did you mean 'strict'?", "(declared: default, strict)"],
        id="guardrails-entry",
    ),
    pytest.param(
        "guardrails:\n  - defualt\n  - strict",
        (19, 9),
        ["names guardrail 'defualt'", "did you mean 'default'?"],
        id="guardrails-block-entry",
    ),
]


@pytest.mark.parametrize(("field", "position", "words"), DANGLING)
def test_dangling_reference_suggests_close_name(tmp_path, field, position, words):
    text = textwrap.dedent(DECLARED) + textwrap.indent(field, "    ") + "\n"
    check(diagnostics(tmp_path, text), [(*position, words)])


@pytest.mark.parametrize("field", ["target", "prompt", "slo", "budget"])
def test_dangling_reference_without_close_name(tmp_path, field):
    text = textwrap.dedent(DECLARED) + f"    {field}: zzzqqq\n"
    [diagnostic] = diagnostics(tmp_path, text)
    check([diagnostic], [(18, 5, [f"names {field} 'zzzqqq'", "not declared", "(declared: "])])
    assert "did you mean" not in diagnostic.message


def test_reference_to_an_empty_section(tmp_path):
    check(
        diagnostics(
            tmp_path,
            """\
            version: 1
            project: x
            models:
              - name: a
                source: hf://a/b
                engine: vllm
                budget: monthly
            """,
        ),
        [(7, 5, ["names budget 'monthly'", "(declared: none)"])],
    )


def test_builtin_local_target_needs_no_declaration(tmp_path):
    path = tmp_path / "llmops.yaml"
    path.write_text("version: 1\nproject: x\nmodels:\n  - {name: a, source: m.gguf, engine: vllm, target: local}\n")
    assert load(path).config.models[0].target == "local"


# --- fields that only make sense together --------------------------------------------------------------------------

COMBINATIONS = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: hosted
            source: api://openai/gpt-4o-mini
            engine: vllm
            target: local
            replicas: 2
            budget: b
        budgets:
          - {name: b, limit_usd: 5}
        """,
        (6, 5, ["model 'hosted' is hosted (api://)", "remove 'engine'"]),
        (7, 5, ["model 'hosted' is hosted (api://)", "remove 'target'"]),
        (8, 5, ["model 'hosted' is hosted (api://)", "remove 'replicas'"]),
        id="api-with-infrastructure",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: hosted
            source: api://openai/gpt-4o-mini
            gpu: {type: L4}
            context_length: 4096
        """,
        (6, 5, ["remove 'gpu'"]),
        (7, 5, ["remove 'context_length'"]),
        id="api-with-gpu",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: local-one
            source: hf://a/b
            replicas: 1
        """,
        (4, 5, ["model 'local-one' needs an engine", "llama-cpp, vllm or tgi"]),
        id="self-hosted-without-engine",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: 2
            autoscale: {metric: concurrency, target: 16}
        """,
        (8, 5, ["model 'a'", "autoscale needs replicas as {min, max}"]),
        id="autoscale-with-fixed-replicas",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            autoscale: {metric: concurrency, target: 16}
        """,
        (7, 5, ["autoscale needs replicas as {min, max}"]),
        id="autoscale-with-default-replicas",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: {type: A10G, count: 1}
            instance_type: g5.xlarge
        """,
        (8, 5, ["model 'a'", "set gpu or instance_type, not both"]),
        id="gpu-and-instance_type",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            price: {input_per_1m: 0.2, output_per_1m: 0.6}
        """,
        (7, 5, ["model 'a'", "`price` is for hosted (api://) models", "remove it", "gpu_hour_usd"]),
        id="price-on-a-served-model",
    ),
    case(
        """\
        version: 1
        project: x
        prompts:
          - name: p
            template: "Hi {{ name }}, about {{question}}: {{ question }}"
            variables: [question]
        """,
        (5, 5, ["prompt 'p' uses {{ name }}", "not in its variables"]),
        id="template-variable-undeclared",
    ),
    case(
        """\
        version: 1
        project: x
        prompts:
          - name: p
            version: 3
            template: "Q: {{ question }}"
            variables: [question]
            variants:
              - {version: 3, template: "About {{ product }}: {{ question }}", weight: 60}
              - {version: 4, template: "A: {{ question }}", weight: 50}
        """,
        (8, 5, ["prompt 'p'", "weights add up to 110%", "nothing for version 3", "keep them under 100"]),
        (9, 10, ["prompt 'p': version 3 is served twice"]),
        (9, 22, ["prompt 'p' variant 3 uses {{ product }}", "not in its variables"]),
        id="prompt-variants",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - {name: m, source: api://openai/gpt-4o-mini, rollout: careful}
        rollouts:
          - name: careful
            steps:
              - {weight: 50}
              - {weight: 10, duration: 5m}
            keep_previous: 10m
            analysis: {slo: fast}
          - name: unused
            strategy: blue_green
            steps: [{weight: 100}]
        """,
        (7, 5, ["rollout 'careful'", "weights end at 10, not 100", "add a last step {weight: 100}"]),
        (7, 5, ["rollout 'careful'", "weights must rise (50, 10)"]),
        (8, 9, ["step 1 (weight 50) has no duration and no pause"]),
        (10, 5, ["`keep_previous` is for blue_green only"]),
        (11, 16, ["rollout 'careful' analysis names slo 'fast', which is not declared"]),
        (12, 5, ["rollout 'unused' is used by no model"]),
        (14, 5, ["rollout 'unused': blue_green takes no steps"]),
        id="rollouts",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - {name: m, source: api://openai/gpt-4o-mini, rollout: carefull}
        rollouts:
          - {name: careful, steps: [{weight: 100}]}
        """,
        (4, 49, ["model 'm' names rollout 'carefull', which is not declared", "did you mean 'careful'?"]),
        (6, 5, ["rollout 'careful' is used by no model"]),
        id="rollout-undeclared",
    ),
    case(
        """\
        version: 1
        project: x
        prompts:
          - name: p
            template: "{{ a }} and {{ b }}"
        """,
        (5, 5, ["uses {{ a }}"]),
        (5, 5, ["uses {{ b }}"]),
        id="template-without-variables",
    ),
    case(
        """\
        version: 1
        project: x
        guardrails:
          - name: g
            input:
              deny_patterns: ["ok", "(unclosed"]
        """,
        (6, 7, ["guardrails[g].input.deny_patterns", "'(unclosed' is not a valid regular expression"]),
        id="invalid-regex-input",
    ),
    case(
        """\
        version: 1
        project: x
        guardrails:
          - name: g
            output:
              deny_patterns:
                - "[a-"
        """,
        (6, 7, ["guardrails[g].output.deny_patterns", "'[a-' is not a valid regular expression"]),
        id="invalid-regex-output",
    ),
]


@pytest.mark.parametrize(("text", "expected"), COMBINATIONS)
def test_fields_that_do_not_go_together(tmp_path, text, expected):
    check(diagnostics(tmp_path, text), expected)


def test_template_with_declared_variables_loads(tmp_path):
    path = tmp_path / "llmops.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            project: x
            prompts:
              - name: p
                template: "{{ greeting }}, {{name}}! {{ not a variable }}"
                variables: [greeting, name]
            """
        ),
        encoding="utf-8",
    )
    assert load(path).config.prompts[0].variables == ["greeting", "name"]


def test_a_budget_scope_naming_an_undeclared_model_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text("version: 1\nproject: x\nmodels:\n  - name: assistant\n    source: m.gguf\n"
                      "    engine: llama-cpp\nbudgets:\n  - name: b\n    limit_usd: 10\n    scope: [asistant]\n")
    with pytest.raises(ConfigError) as raised:
        load(config)
    [problem] = raised.value.diagnostics
    assert (problem.line, problem.col) == (10, 13)
    assert "budget 'b' scope names model 'asistant'" in problem.message
    assert "did you mean 'assistant'" in problem.message


def test_a_gateway_key_naming_an_undeclared_model_is_an_error_at_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "llmops.yaml"
    path.write_text("version: 1\nproject: p\nmodels:\n  - name: chat\n    source: api://openai/gpt-4o-mini\n"
                    "gateway:\n  keys:\n    - name: ci\n      env: CI_KEY\n      models: [chta]\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.message) == (
        10, "gateway key 'ci' names model 'chta', which is not declared; did you mean 'chat'? (declared: chat)")


def test_a_gateway_key_needs_exactly_one_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "llmops.yaml"
    path.write_text("version: 1\nproject: p\ngateway:\n  keys:\n    - name: ci\n      env: A\n      file: b\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert "exactly one of `env`" in caught.value.diagnostics[0].message


def test_teams_name_declared_budgets_and_keys_name_declared_teams(tmp_path: Path) -> None:
    check(diagnostics(tmp_path, """\
        version: 1
        project: p
        budgets:
          - {name: support-team, limit_usd: 300}
        gateway:
          keys:
            - {name: app, env: APP_KEY, team: support}
            - {name: batch, env: BATCH_KEY, team: suport}
          teams:
            - {name: support, budget: support-teem}
            - {name: support}
        """), [(8, 37, ["gateway key 'batch' names team 'suport'", "did you mean 'support'", "gateway.teams"]),
               (10, 23, ["team 'support' names budget 'support-teem'", "did you mean 'support-team'"]),
               (11, 8, ["duplicate team name 'support'"])])


def test_a_team_on_a_key_needs_no_declaration_while_no_teams_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "llmops.yaml"
    path.write_text("version: 1\nproject: p\ngateway:\n  keys:\n    - {name: app, env: APP_KEY, team: search}\n")
    assert load(path).config.gateway.keys[0].team == "search"  # type: ignore[union-attr]


@pytest.mark.parametrize(("scale", "words"), [
    ("{min: 5, max: 1}", ["min (5) must be below max (1)"]),
    ("{min: 1, max: 5, negative_below: 1}", ["negative_below (1) must be above min"]),
    ("stars", ["thumbs"]),
])
def test_a_feedback_scale_that_cannot_work_is_refused(tmp_path: Path, scale: str, words: list[str]) -> None:
    [diagnostic] = diagnostics(tmp_path, f"version: 1\nproject: p\ngateway:\n  feedback:\n    scale: {scale}\n")
    assert diagnostic.line == 5 and all(word in diagnostic.message for word in words), diagnostic
