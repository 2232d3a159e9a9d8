"""The committed JSON schemas are what the models generate, and every example points editors at one."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmctl.scaffold import template
from llmctl.schemas import config_reference, config_schema, plan_schema
from support import EXAMPLE_CONTRACT, QUICKSTART, REPO, SHARED_CONTRACT

MODELINE = "# yaml-language-server: $schema="


@pytest.mark.parametrize("name, export", [("llmops.schema.json", config_schema), ("plan.schema.json", plan_schema)])
def test_committed_schema_equals_a_fresh_export(name: str, export) -> None:
    committed = (REPO / "schemas" / name).read_text()
    assert committed == export(), f"schemas/{name} is stale: run llmctl schema --out schemas/{name}"


@pytest.mark.parametrize("example", sorted((REPO / "examples").rglob("llmops.yaml")), ids=lambda p: p.parent.name)
def test_examples_carry_a_modeline_to_the_committed_schema(example: Path) -> None:
    first = example.read_text().splitlines()[0]
    assert first.startswith(MODELINE)
    assert (example.parent / first.removeprefix(MODELINE)).resolve() == REPO / "schemas" / "llmops.schema.json"


def test_the_quickstart_is_what_llmctl_init_writes() -> None:
    assert QUICKSTART.read_text() == template("../../schemas/llmops.schema.json")


def test_the_readme_config_reference_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    section = readme[readme.index(start) + len(start):readme.index(end)]
    assert section == config_reference(), "README config reference is stale: llmctl schema --kind reference"


@pytest.mark.skipif(not SHARED_CONTRACT.exists(), reason="no shared/ beside this checkout to compare with")
def test_the_reference_example_is_the_shared_contract() -> None:
    # Below the modeline every example carries (checked above), the shared file as it stands.
    modeline = f"{MODELINE}../../schemas/llmops.schema.json\n"
    assert EXAMPLE_CONTRACT.read_text() == modeline + SHARED_CONTRACT.read_text(), (
        "copy shared/llmops.example.yaml to examples/reference/llmops.yaml, below its first line")
