"""The price catalog's lookups against the pinned snapshot, and what loading it reads (and imports) when."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import genai_prices
import gpuhunt
import pytest

from llmctl.cost.catalog import DATA_DIR, CatalogError, load_catalog
from llmctl.errors import LlmctlError
from support import REPO


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# --- instances and GPUs ---------------------------------------------------------------------------------------------

def test_g5_xlarge_in_us_east_1_is_one_24_gib_a10g_and_spot_is_cheaper(catalog) -> None:
    on_demand = catalog.instance("aws", "us-east-1", "g5.xlarge", spot=False)
    spot = catalog.instance("aws", "us-east-1", "g5.xlarge", spot=True)
    assert (on_demand.gpu_name, on_demand.gpu_count, on_demand.gpu_memory_gib) == ("A10G", 1, 24)
    assert (on_demand.cpus, on_demand.memory_gib, on_demand.spot, spot.spot) == (4, 16, False, True)
    assert on_demand.price_per_hour > 0
    assert 0 < spot.price_per_hour < on_demand.price_per_hour
    # the figures transcribed from the source: $1.006/h on demand, cheapest AZ spot $0.397/h
    assert (on_demand.price_per_hour, spot.price_per_hour) == (1.006, 0.397)


def test_lookups_ignore_case_and_surrounding_space(catalog) -> None:
    assert catalog.instance(" AWS ", "US-East-1", "G5.XLarge", False) == catalog.instance(
        "aws", "us-east-1", "g5.xlarge", False)


def test_every_required_family_is_priced_in_both_us_regions_on_demand_and_spot(catalog) -> None:
    for family, size in [("g4dn", "xlarge"), ("g5", "xlarge"), ("g6", "xlarge"), ("g6e", "xlarge"),
                         ("p4d", "24xlarge"), ("p5", "48xlarge")]:
        for region in ("us-east-1", "us-west-2"):
            on_demand = catalog.instance("aws", region, f"{family}.{size}", False)
            spot = catalog.instance("aws", region, f"{family}.{size}", True)
            assert 0 < spot.price_per_hour < on_demand.price_per_hour, (family, region)


def test_for_gpu_picks_the_cheapest_g5_for_one_a10g(catalog) -> None:
    offer = catalog.for_gpu("aws", "us-east-1", "A10G", 1, spot=False)
    assert offer.instance_type.startswith("g5.")
    assert offer.instance_type == "g5.xlarge"
    assert (offer.gpu_name, offer.gpu_count, offer.spot) == ("A10G", 1, False)


def test_for_gpu_honours_a_size_in_the_gpu_name(catalog) -> None:
    assert catalog.for_gpu("aws", "us-east-1", "A100-80GB", 8, False).instance_type == "p4de.24xlarge"
    assert catalog.for_gpu("aws", "us-east-1", "A100 40GB", 8, False).instance_type == "p4d.24xlarge"
    # no size: any A100, and the cheapest spot 8 × A100 in us-east-1 is a p4d
    assert catalog.for_gpu("aws", "us-east-1", "A100", 8, True).instance_type == "p4d.24xlarge"
    assert catalog.for_gpu("aws", "us-west-2", "h100", 8, True).instance_type == "p5.48xlarge"


def test_for_gpu_without_that_count_names_the_counts_and_regions_there_are(catalog) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog.for_gpu("aws", "us-east-1", "A10G", 3, False)
    assert "exactly 3 × A10G" in str(caught.value)
    assert "1, 4, 8" in str(caught.value)
    with pytest.raises(CatalogError) as caught:
        catalog.for_gpu("aws", "eu-west-1", "L4", 1, False)  # g6 is not in eu-west-1 in this snapshot
    assert "regions with on-demand 1 × L4: us-east-1, us-west-2" in str(caught.value)
    with pytest.raises(CatalogError, match="GPUs it has prices for: .*A10G"):
        catalog.for_gpu("aws", "us-east-1", "H200", 8, False)
    with pytest.raises(CatalogError, match="at least 1"):
        catalog.for_gpu("aws", "us-east-1", "A10G", 0, False)


def test_gpu_facts_come_from_gpuhunts_tables(catalog) -> None:
    assert catalog.gpu("L4").memory_gib == 24
    assert catalog.gpu("a100-80gb").memory_gib == 80
    assert catalog.gpu("A100 80GB").memory_gib == 80
    assert catalog.gpu("NVIDIA A100-SXM4-80GB").memory_gib == 80
    assert catalog.gpu("A100").memory_gib == 40  # no size given: the smallest variant gpuhunt knows
    a10g = catalog.gpu("A10G")
    assert (a10g.name, a10g.memory_gib, a10g.vendor) == ("A10G", 24, "nvidia")
    assert catalog.gpu("l40s").name == "L40S"
    assert catalog.gpu("H100 NVL").name == "H100NVL"
    known = {info.name for info in gpuhunt.KNOWN_NVIDIA_GPUS}
    assert {"A10G", "L4", "L40S", "T4", "A100", "H100"} <= known


def test_an_unknown_gpu_suggests_close_names(catalog) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog.gpu("A10X")
    message = str(caught.value)
    assert "unknown GPU 'A10X'" in message
    assert "did you mean 'A10G'?" in message
    assert "A100, A10G, H100, L4, L40S, T4" in message  # the GPUs this catalog can price
    with pytest.raises(CatalogError, match="40 or 80 GiB, not 60 GiB"):
        catalog.gpu("A100-60GB")


def test_an_unknown_instance_type_suggests_the_close_one(catalog) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog.instance("aws", "us-east-1", "g5.xlarg", False)
    assert "did you mean 'g5.xlarge'?" in str(caught.value)
    assert isinstance(caught.value, LlmctlError)  # the CLI prints it instead of a traceback


@pytest.mark.parametrize(("instance_type", "spot"), [("g6.xlarge", False), ("g6e.12xlarge", True),
                                                     ("p5.48xlarge", False)])
def test_a_family_without_prices_in_a_region_names_the_regions_that_have_them(catalog, instance_type: str,
                                                                                 spot: bool) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog.instance("aws", "eu-west-1", instance_type, spot)
    message = str(caught.value)
    mode = "spot" if spot else "on-demand"
    assert f"{instance_type} has no {mode} price in eu-west-1" in message
    assert f"{mode} prices in: us-east-1, us-west-2" in message
    # while the families that are there have prices
    assert catalog.instance("aws", "eu-west-1", "g5.xlarge", spot).price_per_hour > 0


def test_a_mistyped_region_is_pointed_out(catalog) -> None:
    with pytest.raises(CatalogError, match="did you mean 'us-east-1'"):
        catalog.instance("aws", "us-east1", "g5.xlarge", False)


def test_an_unknown_provider_is_named(catalog) -> None:
    with pytest.raises(CatalogError, match="did you mean 'aws'"):
        catalog.instance("awss", "us-east-1", "g5.xlarge", False)


# --- metadata and provenance ----------------------------------------------------------------------------------------

def test_the_snapshot_says_when_and_where_its_prices_are_from(catalog) -> None:
    metadata = json.loads((DATA_DIR / "catalog.json").read_text())
    assert metadata["as_of"] and metadata["source"] and metadata["version"]
    assert (catalog.as_of, catalog.source, catalog.version) == (
        metadata["as_of"], metadata["source"], metadata["version"])
    assert "skypilot-catalog" in catalog.source and "001367d2" in catalog.source


def test_loads_are_cached_per_directory(snapshot_copy: Path) -> None:
    assert load_catalog() is load_catalog(DATA_DIR)
    assert load_catalog(snapshot_copy) is load_catalog(snapshot_copy)
    assert load_catalog(snapshot_copy) is not load_catalog()


# --- lazy offers: what a command that prices no GPU imports ----------------------------------------------------------

# Run in a fresh interpreter (this one imported gpuhunt long ago): which of gpuhunt (and what it brings with it) and
# genai-prices are imported after each step, and what the lookups answered.
_PROBE = """
import datetime, json, sys
from llmctl.cost.catalog import load_catalog
from llmctl.cost.hosted import library, listed_price

