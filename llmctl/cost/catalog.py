"""The price catalog: lookups of GPU instance offers and GPU facts in a loaded snapshot.

What a snapshot holds and how it is read and written is `llmctl.cost.snapshot`. Loading one reads only its metadata;
its offers and gpuhunt's GPU tables are read on the first lookup that needs them, so a command that prices no GPU
never imports gpuhunt. Hosted models' token prices are `llmctl.cost.hosted`.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from llmctl.cost.snapshot import (
    DATA_DIR,
    REFRESH_TIMEOUT_S,
    CatalogError,
    Offer,
    Snapshot,
    download_snapshot,
    read_snapshot,
)
from llmctl.errors import did_you_mean


@dataclass(frozen=True)
class GpuInfo:
    name: str  # as gpuhunt spells it: "A10G", "L40S", "A100"
    memory_gib: float  # per GPU
    vendor: str  # "nvidia", "amd", ...


class Catalog:
    """One loaded snapshot. Lookups are in memory: the plan asks many times per run."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self.directory = snapshot.directory
        self.version = snapshot.version
        self.as_of = snapshot.as_of
        self.source = snapshot.source
        self.providers = snapshot.providers

    def __repr__(self) -> str:  # without the offers: a repr must not be what loads them
        return f"Catalog(version={self.version!r}, as_of={self.as_of!r}, directory={str(self.directory)!r})"

    @cached_property
    def offers(self) -> tuple[Offer, ...]:
        """Read through gpuhunt on the first lookup that needs them, then kept. Two threads racing to the first
        lookup may both read the same files: time lost, not a wrong answer."""
        return tuple(self._snapshot.read_offers())

    @cached_property
    def _index(self) -> _OfferIndex:
        return _OfferIndex(self.offers)

    # --- GPUs ---------------------------------------------------------------------------------------------------

    def gpu(self, name: str) -> GpuInfo:
        """A GPU by name, case-insensitive, from gpuhunt's tables of known accelerators. "A100-80GB",
        "A100 80GB" and "NVIDIA A100-SXM4-80GB" name the 80 GiB A100; a plain "A100" is its smallest variant."""
        info, _ = self._resolve_gpu(name)
        return info

    def _resolve_gpu(self, name: str) -> tuple[GpuInfo, bool]:
        """The GPU and whether the name fixed its memory size (then only offers of that size match it)."""
        base, memory = _split_memory(name)
        variants = _known_gpus().get(_normalise_gpu(base), [])
        if not variants:
            offered = self._offered_gpus()
            known = sorted({same[0].name for same in _known_gpus().values()})
            hint = close_hint(base.strip(), offered) or close_hint(base.strip(), known)
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
        types = self._index.types[provider]
        if wanted not in types:
            families = sorted({t.split(".", 1)[0] for t in types})
            raise CatalogError(f"unknown {provider} instance type '{instance_type}'{close_hint(wanted, types)} "
                               f"(this catalog prices the {', '.join(families)} families)")
        offer = self._index.by_key.get((provider, wanted, region, spot))
        if offer is not None:
            return offer
        mode, other = _mode(spot), _mode(not spot)
        priced = sorted(r for (p, t, r, s) in self._index.by_key if (p, t, s) == (provider, wanted, spot))
        message = f"{provider} {wanted} has no {mode} price in {region}{self._region_hint(provider, region)}"
        if priced:
            message += f"; it has {mode} prices in: {', '.join(priced)}"
        else:
            message += f"; it has no {mode} price in any region of this catalog"
        if (provider, wanted, region, not spot) in self._index.by_key:
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
        if name not in self.providers:
            raise CatalogError(f"no instance prices for provider '{provider}'{close_hint(name, self.providers)} "
                               f"(this catalog has: {', '.join(sorted(self.providers))})")
        return name

    def _region_hint(self, provider: str, region: str) -> str:
        if region in self._index.regions[provider]:
            return ""
        hint = close_hint(region, self._index.regions[provider])
        regions = ", ".join(sorted(self._index.regions[provider]))
        return f" ('{region}' is not a region of this catalog{hint}{' Its' if hint else '; its'} regions: {regions})"


class _OfferIndex:
    """The offers arranged for lookups, built once with them."""

    def __init__(self, offers: Iterable[Offer]) -> None:
        # (provider, instance type, region, spot) -> offer, matched case-insensitively (offers keep gpuhunt's
        # spelling: Azure's are mixed case); a duplicate row keeps the cheaper price
        self.by_key: dict[tuple[str, str, str, bool], Offer] = {}
        self.types: dict[str, set[str]] = {}  # provider -> instance types, lower case
        self.regions: dict[str, set[str]] = {}  # provider -> regions, lower case
        for offer in offers:
            key = (offer.provider, offer.instance_type.lower(), offer.region.lower(), offer.spot)
            if key not in self.by_key or offer.price_per_hour < self.by_key[key].price_per_hour:
                self.by_key[key] = offer
            self.types.setdefault(offer.provider, set()).add(key[1])
            self.regions.setdefault(offer.provider, set()).add(key[2])


# --- loading --------------------------------------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()
_CACHE: dict[Path, Catalog] = {}


def load_catalog(directory: Path | None = None) -> Catalog:
    """The snapshot in `directory` (default: the pinned one), loaded once per directory and then cached."""
    key = Path(directory if directory is not None else DATA_DIR).resolve()
    with _CACHE_LOCK:
        catalog = _CACHE.get(key)
        if catalog is None:
            catalog = _CACHE[key] = Catalog(read_snapshot(key))
        return catalog


def refresh_snapshot(directory: Path, providers: Sequence[str] = ("aws",),
                     timeout_s: float = REFRESH_TIMEOUT_S) -> Catalog:
    """Write gpuhunt's live catalog of `providers` to `directory` as a snapshot (see `download_snapshot`; each
    download waits at most `timeout_s`) and load it, in place of any earlier load of that directory."""
    key = Path(directory).resolve()
    download_snapshot(key, providers, timeout_s)
    with _CACHE_LOCK:
        _CACHE.pop(key, None)
    return load_catalog(key)


# --- helpers --------------------------------------------------------------------------------------------------------

def _mode(spot: bool) -> str:
    return "spot" if spot else "on-demand"


def close_hint(word: str, options: Iterable[str]) -> str:
    """did_you_mean, case-insensitive, answering with the option spelled as its source spells it."""
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


@cache
def _known_gpus() -> dict[str, list[GpuInfo]]:
    """gpuhunt's tables of accelerators by normalised name, read on the first GPU lookup (importing gpuhunt is
    what a catalog without GPU lookups avoids)."""
    import gpuhunt

    known: dict[str, list[GpuInfo]] = {}
    for accelerator in gpuhunt.KNOWN_ACCELERATORS:  # NVIDIA, AMD, TPU, Intel, Tenstorrent tables
        if not accelerator.memory:  # TPUs are listed without memory: nothing to size a model against
            continue
        info = GpuInfo(accelerator.name, float(accelerator.memory), accelerator.vendor.value)
        variants = known.setdefault(_normalise_gpu(accelerator.name), [])
        if info not in variants:
            variants.append(info)
    return known
