"""The price catalog: GPU instance offers, hosted-API token prices and GPU facts.

Offers come from a snapshot in gpuhunt's own offline layout (one `<provider>.csv` per provider, gpuhunt's v2
columns) and are read *through* gpuhunt (`GPUHUNT_CATALOG_DIR`), so llmctl never parses that CSV itself and a
snapshot refreshed from gpuhunt's live catalog needs no conversion. Beside it, `catalog.json` says which snapshot
this is (version, as_of, source) and `api_prices.json` holds the $/1M-token prices of hosted APIs, which gpuhunt
does not cover. The pinned snapshot in `llmctl/cost/data` is what plans use by default, so that a plan never
depends on the network and two machines price the same config the same way.
"""
from __future__ import annotations

import contextlib
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gpuhunt
import gpuhunt._internal.catalog as gpuhunt_catalog
import gpuhunt._internal.storage as gpuhunt_storage
from gpuhunt.version import __version__ as GPUHUNT_VERSION

from llmctl.errors import LlmctlError, did_you_mean

DATA_DIR = Path(__file__).parent / "data"  # the pinned snapshot
METADATA_FILE = "catalog.json"
API_PRICES_FILE = "api_prices.json"
CATALOG_DIR_ENV = "GPUHUNT_CATALOG_DIR"  # gpuhunt reads `<dir>/<provider>.csv` instead of its S3 catalog
CATALOG_URL_ENV = "GPUHUNT_CATALOG_URL"  # gpuhunt's override of where the live catalog is published
# Per connect and per read of a download: a network that drops packets must not hang a refresh.
REFRESH_TIMEOUT_S = 30.0
_AS_OF = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")  # ISO date, or year-month when the source only dates it that well


class CatalogError(LlmctlError):
    """A price or GPU the catalog does not have, or a snapshot that cannot be read; the message says what exists."""


@dataclass(frozen=True)
class GpuInfo:
    name: str  # as gpuhunt spells it: "A10G", "L40S", "A100"
    memory_gib: float  # per GPU
    vendor: str  # "nvidia", "amd", ...


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
class ApiPrice:
    provider: str
    model: str  # the canonical name, also when looked up by an alias
    input_per_1m: float  # USD per 1M input tokens
    output_per_1m: float  # USD per 1M output tokens


