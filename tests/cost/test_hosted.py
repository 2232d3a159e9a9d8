"""Hosted models' token prices: genai-prices' bundled table for any provider it lists, a declared price for any
other (or a negotiated rate), and what a plan says about each: the price and where it came from, and an error only
where a blocking budget depends on a price nobody knows; the library's version pinned in the lock."""
from __future__ import annotations

import datetime
import json
import textwrap
from pathlib import Path

import genai_prices
import pytest

from llmctl.config.schema import Config, Model
from llmctl.cost.hosted import library, listed_price, pinned_library, price_of
from llmctl.cost.snapshot import CatalogError
from llmctl.desired import Desired
from support import Run, edit

LIBRARY = f"genai-prices {genai_prices.__version__}"
DAY = datetime.date(2026, 12, 1)


def hosted(source: str, **fields: object) -> Model:
    return Model.model_validate({"name": "m", "source": source, **fields})


# --- genai-prices' table --------------------------------------------------------------------------------------------

def test_the_library_is_named_by_the_installed_version() -> None:
    assert library() == LIBRARY == "genai-prices 0.2.3"  # pyproject pins it: a new version is a deliberate move


@pytest.mark.parametrize(("provider", "model", "entry", "rates"), [
    # what the hand-kept table held, at the same figures, under each name it listed
    ("openai", "gpt-4o-mini", "openai/gpt-4o-mini", (0.15, 0.6)),
    ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", (0.15, 0.6)),
    ("OpenAI", "GPT-4o", "openai/gpt-4o", (2.5, 10.0)),
    ("openai", "gpt-4o-2024-11-20", "openai/gpt-4o", (2.5, 10.0)),
    ("anthropic", "claude-3-5-haiku", "anthropic/claude-3-5-haiku-latest", (0.8, 4.0)),
    ("anthropic", "claude-3.5-haiku", "anthropic/claude-3-5-haiku-latest", (0.8, 4.0)),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet", (3.0, 15.0)),
    # and the providers it did not
    ("groq", "llama-3.1-8b-instant", "groq/llama-3.1-8b-instant", (0.05, 0.08)),
    ("together_ai", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
     "together/meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", (0.18, 0.18)),
    ("mistral", "mistral-large-latest", "mistral/mistral-large", (2.0, 6.0)),
])
def test_listed_prices_name_the_library_version_and_the_entry_matched(provider: str, model: str, entry: str,
                                                                       rates: tuple[float, float]) -> None:
    price = listed_price(provider, model, DAY)
    assert (price.input_per_1m, price.output_per_1m) == rates
    assert price.source == f"{LIBRARY} ({entry})"


def test_a_cached_input_rate_is_kept_where_the_library_lists_one() -> None:
    assert listed_price("openai", "gpt-4o-mini", DAY).cached_input_per_1m == 0.075
    assert listed_price("groq", "llama-3.1-8b-instant", DAY).cached_input_per_1m is None


def test_a_price_that_changes_with_the_time_of_day_is_taken_at_its_highest() -> None:
    # DeepSeek charges $0.27/$1.10 from 00:30 to 16:30 UTC and half that outside: a budget must not count on that.
    price = listed_price("deepseek", "deepseek-chat", DAY)
    assert (price.input_per_1m, price.output_per_1m) == (0.27, 1.1)
    assert price.caveat is not None and "lower rates at other times of day" in price.caveat


def test_a_tiered_price_is_taken_at_its_base_rate_and_says_so() -> None:
    price = listed_price("openai", "gpt-5.4", DAY)
    assert price.input_per_1m == 2.5
    assert price.caveat is not None and "over 272,000 input tokens" in price.caveat


