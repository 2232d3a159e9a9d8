"""The price snapshot on disk: reading one, and writing a fresh one from gpuhunt's live catalog.

Offers are kept in gpuhunt's own offline layout (one `<provider>.csv` per provider, gpuhunt's v2 columns) and read
*through* gpuhunt (`GPUHUNT_CATALOG_DIR`), so llmctl never parses that CSV itself and a snapshot refreshed from
gpuhunt's live catalog needs no conversion. Beside it, `catalog.json` says which snapshot this is (version, as_of,
source). The pinned snapshot in `llmctl/cost/data` is what plans use by default, so that a plan never depends on
the network and two machines price the same config the same way. (Hosted APIs' token prices, which gpuhunt does not
cover, are `llmctl.cost.hosted`.)

gpuhunt is imported inside the functions that read offers or download, not here: it brings requests and urllib3
with it, and a plan that prices no GPU needs only the JSON metadata.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import LlmctlError, did_you_mean

if TYPE_CHECKING:
    from gpuhunt import CatalogItem

DATA_DIR = Path(__file__).parent / "data"  # the pinned snapshot
METADATA_FILE = "catalog.json"
CATALOG_DIR_ENV = "GPUHUNT_CATALOG_DIR"  # gpuhunt reads `<dir>/<provider>.csv` instead of its S3 catalog
CATALOG_URL_ENV = "GPUHUNT_CATALOG_URL"  # gpuhunt's override of where the live catalog is published
# Per connect and per read of a download: a network that drops packets must not hang a refresh.
REFRESH_TIMEOUT_S = 30.0
_AS_OF = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")  # ISO date, or year-month when the source only dates it that well


class CatalogError(LlmctlError):
    """A price or GPU the catalog does not have, or a snapshot that cannot be read; the message says what exists."""


@dataclass(frozen=True)
class Offer:
    provider: str
    region: str
    instance_type: str
    gpu_name: str | None
    gpu_count: int
    gpu_memory_gib: float  # per GPU, nominal (24 for an A10G, though AWS reports 22.35 usable)
    cpus: int
    memory_gib: float
    spot: bool
    price_per_hour: float  # USD; for spot, the cheapest availability zone of the region


@dataclass(frozen=True)
class Snapshot:
    """A snapshot's metadata (plain JSON); its offers are read through gpuhunt only when asked."""

    directory: Path
    version: str
    as_of: str
    source: str
    providers: tuple[str, ...]

    def read_offers(self) -> list[Offer]:
        """Every offer of the snapshot, as gpuhunt reads it."""
        items = _query_through_gpuhunt(self.directory, list(self.providers))
        for provider in self.providers:
            if not any(item.provider == provider for item in items):
                raise CatalogError(f"{self.directory / f'{provider}.csv'}: gpuhunt read no offers from it")
        return [_offer(item) for item in items]


def read_snapshot(directory: Path) -> Snapshot:
    """The snapshot in `directory`, checked for everything but its offers, which need gpuhunt to read."""
    if not directory.is_dir():
        raise CatalogError(f"no price snapshot at {directory}: not a directory")
    metadata = _read_json(directory / METADATA_FILE)
    for field in ("version", "as_of", "source", "providers"):
        if not metadata.get(field):
            raise CatalogError(f"{directory / METADATA_FILE}: missing '{field}'")
    _check_as_of(directory / METADATA_FILE, metadata["as_of"])
    providers = metadata["providers"]
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise CatalogError(f"{directory / METADATA_FILE}: 'providers' must be a list of provider names")
    for provider in providers:
        if not (directory / f"{provider}.csv").is_file():
            raise CatalogError(f"{directory}: the snapshot lists provider '{provider}' but has no {provider}.csv")
    return Snapshot(directory=directory, version=metadata["version"], as_of=metadata["as_of"],
                    source=metadata["source"], providers=tuple(providers))


# os.environ is process-wide: reads take turns so that two never see each other's GPUHUNT_CATALOG_DIR.
_ENV_LOCK = threading.Lock()


def _query_through_gpuhunt(directory: Path, providers: list[str]) -> list[CatalogItem]:
    """GPUHUNT_CATALOG_DIR is read by gpuhunt at query time, so it is set only around this one query and then
    restored; auto_reload=False keeps gpuhunt off the network."""
    import gpuhunt

    with _ENV_LOCK, _environment({CATALOG_DIR_ENV: str(directory)}):
        try:
            items: list[CatalogItem] = gpuhunt.Catalog(balance_resources=False, auto_reload=False).query(
                provider=providers)
        except Exception as exc:  # whatever gpuhunt raises, the user gets a message, not a traceback
            raise CatalogError(f"cannot read the price snapshot in {directory} through gpuhunt: {exc}") from exc
    return items


def _offer(item: CatalogItem) -> Offer:
    import gpuhunt

    gpu_memory = 0.0
    if item.gpu_count and item.gpu_name and item.gpu_memory:
        # AWS reports usable memory (22888 MiB for a 24 GB A10G); gpuhunt's own correction maps it to the size
        # the GPU is sold as, which is what memory-fit checks and users reason with.
        gpu_memory = float(gpuhunt.correct_gpu_memory_gib(item.gpu_name, item.gpu_memory * 1024))
    return Offer(provider=item.provider, region=item.location, instance_type=item.instance_name,
                 gpu_name=item.gpu_name if item.gpu_count else None, gpu_count=item.gpu_count,
                 gpu_memory_gib=gpu_memory, cpus=item.cpu, memory_gib=float(item.memory), spot=item.spot,
                 price_per_hour=float(item.price))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"{path}: missing from the price snapshot") from None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a JSON object")
    return data