class Catalog:
    """One loaded snapshot. Lookups are in memory: the plan asks many times per run."""

    def __init__(self, directory: Path, metadata: dict[str, Any], offers: Iterable[Offer],
                 api_metadata: dict[str, Any], api_prices: Iterable[tuple[ApiPrice, list[str]]]) -> None:
        self.directory = directory
        self.version: str = metadata["version"]
        self.as_of: str = metadata["as_of"]
        self.source: str = metadata["source"]
        self.providers: tuple[str, ...] = tuple(metadata["providers"])
        self.api_prices_as_of: str = api_metadata["as_of"]
        self.api_prices_source: str = api_metadata["source"]
        self.offers: tuple[Offer, ...] = tuple(offers)
        # (provider, instance type, region, spot) -> offer, matched case-insensitively (offers keep gpuhunt's
        # spelling: Azure's are mixed case); a duplicate row keeps the cheaper price
        self._by_key: dict[tuple[str, str, str, bool], Offer] = {}
        for offer in self.offers:
            key = (offer.provider, offer.instance_type.lower(), offer.region.lower(), offer.spot)
            if key not in self._by_key or offer.price_per_hour < self._by_key[key].price_per_hour:
                self._by_key[key] = offer
        self._types: dict[str, set[str]] = {provider: set() for provider in self.providers}
        self._regions: dict[str, set[str]] = {provider: set() for provider in self.providers}
        for offer in self.offers:
            self._types.setdefault(offer.provider, set()).add(offer.instance_type.lower())
            self._regions.setdefault(offer.provider, set()).add(offer.region.lower())
        # provider -> name or alias (lower case) -> price; and provider -> canonical names, for suggestions
        self._api: dict[str, dict[str, ApiPrice]] = {}
        self._api_models: dict[str, list[str]] = {}
        for price, aliases in api_prices:
            names = self._api.setdefault(price.provider, {})
            self._api_models.setdefault(price.provider, []).append(price.model)
            for name in (price.model, *aliases):
                names[name.lower()] = price

    def __repr__(self) -> str:
        return f"Catalog(version={self.version!r}, as_of={self.as_of!r}, offers={len(self.offers)})"

    # --- GPUs ---------------------------------------------------------------------------------------------------

    def gpu(self, name: str) -> GpuInfo:
        """A GPU by name, case-insensitive, from gpuhunt's tables of known accelerators. "A100-80GB",
        "A100 80GB" and "NVIDIA A100-SXM4-80GB" name the 80 GiB A100; a plain "A100" is its smallest variant."""
        info, _ = self._resolve_gpu(name)
        return info

    def _resolve_gpu(self, name: str) -> tuple[GpuInfo, bool]:
        """The GPU and whether the name fixed its memory size (then only offers of that size match it)."""
        base, memory = _split_memory(name)
        variants = _KNOWN_GPUS.get(_normalise_gpu(base), [])
        if not variants:
            offered = self._offered_gpus()
            hint = _hint(base.strip(), offered) or _hint(base.strip(), _KNOWN_GPU_NAMES)
            raise CatalogError(f"unknown GPU '{name}'{hint} (GPUs with prices in this catalog: "
                               f"{', '.join(offered) or 'none'}; sizes are written like 'A100-80GB')")
        if memory is None:
            return min(variants, key=lambda info: info.memory_gib), False
        for info in variants:
            if info.memory_gib == memory:
                return info, True
        sizes = " or ".join(f"{info.memory_gib:g}" for info in sorted(variants, key=lambda info: info.memory_gib))
        raise CatalogError(f"GPU '{name}': gpuhunt knows {variants[0].name} with {sizes} GiB, not {memory:g} GiB")

    def _offered_gpus(self, provider: str | None = None) -> list[str]:
        return sorted({o.gpu_name for o in self.offers if o.gpu_name and provider in (None, o.provider)})

    # --- instances ----------------------------------------------------------------------------------------------

    def instance(self, provider: str, region: str, instance_type: str, spot: bool) -> Offer:
        """The price of one instance type in one region, on demand or spot."""
        provider = self._provider(provider)
        region = region.strip().lower()
        wanted = instance_type.strip().lower()
        types = self._types[provider]
        if wanted not in types:
            families = sorted({t.split(".", 1)[0] for t in types})
            raise CatalogError(f"unknown {provider} instance type '{instance_type}'{_hint(wanted, types)} "
                               f"(this catalog prices the {', '.join(families)} families)")
        offer = self._by_key.get((provider, wanted, region, spot))
        if offer is not None:
            return offer
        mode, other = _mode(spot), _mode(not spot)
        priced = sorted(r for (p, t, r, s) in self._by_key if (p, t, s) == (provider, wanted, spot))
        message = f"{provider} {wanted} has no {mode} price in {region}{self._region_hint(provider, region)}"
        if priced:
            message += f"; it has {mode} prices in: {', '.join(priced)}"
        else:
            message += f"; it has no {mode} price in any region of this catalog"
        if (provider, wanted, region, not spot) in self._by_key:
            message += f" (its {other} price in {region} is known)"
        raise CatalogError(message)

    def for_gpu(self, provider: str, region: str, gpu_name: str, gpu_count: int, spot: bool) -> Offer:
        """The cheapest offer in the region with exactly `gpu_count` of that GPU (of that size, if the name gives
        one); ties go to the smaller machine, then the name, so the choice is stable."""
        provider = self._provider(provider)
        region = region.strip().lower()
        info, exact_memory = self._resolve_gpu(gpu_name)
        if gpu_count < 1:
            raise CatalogError(f"GPU count must be at least 1, not {gpu_count}")
        label = f"{info.name} {info.memory_gib:g} GiB" if exact_memory else info.name
        with_gpu = [o for o in self.offers if o.provider == provider and o.gpu_name is not None
                    and o.gpu_name.lower() == info.name.lower()
                    and (not exact_memory or o.gpu_memory_gib == info.memory_gib)]
        if not with_gpu:
            raise CatalogError(f"{provider} has no instances with {label} in this catalog (GPUs it has prices for: "
                               f"{', '.join(self._offered_gpus(provider))})")
        matching = [o for o in with_gpu if o.region.lower() == region and o.spot == spot and o.gpu_count == gpu_count]
        if matching:
            return min(matching, key=lambda o: (o.price_per_hour, o.cpus, o.memory_gib, o.instance_type))
        mode = _mode(spot)
        message = (f"no {provider} {mode} offer in {region} has exactly {gpu_count} × {label}"
                   f"{self._region_hint(provider, region)}")
        counts = sorted({o.gpu_count for o in with_gpu if o.region.lower() == region and o.spot == spot})
        if counts:
            message += f"; {mode} counts of {label} there: {', '.join(map(str, counts))}"
        regions = sorted({o.region for o in with_gpu if o.gpu_count == gpu_count and o.spot == spot})
        if regions:
            message += f"; regions with {mode} {gpu_count} × {label}: {', '.join(regions)}"
        elif any(o.gpu_count == gpu_count for o in with_gpu):
            message += f"; {gpu_count} × {label} is only priced {_mode(not spot)}"
        raise CatalogError(message)

    def _provider(self, provider: str) -> str:
        name = provider.strip().lower()
        if name not in self._types:
            raise CatalogError(f"no instance prices for provider '{provider}'{_hint(name, self._types)} "
                               f"(this catalog has: {', '.join(sorted(self._types))})")
        return name

    def _region_hint(self, provider: str, region: str) -> str:
        if region in self._regions[provider]:
            return ""
        hint = _hint(region, self._regions[provider])
        regions = ", ".join(sorted(self._regions[provider]))
        return f" ('{region}' is not a region of this catalog{hint}{' Its' if hint else '; its'} regions: {regions})"

    # --- hosted APIs --------------------------------------------------------------------------------------------

    def api_price(self, provider: str, model: str) -> ApiPrice:
        """$ per 1M input and output tokens of a hosted model, by its name or a dated alias."""
        provider_name, model_name = provider.strip().lower(), model.strip().lower()
        models = self._api.get(provider_name)
        if models is None:
            raise CatalogError(f"no API prices for provider '{provider}'{_hint(provider_name, self._api)} "
                               f"(providers with API prices: {', '.join(sorted(self._api))})")
        price = models.get(model_name)
        if price is not None:
            return price
        elsewhere = sorted(p for p, names in self._api.items() if model_name in names)
        also = f" ('{model}' is priced under {elsewhere[0]})" if elsewhere else ""
        raise CatalogError(f"no API price for {provider_name} model '{model}'{_hint(model_name, models)}{also} "
                           f"({provider_name} models with prices: {', '.join(self._api_models[provider_name])})")


