"""The audit log: one valid JSON line per request, flushed as written, holding hashes and never the text."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from llmctl.gateway.audit import AuditLog, prompt_sha256

PROMPT = "My email is alice@example.com, card 4111 1111 1111 1111"


def entry(log: AuditLog, **fields: object) -> None:
    log.write(**{"key_id": "team-a", "model": "chat", "prompt_sha256": prompt_sha256(PROMPT), "input_tokens": 12,
                 "output_tokens": 7, "actions": ["pii.email:redact"], "status": 200, **fields})


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_line_has_every_field_and_is_flushed_before_close(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "gateway" / "audit.jsonl"  # the directory does not exist yet
    log = AuditLog(path)
    entry(log, status=400, actions=["prompt_injection:block"], reason="prompt injection detected")
    [line] = lines(path)  # read while the log is still open
    log.close()
    time = datetime.fromisoformat(line.pop("time"))
    assert time.utcoffset() == timedelta(0)
    assert line == {"key_id": "team-a", "model": "chat", "prompt_sha256": prompt_sha256(PROMPT),
                    "input_tokens": 12, "output_tokens": 7, "actions": ["prompt_injection:block"], "status": 400,
                    "reason": "prompt injection detected"}


def test_the_prompt_text_never_reaches_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    entry(log)
    with pytest.raises(ValueError, match="sha256"):
        entry(log, prompt_sha256=PROMPT)
    log.close()
    text = path.read_text(encoding="utf-8")
    assert "alice@example.com" not in text and "4111" not in text
    assert len(lines(path)) == 1


def test_many_writes_stay_one_valid_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(500):
        # Newlines and non-ASCII in a reason must not break the one-line-per-record framing.
        entry(log, key_id=f"key-{i}", reason="line one\nline two «é»", status=200 + i % 3)
    log.close()
    records = lines(path)
    assert [r["key_id"] for r in records] == [f"key-{i}" for i in range(500)]
    assert records[0]["reason"] == "line one\nline two «é»"


def test_a_restart_appends_to_the_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for key_id in ("before", "after"):
        log = AuditLog(path)
        entry(log, key_id=key_id)
        log.close()
    assert [r["key_id"] for r in lines(path)] == ["before", "after"]


def test_requests_without_a_key_or_model_are_logged(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    entry(log, key_id=None, model=None, status=401, actions=[], reason="no API key")
    log.close()
    assert lines(path)[0]["key_id"] is None and lines(path)[0]["status"] == 401