@pytest.mark.parametrize(("provider", "model", "words"), [
    ("togther", "x", ["has no provider 'togther'", "did you mean 'together'?"]),
    ("openai", "gpt-4o-mni", ["has no openai model 'gpt-4o-mni'", "did you mean 'gpt-4o-mini'?"]),
    ("together", "meta-llama-3.1-8b-instruct-turbo",
     ["has no together model", "did you mean 'meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo'?"]),
    ("openai", "text-embedding-3-small", ["no input and output token price", "$0.02/input MTok"]),
    ("my-vllm", "llama", ["has no provider 'my-vllm'"]),
])
def test_what_the_library_cannot_price_is_named(provider: str, model: str, words: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        listed_price(provider, model, DAY)
    assert str(caught.value).startswith(LIBRARY)
    for word in words:
        assert word in str(caught.value)


def test_a_declared_price_wins_over_the_library() -> None:
    declared = price_of(hosted("api://openai/gpt-4o-mini", price={"input_per_1m": 0.1, "output_per_1m": 0.4,
                                                                    "cached_input_per_1m": 0.05}))
    assert (declared.input_per_1m, declared.output_per_1m, declared.cached_input_per_1m) == (0.1, 0.4, 0.05)
    assert declared.source == "declared"
    assert price_of(hosted("api://openai/gpt-4o-mini")).source == f"{LIBRARY} (openai/gpt-4o-mini)"
    assert price_of(hosted("api://my-vllm/llama", price={"input_per_1m": 0, "output_per_1m": 0})).source == "declared"


def test_the_lock_pins_the_library_only_where_it_prices_a_model(tmp_path: Path) -> None:
    def pinned(*models: dict[str, object]) -> str | None:
        config = Config.model_validate({"version": 1, "project": "p", "models": list(models)})
        return pinned_library(Desired.from_parts(config, tmp_path))

    listed = {"name": "listed", "source": "api://groq/llama-3.1-8b-instant"}
    declared = {"name": "declared", "source": "api://partner/chat", "price": {"input_per_1m": 1, "output_per_1m": 2}}
    served = {"name": "served", "source": "m.gguf", "engine": "llama-cpp"}
    assert pinned(listed, declared, served) == LIBRARY
    # a new genai-prices leaves alone the locks (and saved plans) of configs it prices nothing in
    assert pinned(declared, served) is None and pinned(served) is None


# --- plans, as a user meets them -------------------------------------------------------------------------------------

CONFIG = """\
    version: 1
    project: hosted
    models:
      - name: fast
        source: api://groq/llama-3.1-8b-instant
        api_base: https://api.groq.com/openai/v1
        api_key_env: GROQ_API_KEY
        budget: team
        traffic: {requests_per_day: 1000, input_tokens: 1000, output_tokens: 500}
      - name: partner
        source: api://partner/chat-large
        api_base: https://llm.partner.example/v1
        api_key_env: PARTNER_API_KEY
        price: {input_per_1m: 0.5, output_per_1m: 1.5}
        traffic: {requests_per_day: 1000, input_tokens: 1000, output_tokens: 500}
    budgets:
      - {name: team, limit_usd: 100, on_exceed: block, scope: [partner]}
    """
DECLARED = "    price: {input_per_1m: 0.5, output_per_1m: 1.5}\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "llmops.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def test_the_plan_shows_each_hosted_models_price_and_where_it_came_from(llmctl: Run, config: Path) -> None:
    result = llmctl("plan", "-f", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"price: $0.05 in / $0.08 out per 1M tokens, from {LIBRARY} (groq/llama-3.1-8b-instant)"
            in result.stdout), result.stdout
    assert "price: $0.5 in / $1.5 out per 1M tokens, declared" in result.stdout
    # 1,000 requests a day of 1,000 in and 500 out: $0.09/day on groq, $1.25/day at the declared price
    assert "$2.74/mo" in result.stdout and "$38.02/mo" in result.stdout
    assert "budget team: $40.76 of $100.00/month" in result.stdout

    plan = json.loads(llmctl("plan", "-f", str(config), "--format", "json").stdout)
    prices = {cost["model"]: cost["price"] for cost in plan["cost"]["after"]["models"]}
    assert prices["fast"]["source"] == f"{LIBRARY} (groq/llama-3.1-8b-instant)"
    assert prices["partner"] == {"input_per_1m": 0.5, "output_per_1m": 1.5, "cached_input_per_1m": None,
                                 "source": "declared", "caveat": None}
    markdown = llmctl("plan", "-f", str(config), "--format", "markdown").stdout
    assert (f"api://groq/llama-3.1-8b-instant at $0.05 in / $0.08 out per 1M tokens, from {LIBRARY} "
            "(groq/llama-3.1-8b-instant)") in markdown
    assert "api://partner/chat-large at $0.5 in / $1.5 out per 1M tokens, declared" in markdown

    lock = json.loads((config.parent / "llmops.lock").read_text())
    assert lock["api_prices"] == LIBRARY


def test_an_unknown_price_a_blocking_budget_depends_on_is_a_plan_error(llmctl: Run, config: Path) -> None:
    edit(config, DECLARED, "")
    result = llmctl("plan", "-f", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = next(line for line in result.stdout.splitlines() if line.startswith("Error: [model.partner]"))
    assert f"no price for api://partner/chat-large: {LIBRARY} has no provider 'partner'" in error
    assert "Budget team (on_exceed: block) counts it" in error
    assert "declare its price on the model" in error and "price: {input_per_1m:" in error


@pytest.mark.parametrize(("old", "new"), [("on_exceed: block", "on_exceed: warn"), ("scope: [partner]", "scope: []")],
                         ids=["a warn budget", "no budget"])
def test_an_unknown_price_without_a_blocking_budget_is_a_warning(llmctl: Run, config: Path, old: str,
                                                                 new: str) -> None:
    edit(config, DECLARED, "")
    edit(config, old, new)
    result = llmctl("plan", "-f", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    warning = next(line for line in result.stdout.splitlines() if line.startswith("Warning: [model.partner]"))
    assert "no price for api://partner/chat-large" in warning and "Its spend is not metered" in warning
    assert "declare its price on the model" in warning


def test_a_bad_price_is_a_validate_error_at_its_line(llmctl: Run, config: Path) -> None:
    edit(config, "input_per_1m: 0.5", "input_per_1m: -0.5")
    result = llmctl("validate", "-f", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{config}:14:13: models[partner].price.input_per_1m: input should be greater than or equal to 0, "
            "got -0.5") in result.stdout + result.stderr


def test_a_saved_plan_priced_with_another_version_of_the_library_is_refused(llmctl: Run, config: Path) -> None:
    saved = config.parent / "saved.plan"
    assert llmctl("plan", "-f", str(config), "--out", str(saved)).returncode == 0
    # as if the plan and the lock had been made where an older genai-prices was installed
    for path in (saved, config.parent / "llmops.lock"):
        edit(path, f'"api_prices": "{LIBRARY}"', '"api_prices": "genai-prices 0.1.0"')
    refused = llmctl("apply", str(saved), "--auto-approve")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert (f"the hosted-API price library is now {LIBRARY}, but the plan was priced with genai-prices 0.1.0: run "
            "`llmctl plan` again") in refused.stderr
