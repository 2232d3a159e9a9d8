"""A finding the engine or a provider reports to the reviewer: an error stops apply, a warning or note does not."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Severity = Literal["error", "warning", "info"]


class Check(BaseModel):
    severity: Severity
    address: str | None = None
    message: str
