"""Token prices of hosted (api://) models: the model's own `price` when it declares one, else genai-prices.

genai-prices (pydantic's maintained library of LLM API prices) ships its table inside the package, so the figures
are those of the installed version: `library()` names it, the lock pins it beside the GPU catalog, and plans never
fetch prices from the network. Lookups read the bundled table (`genai_prices.data.providers`) directly, never the
snapshot its `UpdatePrices` auto-updater would swap in, which llmctl does not start.

genai-prices is imported on the first lookup, not here: its table takes a fifth of a second to load, which a config
without hosted models does not need to pay.
"""
from __future__ import annotations

import datetime
from decimal import Decimal
from functools import cache
from importlib.metadata import version
from typing import TYPE_CHECKING, TypeGuard

from llmctl.cost.catalog import close_hint
from llmctl.cost.model import DECLARED, ApiPrice
from llmctl.cost.snapshot import CatalogError

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

    from llmctl.config.schema import Model
    from llmctl.desired import Desired

DISTRIBUTION = "genai-prices"


@cache
def library() -> str:
    """'genai-prices 0.2.3': the library whose bundled prices this process uses, read from the installed package's
    metadata (without importing it: the lock names it on every plan)."""
    return f"{DISTRIBUTION} {version(DISTRIBUTION)}"


def pinned_library(desired: Desired) -> str | None:
    """What a config's lock pins as its hosted-API prices: the library's version where it prices one of the models
    (a hosted one without a declared price), else None, so that a new genai-prices leaves the locks and saved plans
    of configs it prices nothing in alone."""
    priced = any(model.parsed_source.hosted and model.price is None for model in desired.models.values())
    return library() if priced else None


def price_of(model: Model) -> ApiPrice:
    """A hosted model's price: the one it declares, else the one genai-prices lists for it today (UTC).
    CatalogError when neither knows it."""
    if model.price is not None:
        return ApiPrice(input_per_1m=model.price.input_per_1m, output_per_1m=model.price.output_per_1m,
                        cached_input_per_1m=model.price.cached_input_per_1m, source=DECLARED)
    provider, _, name = model.parsed_source.location.partition("/")
    return listed_price(provider, name, datetime.datetime.now(datetime.UTC).date())


def listed_price(provider: str, model: str, day: datetime.date) -> ApiPrice:
    """What genai-prices lists for `model` at `provider` on `day`, matched as genai-prices matches them (provider
    aliases such as together_ai, dated model names, a provider's fallback to the maker's prices)."""
    from genai_prices.data import providers  # the table bundled with the pinned version
    from genai_prices.data_snapshot import find_provider_by_id

    entry = find_provider_by_id(providers, provider)
    if entry is None:
        raise CatalogError(f"{library()} has no provider '{provider}'"
                           f"{close_hint(provider, [p.id for p in providers])}")
    info = entry.find_model(model, all_providers=providers)
    if info is None:
        raise CatalogError(f"{library()} has no {entry.id} model '{model}'"
                           f"{close_hint(model, [m.id for m in entry.models])}")
    rates, caveats = _rates(info, day)
    input_rate, output_rate = _base(rates.input_mtok), _base(rates.output_mtok)
    if input_rate is None or output_rate is None:
        raise CatalogError(f"{library()} lists no input and output token price for {entry.id} model '{info.id}' "
                           f"(it lists {rates})")
    tiers = sorted({tier.start for value in (rates.input_mtok, rates.output_mtok) if _tiered(value)
                    for tier in value.tiers})
    if tiers:
        caveats.append(f"genai-prices lists other rates for requests over {tiers[0]:,} input tokens; the base rate "
                       "is used")
    cached = _base(rates.cache_read_mtok)
    return ApiPrice(input_per_1m=float(input_rate), output_per_1m=float(output_rate),
                    cached_input_per_1m=None if cached is None else float(cached),
                    source=f"{library()} ({entry.id}/{info.id})", caveat="; ".join(caveats) or None)


def _rates(info: ModelInfo, day: datetime.date) -> tuple[ModelPrice, list[str]]:
    """The model's prices on `day`. Where they change with the time of day (DeepSeek's off-peak discount), the
    highest of the day: a budget must not count on a discount that depends on when requests come."""
    from genai_prices.types import TimeOfDateConstraint

    conditional = info.prices if isinstance(info.prices, list) else []
    windows = [c.constraint for c in conditional if isinstance(c.constraint, TimeOfDateConstraint)]
    # every stretch of the day with prices of its own starts at midnight or at a window's start or end (genai-prices
    # reads a time without a zone as UTC)
    moments = {moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC) for moment in
               [datetime.time(0), *(w.start_time for w in windows), *(w.end_time for w in windows)]}
    candidates = [info.get_prices(datetime.datetime.combine(day, moment)) for moment in sorted(moments)]
    highest = max(candidates, key=lambda p: (_base(p.output_mtok) or 0, _base(p.input_mtok) or 0))
    varies = any(candidate != highest for candidate in candidates)
    return highest, ["genai-prices lists lower rates at other times of day; the highest is used"] if varies else []


def _tiered(value: Decimal | TieredPrices | None) -> TypeGuard[TieredPrices]:
    from genai_prices.types import TieredPrices

    return isinstance(value, TieredPrices)


def _base(value: Decimal | TieredPrices | None) -> Decimal | None:
    """A flat rate as it is; a tiered one by its base rate (below the first tier)."""
    return value.base if _tiered(value) else value
