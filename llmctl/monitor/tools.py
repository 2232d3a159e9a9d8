"""Where Prometheus's binaries are: on PATH, or unpacked from Debian's packages into llmctl's cache by
`scripts/install-monitoring-tools` (no root needed: `apt-get download` + `dpkg -x`)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from llmctl.errors import LlmctlError

# Debian names the Alertmanager binary `prometheus-alertmanager`; upstream's tarball names it `alertmanager`.
_NAMES = {"prometheus": ("prometheus",), "promtool": ("promtool",), "amtool": ("amtool",),
          "alertmanager": ("alertmanager", "prometheus-alertmanager")}
# Debian's Alertmanager loads its default notification templates from this fixed path, wherever the binary is.
DEBIAN_TEMPLATES = Path("/usr/share/prometheus/alertmanager/default.tmpl")
INSTALL_HINT = ("install Debian's `prometheus` and `prometheus-alertmanager` packages, or run "
                "scripts/install-monitoring-tools (unpacks them into the cache without root)")


def cache_dir() -> Path:
    """LLMCTL_TOOLS_DIR, else $XDG_CACHE_HOME/llmctl/tools (~/.cache/llmctl/tools)."""
    if os.environ.get("LLMCTL_TOOLS_DIR"):
        return Path(os.environ["LLMCTL_TOOLS_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmctl" / "tools"


def find(tool: str) -> Path | None:
    for name in _NAMES[tool]:
        found = shutil.which(name) or shutil.which(name, path=str(cache_dir() / "usr" / "bin"))
        if found:
            return Path(found)
    return None


def require(tool: str) -> Path:
    why = problem(tool)
    if why:
        raise LlmctlError(why)
    return find(tool)  # type: ignore[return-value]


def problem(tool: str) -> str | None:
    """Why `tool` cannot run here, or None."""
    found = find(tool)
    if found is None:
        return f"{tool} was not found on PATH or in {cache_dir() / 'usr' / 'bin'}: {INSTALL_HINT}"
    if found.name == "prometheus-alertmanager" and not DEBIAN_TEMPLATES.exists():
        return (f"{found} (Debian's build) needs {DEBIAN_TEMPLATES}, which is missing: run "
                "scripts/install-monitoring-tools as root, or install the prometheus-alertmanager package")
    return None
