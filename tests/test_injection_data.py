"""Checks of the prompt-injection detector data (datasets/injection)."""
import json
import os
import re
from collections import Counter

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "datasets", "injection")
FORBIDDEN_SOURCE = re.compile(r"dan|jailbreakchat|jailbreak_llms|trustairlab|in-?the-?wild|simsonsun|autodan|pyrit", re.I)
FORBIDDEN_TEXT = re.compile(r"do anything now|jailbreakchat|jailbreak_llms|trustairlab|\bDAN\b", re.I)


def load(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def splits():
    return load("train.jsonl"), load("dev.jsonl")


def test_records_well_formed(splits):
    for rows in splits:
        assert rows
        for r in rows:
            assert set(r) == {"text", "label", "source", "family"}
            assert r["label"] in (0, 1)
            assert isinstance(r["text"], str) and 20 <= len(r["text"]) <= 8000
            assert r["source"] and r["family"]


def test_every_source_documented(splits):
    doc = open(os.path.join(DATA, "SOURCES.md"), encoding="utf-8").read()
    rows = {m.group(1) for m in re.finditer(r"^\| ([a-z0-9-]+) \|", doc, re.M)}
    for r in splits[0] + splits[1]:
        assert r["source"] in rows, r["source"]


def test_split_by_family_and_text(splits):
    train, dev = splits
    assert not {r["family"] for r in train} & {r["family"] for r in dev}
    assert not {r["text"] for r in train} & {r["text"] for r in dev}
    texts = [r["text"] for r in train + dev]
    assert len(texts) == len(set(texts))


def test_no_forbidden_sources(splits):
    for r in splits[0] + splits[1]:
        assert not FORBIDDEN_SOURCE.search(r["source"]), r["source"]
        assert not FORBIDDEN_SOURCE.search(r["family"].split(":")[0]), r["family"]
        assert not FORBIDDEN_TEXT.search(r["text"]), r["text"][:100]


def test_authored_attacks_clean():
    for name in ("attacks.yaml", "benign.yaml"):
        text = open(os.path.join(DATA, "authored", name), encoding="utf-8").read()
        assert not FORBIDDEN_TEXT.search(text)


def test_counts_within_targets(splits):
    c = Counter(r["label"] for rows in splits for r in rows)
    assert 3000 <= c[1] <= 8000
    assert 5000 <= c[0] <= 12000
    n_dev = len(splits[1]) / (len(splits[0]) + len(splits[1]))
    assert 0.15 <= n_dev <= 0.25


def test_size_budget():
    size = sum(os.path.getsize(os.path.join(DATA, n)) for n in ("train.jsonl", "dev.jsonl"))
    assert size < 15 * 1024 * 1024