def imported():
    return sorted(name for name in ("genai_prices", "gpuhunt", "requests", "urllib3") if name in sys.modules)

seen = {"import": imported()}
catalog = load_catalog()
answers = {"version": catalog.version, "library": library()}
seen["versions"] = imported()
answers["gpt-4o-mini"] = listed_price("openai", "gpt-4o-mini", datetime.date(2026, 12, 1)).input_per_1m
seen["version and API price"] = imported()
answers["A10G GiB"] = catalog.gpu("A10G").memory_gib
answers["g5.xlarge"] = catalog.for_gpu("aws", "us-east-1", "A10G", 1, False).instance_type
answers["g5.xlarge $/h"] = catalog.instance("aws", "us-east-1", "g5.xlarge", False).price_per_hour
seen["GPU lookups"] = imported()
print(json.dumps({"seen": seen, "answers": answers}))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_reading_the_version_and_an_api_price_does_not_import_gpuhunt(probe: dict[str, Any]) -> None:
    assert probe["answers"]["version"] == load_catalog().version
    assert probe["answers"]["library"] == f"genai-prices {genai_prices.__version__}"
    assert probe["answers"]["gpt-4o-mini"] == 0.15
    assert probe["seen"]["import"] == []
    assert probe["seen"]["versions"] == []  # the lock names both on every plan, with neither library imported
    assert probe["seen"]["version and API price"] == ["genai_prices"]


def test_gpu_lookups_after_the_lazy_load_read_the_offers_through_gpuhunt(probe: dict[str, Any]) -> None:
    answers = probe["answers"]
    assert (answers["A10G GiB"], answers["g5.xlarge"], answers["g5.xlarge $/h"]) == (24, "g5.xlarge", 1.006)
    assert "gpuhunt" in probe["seen"]["GPU lookups"]