# --- loading --------------------------------------------------------------------------------------------------------

# os.environ is process-wide: loads take turns so that two never see each other's GPUHUNT_CATALOG_DIR (the lock
# also guards the cache, and is re-entered by the load it guards).
_LOCK = threading.RLock()
_CACHE: dict[Path, Catalog] = {}


def load_catalog(directory: Path | None = None) -> Catalog:
    """The snapshot in `directory` (default: the pinned one), loaded once per directory and then cached."""
    key = Path(directory if directory is not None else DATA_DIR).resolve()
    with _LOCK:
        catalog = _CACHE.get(key)
        if catalog is None:
            catalog = _CACHE[key] = _load(key)
        return catalog


def clear_catalog_cache() -> None:
    """Forget loaded snapshots, so the next load reads the files again (after editing or refreshing one)."""
    with _LOCK:
        _CACHE.clear()


def _load(directory: Path) -> Catalog:
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
    items = _query_through_gpuhunt(directory, providers)
    for provider in providers:
        if not any(item.provider == provider for item in items):
            raise CatalogError(f"{directory / f'{provider}.csv'}: gpuhunt read no offers from it")
    api_metadata, api_prices = _read_api_prices(directory / API_PRICES_FILE)
    return Catalog(directory, metadata, (_offer(item) for item in items), api_metadata, api_prices)


