"""python -m llmctl.gateway --spec FILE [--host H] [--port P]: serve a gateway spec with uvicorn.

The first line on stdout is `listening on http://H:P` once the socket accepts connections, with the port bound (so
`--port 0` lets a parent process pick a free port and read which one it got). SIGHUP reads FILE again and serves it
in place (`/health` says the sha256 of the file it serves); a spec that cannot be taken so is logged and ignored.
Exit 1, before listening, when the spec's store cannot be reached or was migrated by a newer llmctl; 2 for a spec
that cannot be read or is invalid (a key's or the store DSN's variable not set).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from llmctl.gateway.app import create_app
from llmctl.gateway.auth import hashed
from llmctl.gateway.spec import GatewaySpec
from llmctl.gateway.store import SchemaTooNew, StoreError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from here on, before uvicorn starts accepting them
    sock.set_inheritable(True)
    return sock


def _read(path: Path) -> tuple[GatewaySpec, str]:
    data = path.read_bytes()
    spec = GatewaySpec.model_validate_json(data)
    # Keys named by variable (a cluster's Secret) are hashed now; from here on the process holds no key.
    return spec.model_copy(update={"keys": hashed(spec.keys, os.environ)}), hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmctl.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="the gateway spec (JSON) llmctl wrote at apply")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port (printed on the first line)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec, sha = _read(args.spec)
    except OSError as exc:
        print(f"llmctl gateway: cannot read {args.spec}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"llmctl gateway: {args.spec} is not a valid gateway spec:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a key's variable is not set
        print(f"llmctl gateway: {args.spec}: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(spec, reload=lambda: _read(args.spec), spec_sha256=sha, port=args.port or None)
    except ValueError as exc:
        print(f"llmctl gateway: {args.spec}: {exc}", file=sys.stderr)
        return 2
    # The store is opened (and migrated) before the port is bound, in the thread that serves (uvicorn runs the app
    # on this one), so the lifespan finds it open: a gateway that cannot meter never serves.
    try:
        app.state.gateway.open()
    except (StoreError, SchemaTooNew) as exc:
        print(f"llmctl gateway: not starting: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # the DSN's variable or file
        print(f"llmctl gateway: not starting: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"llmctl gateway: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{shown}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
