"""A stand-in `pulumi` CLI: a named test double for the real CLI, which cannot be installed on this machine.

It answers `pulumi version` like the real one (the Automation API checks it first) and fails every other command
the way the real CLI does when the cloud refuses the caller: an `error:` line on stderr and exit code 255. That is
the path of a CI runner with the CLI installed but no credentials.
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

ERROR = "error: failed to load credentials: no valid credential sources for the AWS Provider found"


def install(directory: Path) -> dict[str, str]:
    """Write the stand-in into `directory`; returns the environment that puts it first on PATH."""
    script = directory / "pulumi"
    script.write_text(f"""#!{sys.executable}
import sys
if sys.argv[1:2] == ["version"]:
    print("v3.272.0")
    sys.exit(0)
print({ERROR!r}, file=sys.stderr)
sys.exit(255)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}", "PULUMI_SKIP_UPDATE_CHECK": "true"}
