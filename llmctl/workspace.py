"""Where llmctl keeps its files for one config: `.llmctl/` beside it (state, logs, pids)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmctl.state import LocalBackend


@dataclass(frozen=True)
class Workspace:
    config_path: Path
    project: str
    environment: str

    @property
    def config_dir(self) -> Path:
        return self.config_path.resolve().parent

    @property
    def work_dir(self) -> Path:
        return self.config_dir / ".llmctl"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run" / self.project / self.environment

    def backend(self) -> LocalBackend:
        return LocalBackend(self.work_dir, self.project, self.environment)
