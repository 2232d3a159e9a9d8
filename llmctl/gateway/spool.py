"""Metering the shared store could not take, kept on the gateway's own disk until it can.

A gateway whose store is lost while it serves appends each request's record here, one JSON line, flushed and fsynced
before the request is done with, and replays the file into the store when the store answers again (or when a
gateway next starts beside the file). Records carry their request's id and the ledger counts an id once, so a
replay that is cut off and run again, or two gateways replaying one file, count nothing twice.

One file per gateway process (its host and port in the name): processes never append to the same file. A file lock
guards appending against a replay that empties the file under it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import filelock

from llmctl.gateway.metering import Answered, Ledger

log = logging.getLogger("llmctl.gateway")

LOCK_TIMEOUT_S = 10.0


class Spool:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"spool-{socket.gethostname()}-{port or os.getpid()}.jsonl"

    def add(self, record: dict[str, Any]) -> None:
        """Keep one record (Ledger.record's keyword arguments, with its time: a replay lands it in its own day)
        until the store takes it."""
        answered = record.get("answered")
        line = json.dumps({**record, "at": record["at"].isoformat(),
                           "answered": asdict(answered) if answered is not None else None},
                          ensure_ascii=False, sort_keys=True) + "\n"
        with _lock(self.path), self.path.open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def pending(self) -> bool:
        return any(path.stat().st_size > 0 for path in self.directory.glob("spool-*.jsonl"))

    def replay(self, ledger: Ledger) -> int:
        """Give every spooled record (this process's and any other's left in the directory) to `ledger`; a file is
        emptied once all of it is in. Returns how many records were new to the ledger. A StoreError stops it,
        leaving what was not yet taken in place."""
        added = 0
        for path in sorted(self.directory.glob("spool-*.jsonl")):
            with _lock(path):
                try:
                    lines = path.read_text(encoding="utf-8").splitlines()
                except FileNotFoundError:
                    continue
                for number, line in enumerate(lines, 1):
                    try:
                        record = _record(json.loads(line))
                    except (ValueError, TypeError, KeyError):  # a line cut short by a crash while it was written: it never counted
                        log.warning("spool %s:%d is not a whole record; skipped", path, number)
                        continue
                    added += ledger.record(**record)
                path.write_text("", encoding="utf-8")
        return added


def _record(data: dict[str, Any]) -> dict[str, Any]:
    answered = data.get("answered")
    return {**data, "at": datetime.fromisoformat(data["at"]),
            "answered": Answered(**answered) if answered is not None else None}


def _lock(path: Path) -> filelock.FileLock:
    return filelock.FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S)