def _query_through_gpuhunt(directory: Path, providers: list[str]) -> list[gpuhunt.CatalogItem]:
    """Every offer of the snapshot, as gpuhunt reads it. GPUHUNT_CATALOG_DIR is read by gpuhunt at query time, so
    it is set only around this one query and then restored; auto_reload=False keeps gpuhunt off the network."""
    with _LOCK, _environment({CATALOG_DIR_ENV: str(directory)}):
        try:
            items: list[gpuhunt.CatalogItem] = gpuhunt.Catalog(balance_resources=False, auto_reload=False).query(
                provider=providers)
        except Exception as exc:  # whatever gpuhunt raises, the user gets a message, not a traceback
            raise CatalogError(f"cannot read the price snapshot in {directory} through gpuhunt: {exc}") from exc
    return items


def _offer(item: gpuhunt.CatalogItem) -> Offer:
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


def _read_api_prices(path: Path) -> tuple[dict[str, Any], list[tuple[ApiPrice, list[str]]]]:
    data = _read_json(path)
    for field in ("as_of", "source", "prices"):
        if not data.get(field):
            raise CatalogError(f"{path}: missing '{field}'")
    _check_as_of(path, data["as_of"])
    prices: list[tuple[ApiPrice, list[str]]] = []
    for index, entry in enumerate(data["prices"]):
        try:
            price = ApiPrice(provider=str(entry["provider"]).lower(), model=str(entry["model"]),
                             input_per_1m=float(entry["input_per_1m"]), output_per_1m=float(entry["output_per_1m"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"{path}: prices[{index}] needs provider, model, input_per_1m and output_per_1m "
                               f"({exc!r})") from None
        prices.append((price, [str(alias) for alias in entry.get("aliases", [])]))
    return data, prices


# --- refreshing from gpuhunt's live catalog -----------------------------------------------------------------------

def refresh_snapshot(directory: Path, providers: list[str] = ["aws"]) -> Catalog:  # noqa: B006 (never mutated)
    """Download gpuhunt's live catalog of `providers` (from its default URL, or GPUHUNT_CATALOG_URL) and write it to
    `directory` in the same layout as the pinned snapshot, with metadata saying when and from where. Nothing is
    written unless every requested provider downloaded; the pinned snapshot is only touched if `directory` is it."""
    wanted = [p.strip().lower() for p in providers]
    offline = gpuhunt_catalog.OFFLINE_PROVIDERS  # the providers gpuhunt publishes as downloadable catalogs
    if not wanted:
        raise CatalogError("name at least one provider to refresh")
    for provider in wanted:
        if provider not in offline:
            raise CatalogError(f"gpuhunt publishes no catalog for '{provider}'{_hint(provider, offline)} "
                               f"(it has: {', '.join(offline)})")
    base_url = os.getenv(CATALOG_URL_ENV, gpuhunt_catalog.CATALOG_URL).rstrip("/")
    versions: dict[str, str] = {}
    items: dict[str, list[gpuhunt.CatalogItem]] = {}
    failures: dict[str, str] = {}
    for provider in wanted:
        try:
            versions[provider], items[provider] = _download(base_url, provider)
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
                  + f"), downloaded {today} with gpuhunt {GPUHUNT_VERSION}",
        "providers": wanted,
        "gpuhunt_catalog_versions": versions,
        "layout": "gpuhunt offline catalog: one <provider>.csv per provider with gpuhunt's v2 columns, read by "
                  "gpuhunt.Catalog through GPUHUNT_CATALOG_DIR",
    }
    _write_snapshot(Path(directory), items, metadata)
    key = Path(directory).resolve()
    with _LOCK:
        _CACHE.pop(key, None)
    return load_catalog(key)


def _download(base_url: str, provider: str) -> tuple[str, list[gpuhunt.CatalogItem]]:
    """The latest version of one provider's catalog and its offers, from the layout gpuhunt publishes:
    `<provider>/version` names the latest, `<provider>/<version>/catalog.zip` holds `<provider>.csv`.

    gpuhunt's own Catalog.load() fetches these with urllib.request.urlopen(url) and offers no timeout, so bounding
    it would mean setting the process-wide socket default (every other thread's new sockets would share it while
    the refresh ran) or abandoning a hung thread. Fetching the two files here, each with a timeout of its own,
    bounds the refresh without touching global state, downloads only the providers asked for (load() fetches all
    of them), and still parses with gpuhunt's own reader."""
    version = _fetch(f"{base_url}/{provider}/version").decode("utf-8").strip()
    archive = _fetch(f"{base_url}/{provider}/{version}/catalog.zip")
    with zipfile.ZipFile(io.BytesIO(archive)) as zip_file, zip_file.open(f"{provider}.csv") as csv_file:
        return version, list(gpuhunt_storage.load(io.TextIOWrapper(csv_file, "utf-8"), provider=provider))


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=REFRESH_TIMEOUT_S) as response:
        return bytes(response.read())


