"""Config diagnostics: every problem as FILE:LINE:COL: message, all reported at once."""
from __future__ import annotations

from dataclasses import dataclass

from llmctl.errors import LlmctlError


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(LlmctlError):
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))