def _check_as_of(path: Path, as_of: object) -> None:
    if not isinstance(as_of, str) or not _AS_OF.match(as_of):
        raise CatalogError(f"{path}: 'as_of' must be a date like 2025-06-01 (or 2025-06), not {as_of!r}")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block and restore (or unset) them after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- writing one from gpuhunt's live catalog -----------------------------------------------------------------------

def download_snapshot(directory: Path, providers: Sequence[str], timeout_s: float = REFRESH_TIMEOUT_S) -> None:
    """Download gpuhunt's live catalog of `providers` (from its default URL, or GPUHUNT_CATALOG_URL) and write it to
    `directory` in the same layout as the pinned snapshot, with metadata saying when and from where. Nothing is
    written unless every requested provider downloaded; the pinned snapshot is only touched if `directory` is it."""
    import gpuhunt._internal.catalog as gpuhunt_catalog
    from gpuhunt.version import __version__ as gpuhunt_version

    wanted = [p.strip().lower() for p in providers]
    offline = gpuhunt_catalog.OFFLINE_PROVIDERS  # the providers gpuhunt publishes as downloadable catalogs
    if not wanted:
        raise CatalogError("name at least one provider to refresh")
    for provider in wanted:
        if provider not in offline:
            raise CatalogError(f"gpuhunt publishes no catalog for '{provider}'{did_you_mean(provider, offline)} "
                               f"(it has: {', '.join(offline)})")
    base_url = os.getenv(CATALOG_URL_ENV, gpuhunt_catalog.CATALOG_URL).rstrip("/")
    versions: dict[str, str] = {}
    items: dict[str, list[CatalogItem]] = {}
    failures: dict[str, str] = {}
    for provider in wanted:
        try:
            versions[provider], items[provider] = _download(base_url, provider, timeout_s)
        except urllib.error.HTTPError as exc:  # the server answered, without this provider's catalog
            failures[provider] = str(exc)
        except OSError as exc:  # refused, unresolvable, timed out: no answer at all
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise CatalogError(f"refreshing the price catalog needs network access to gpuhunt's catalog at "
                               f"{base_url} and could not reach it: {reason}") from exc
        except Exception as exc:  # an answer gpuhunt cannot read, a body cut short: named, as gpuhunt logs them
            failures[provider] = repr(exc)
    if failures:
        raise CatalogError(f"could not download gpuhunt's {', '.join(failures)} catalog from {base_url} "
                           f"(refreshing needs network access to it): {'; '.join(failures.values())}")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    metadata = {
        "version": "gpuhunt-" + "+".join(f"{p}-{v}" for p, v in versions.items()),
        "as_of": today,
        "as_of_kind": "download_date",
        "source": f"gpuhunt live catalog at {base_url} ("
                  + ", ".join(f"{p} version {v}" for p, v in versions.items())
                  + f"), downloaded {today} with gpuhunt {gpuhunt_version}",
        "providers": wanted,
        "gpuhunt_catalog_versions": versions,
        "layout": "gpuhunt offline catalog: one <provider>.csv per provider with gpuhunt's v2 columns, read by "
                  "gpuhunt.Catalog through GPUHUNT_CATALOG_DIR",
    }
    _write_snapshot(directory, items, metadata)


def _download(base_url: str, provider: str, timeout_s: float) -> tuple[str, list[CatalogItem]]:
    """The latest version of one provider's catalog and its offers, from the layout gpuhunt publishes:
    `<provider>/version` names the latest, `<provider>/<version>/catalog.zip` holds `<provider>.csv`.

    gpuhunt's own Catalog.load() fetches these with urllib.request.urlopen(url) and offers no timeout, so bounding
    it would mean setting the process-wide socket default (every other thread's new sockets would share it while
    the refresh ran) or abandoning a hung thread. Fetching the two files here, each with a timeout of its own,
    bounds the refresh without touching global state, downloads only the providers asked for (load() fetches all
    of them), and still parses with gpuhunt's own reader."""
    import gpuhunt._internal.storage as gpuhunt_storage

    version = _fetch(f"{base_url}/{provider}/version", timeout_s).decode("utf-8").strip()
    archive = _fetch(f"{base_url}/{provider}/{version}/catalog.zip", timeout_s)
    with zipfile.ZipFile(io.BytesIO(archive)) as zip_file, zip_file.open(f"{provider}.csv") as csv_file:
        return version, list(gpuhunt_storage.load(io.TextIOWrapper(csv_file, "utf-8"), provider=provider))


def _fetch(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return bytes(response.read())


def _write_snapshot(directory: Path, items: dict[str, list[CatalogItem]], metadata: dict[str, Any]) -> None:
    """Write beside the target and move the files in, so a failure halfway leaves the old snapshot whole."""
    import gpuhunt._internal.storage as gpuhunt_storage

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".refresh-", dir=directory))
    try:
        for provider, provider_items in items.items():
            gpuhunt_storage.dump(provider_items, str(staging / f"{provider}.csv"))  # gpuhunt's own writer
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
