"""A stand-in `pulumi` CLI: a named test double for the real CLI, which cannot be installed on this machine.

It answers `pulumi version` like the real one (the Automation API checks it first). Past that it plays one of two
CLIs, chosen by `install`:

- refusing (the default): every other command fails the way the real CLI does when the cloud refuses the caller,
  an `error:` line on stderr and exit code 255. That is the path of a CI runner with the CLI but no credentials.
- replaying (`install(directory, replay=EVENTS)`): it answers what the Automation API asks of a stack (select,
  outputs, history) and, for `preview`, `refresh --preview-only` and `up`, streams the engine events recorded in
  EVENTS/{preview,refresh,up}.jsonl to the Automation API's event server, as the real CLI (after 3.205) does over
  gRPC to the address given as `--event-log tcp://HOST:PORT`. Stack outputs are EVENTS/outputs.json. Any other
  command exits 2 and names itself, so a test fails on a conversation it does not script.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

VERSION = "v3.272.0"
ERROR = "error: failed to load credentials: no valid credential sources for the AWS Provider found"
_REPLAY = "FAKE_PULUMI_REPLAY"  # the directory of recorded event streams the replaying CLI answers from
# What `stack history --json` lists for the update just replayed (the Automation API reads its summary from it).
_LAST_UPDATE = {"kind": "update", "startTime": "2025-11-21T08:00:01.000000Z", "endTime": "2025-11-21T08:01:36.000000Z",
                "message": "", "environment": {}, "config": {}, "result": "succeeded", "version": 1}


def install(directory: Path, replay: Path | None = None) -> dict[str, str]:
    """Write the stand-in into `directory`; returns the environment that puts it first on PATH (and, with
    `replay`, has it replay the event streams recorded there)."""
    script = directory / "pulumi"
    script.write_text(f"""#!{sys.executable}
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from fake_pulumi import main
sys.exit(main(sys.argv[1:]))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}", "PULUMI_SKIP_UPDATE_CHECK": "true"}
    return env | ({_REPLAY: str(replay)} if replay is not None else {})


def main(args: list[str]) -> int:
    if args[:1] == ["version"]:
        print(VERSION)
        return 0
    if _REPLAY not in os.environ:
        print(ERROR, file=sys.stderr)
        return 255
    return _replay(Path(os.environ[_REPLAY]), args)


def _replay(events: Path, args: list[str]) -> int:
    command = [arg for arg in args if not arg.startswith("-")][:2]  # flags' values come after the command's words
    if command == ["stack", "select"]:
        return 0
    if command == ["stack", "history"]:
        print(json.dumps([_LAST_UPDATE]))
        return 0
    if command == ["stack", "output"]:  # nothing secret: the masked and the --show-secrets answers are the same
        print((events / "outputs.json").read_text())
        return 0
    if command[:1] in (["preview"], ["up"]) or (command[:1] == ["refresh"] and "--preview-only" in args):
        _stream(args[args.index("--event-log") + 1], events / f"{command[0]}.jsonl")
        return 0
    print(f"the stand-in pulumi CLI does not script `pulumi {' '.join(args)}`", file=sys.stderr)
    return 2


def _stream(address: str, recorded: Path) -> None:
    """Send each recorded event to the Automation API's event server, as the engine does while it runs."""
    import grpc
    from pulumi.runtime.proto import events_pb2, events_pb2_grpc

    with grpc.insecure_channel(address.removeprefix("tcp://")) as channel:
        events_pb2_grpc.EventsStub(channel).StreamEvents(
            events_pb2.EventRequest(event=line) for line in recorded.read_text().splitlines())