def _write_snapshot(directory: Path, items: dict[str, list[gpuhunt.CatalogItem]], metadata: dict[str, Any]) -> None:
    """Write beside the target and move the files in, so a failure halfway leaves the old snapshot whole."""
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".refresh-", dir=directory))
    try:
        for provider, provider_items in items.items():
            gpuhunt_storage.dump(provider_items, str(staging / f"{provider}.csv"))  # gpuhunt's own writer
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if not (directory / API_PRICES_FILE).exists():
            # gpuhunt has no hosted-API prices: a new snapshot starts from the pinned table, with its own sources
            shutil.copyfile(DATA_DIR / API_PRICES_FILE, staging / API_PRICES_FILE)
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- helpers --------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
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


def _mode(spot: bool) -> str:
    return "spot" if spot else "on-demand"


def _hint(word: str, options: Iterable[str]) -> str:
    """did_you_mean, case-insensitive, answering with the option spelled as the catalog spells it."""
    spelled = {option.lower(): option for option in options}
    hint = did_you_mean(word.lower(), spelled)
    if not hint:
        return ""
    match = hint.split("'")[1]  # did_you_mean quotes the option it suggests: "; did you mean 'x'?"
    return hint.replace(f"'{match}'", f"'{spelled.get(match, match)}'")


# Tokens that name a GPU's form factor or brand, not the GPU: "NVIDIA A100-SXM4-80GB" is an A100 (80 GB).
_GPU_NOISE = {"nvidia", "tesla", "amd", "instinct", "sxm", "sxm2", "sxm4", "sxm5", "pcie", "gpu"}
_SEPARATORS = re.compile(r"[\s_\-/:]+")
# A size after a separator: "A100-80GB", "A100 80GB", "H100 80 GiB". Without one ("A10080GB") it is not read as a
# size, and a bare G ("A10G") is part of the name.
_MEMORY_SUFFIX = re.compile(r"^(?P<base>.*?\S)[\s_\-/:]+(?P<gib>\d+(?:\.\d+)?)\s*gi?b$", re.IGNORECASE)


def _split_memory(name: str) -> tuple[str, float | None]:
    """'A100-80GB' -> ('A100', 80.0); 'A10G' -> ('A10G', None)."""
    stripped = name.strip()
    match = _MEMORY_SUFFIX.match(stripped)
    if match is None:
        return stripped, None
    return match["base"], float(match["gib"])


def _normalise_gpu(name: str) -> str:
    tokens = [t for t in _SEPARATORS.split(name.strip().lower()) if t and t not in _GPU_NOISE]
    return "".join(tokens)


def _known_gpus() -> dict[str, list[GpuInfo]]:
    known: dict[str, list[GpuInfo]] = {}
    for accelerator in gpuhunt.KNOWN_ACCELERATORS:  # NVIDIA, AMD, TPU, Intel, Tenstorrent tables
        if not accelerator.memory:  # TPUs are listed without memory: nothing to size a model against
            continue
        info = GpuInfo(accelerator.name, float(accelerator.memory), accelerator.vendor.value)
        variants = known.setdefault(_normalise_gpu(accelerator.name), [])
        if info not in variants:
            variants.append(info)
    return known


_KNOWN_GPUS = _known_gpus()
_KNOWN_GPU_NAMES = sorted({variants[0].name for variants in _KNOWN_GPUS.values()})
