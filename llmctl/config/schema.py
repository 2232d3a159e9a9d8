"""The llmops.yaml contract as pydantic models: the single definition of the config.

`schemas/llmops.schema.json` is generated from `Config`; cross-references between sections are checked in
`references.py`, after these models have validated each value on its own.
"""
from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from llmctl.config.sources import Source, parse_source

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=63),
    Field(description="Letters, digits, '.', '_' and '-'; starts with a letter or digit; at most 63 characters."),
]
Duration = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"),
    Field(description="A duration such as 500ms, 20s, 2m, 1h or 28d."),
]
Fraction = Annotated[float, Field(ge=0, le=1)]

DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h|d)", value).groups()  # type: ignore[union-attr]
    return float(number) * DURATION_UNITS[unit]


class Strict(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored.
    model_config = ConfigDict(extra="forbid")


# --- targets -----------------------------------------------------------------------------------------------


class LocalTarget(Strict):
    """Processes on this machine."""

    provider: Literal["local"]
    gpu_hour_usd: PositiveFloat | None = Field(None, description="What a GPU hour here costs; $0 when omitted.")


class AwsTarget(Strict):
    """EC2 GPU instances provisioned through Pulumi."""

    provider: Literal["aws"]
    region: str
    spot: bool = Field(False, description="Spot instances first, on-demand as fallback.")


class KubernetesTarget(Strict):
    """Deployments on an existing cluster through Pulumi."""

    provider: Literal["kubernetes"]
    context: str | None = Field(None, description="kubeconfig context; the current context when omitted.")
    namespace: str = "default"
    gpu_hour_usd: PositiveFloat | None = Field(None, description="What one GPU hour on this cluster costs.")


Target = Annotated[Union[LocalTarget, AwsTarget, KubernetesTarget], Field(discriminator="provider")]
PROVIDERS = ("local", "aws", "kubernetes")
# A model with no `target` runs here; it needs no declaration.
DEFAULT_TARGET = "local"

# --- models --------------------------------------------------------------------------------------------------


class GpuSpec(Strict):
    type: str = Field(description="GPU model, e.g. A10G, L4, A100-80GB.")
    count: PositiveInt = 1


class ReplicaRange(Strict):
    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> "ReplicaRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self


def _replicas_kind(value: Any) -> str:
    return "range" if isinstance(value, (dict, ReplicaRange)) else "count"


Replicas = Annotated[
    Union[Annotated[PositiveInt, Tag("count")], Annotated[ReplicaRange, Tag("range")]],
    Discriminator(_replicas_kind),
    Field(description="A fixed count, or {min, max} for autoscaling targets."),
]


class Autoscale(Strict):
    metric: Literal["concurrency", "rps", "gpu_utilization"]
    target: PositiveFloat


class Traffic(Strict):
    """Expected load: drives cost estimates and capacity checks."""

    requests_per_day: NonNegativeInt
    input_tokens: PositiveInt
    output_tokens: PositiveInt


Engine = Literal["llama-cpp", "vllm", "tgi"]
EngineArg = Union[bool, int, float, str]


class TokenPrice(Strict):
    """A hosted model's own price in USD per million tokens; it wins over the price genai-prices lists.

    For a provider or model genai-prices does not list (a self-hosted OpenAI-compatible endpoint), or a negotiated
    rate."""

    input_per_1m: float = Field(ge=0, description="USD per 1M input (prompt) tokens.")
    output_per_1m: float = Field(ge=0, description="USD per 1M output (completion) tokens.")
    cached_input_per_1m: float | None = Field(None, ge=0, description="USD per 1M cached input tokens, where the "
                                              "provider discounts them: the gateway meters the input tokens the "
                                              "provider reports cached at this rate.")


class Model(Strict):
    name: Name
    source: str = Field(
        description="hf://ORG/REPO[@REVISION], pkg://PACKAGE/PATH, file://PATH or a path relative to the config, "
        "or api://PROVIDER/MODEL for a hosted model."
    )
    engine: Engine | None = Field(None, description="Serving engine; required unless the source is api://.")
    engine_args: dict[str, EngineArg] = Field(default_factory=dict, description="Passed to the engine as --KEY VALUE.")
    target: Name | None = Field(None, description=f"A key of `targets`; defaults to the built-in '{DEFAULT_TARGET}'.")
    gpu: GpuSpec | None = None
    instance_type: str | None = None
    replicas: Replicas = 1
    autoscale: Autoscale | None = None
    context_length: PositiveInt | None = None
    prompt: Name | None = None
    guardrails: list[Name] = Field(default_factory=list)
    slo: Name | None = None
    evals: list[Name] = Field(default_factory=list, description="Evals apply runs through the gateway after the SLO "
                              "load test, and `llmctl eval` runs on demand.")
    rollout: Name | None = Field(None, description="How a change to this model or its prompt reaches traffic: a "
                                 "declared rollout; all at once when omitted.")
    budget: Name | None = None
    traffic: Traffic | None = None
    api_base: str | None = Field(None, description="api:// models: the provider's OpenAI-compatible base URL "
                                 "(openai: https://api.openai.com/v1 when omitted).")
    api_key_env: str | None = Field(None, description="api:// models: the environment variable holding the "
                                    "provider's key, read by the gateway per request (openai: OPENAI_API_KEY).")
    price: TokenPrice | None = Field(None, description="api:// models: the price the plan and the gateway use; "
                                     "genai-prices' listed price when omitted.")

    # The source as written stays what plans, state and the lock show; parsed once here, every part of llmctl
    # reads its scheme, location and revision from `parsed_source`.
    _parsed_source: Source = PrivateAttr()

    @field_validator("source")
    @classmethod
    def _source_parses(cls, value: str) -> str:
        parse_source(value)
        return value

    def model_post_init(self, context: Any) -> None:
        self._parsed_source = parse_source(self.source)

    @property
    def parsed_source(self) -> Source:
        return self._parsed_source


# --- prompts, guardrails, budgets, slos ------------------------------------------------------------------------


class PromptVariant(Strict):
    """Another version of a prompt served beside it to a share of callers (an A/B test)."""

    version: PositiveInt
    system: str | None = Field(None, description="Its system message; the prompt's own when omitted.")
    template: str = Field(description="Uses only the prompt's declared variables.")
    weight: int = Field(ge=1, le=99, description="Percent of callers served this version; the prompt's own version "
                        "serves the rest.")


class Prompt(Strict):
    name: Name
    version: PositiveInt = 1
    system: str | None = None
    template: str
    variables: list[str] = Field(default_factory=list)
    variants: list[PromptVariant] = Field(default_factory=list, description="An A/B test through the gateway: each "
                                          "caller (the request's `user`, else its key) is assigned one version and "
                                          "keeps it.")

    def versions(self) -> list[tuple["Prompt", int]]:
        """Every version served, as a prompt of its own, with its weight in percent (the prompt's first)."""
        own = 100 - sum(variant.weight for variant in self.variants)
        return [(self.model_copy(update={"variants": []}), own)] + [
            (self.model_copy(update={"version": v.version, "system": v.system if v.system is not None else self.system,
                                     "template": v.template, "variants": []}), v.weight) for v in self.variants]


def _compiles(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return patterns


def _off(value: Any) -> Any:
    # YAML 1.1 reads an unquoted `off` as false.
    return "off" if value is False else value


PiiAction = Annotated[Literal["off", "redact", "block"], BeforeValidator(_off)]


class OutputGuard(Strict):
    max_tokens: PositiveInt | None = None
    pii: PiiAction = "off"
    prompt_injection: Annotated[Literal["off", "flag", "block"], BeforeValidator(_off)] = Field(
        "off", description="Prompt injections and jailbreaks: known phrasings and a learned model, read through "
                           "disguises (look-alike letters, encodings). On output: an answer carrying one onwards.")
    sensitivity: Literal["low", "medium", "high"] = Field(
        "medium", description="How readily prompt_injection fires: low (fewest false positives) to high (most "
                              "attacks caught). `llmctl guardrails eval FILE` measures each on your own texts.")
    deny_patterns: list[str] = Field(default_factory=list)

    _patterns = field_validator("deny_patterns")(_compiles)


class InputGuard(OutputGuard):
    """The same checks on a request, where max_tokens bounds its input."""


class Guardrail(Strict):
    name: Name
    input: InputGuard = Field(default_factory=InputGuard)
    output: OutputGuard = Field(default_factory=OutputGuard)


class Budget(Strict):
    name: Name
    limit_usd: PositiveFloat
    period: Literal["day", "week", "month"] = "month"
    alert_at: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=list, description="Fractions of limit_usd at which to alert, e.g. [0.5, 0.8, 1.0]."
    )
    on_exceed: Literal["warn", "block"] = "warn"
    notify: list[str] = Field(default_factory=list)
    scope: list[Name] = Field(default_factory=list,
                              description="Models this budget also counts, beside those that name it.")


class LoadTest(Strict):
    users: PositiveInt = 4
    spawn_rate: PositiveFloat = 2
    duration: Duration = "20s"
    max_tokens: PositiveInt = 64
    prompts_file: str | None = Field(None, description="JSONL of prompts, relative to the config file.")


class Slo(Strict):
    name: Name
    ttft_p95_ms: PositiveFloat | None = Field(None, description="95th percentile time to first token.")
    latency_p95_ms: PositiveFloat | None = Field(None, description="95th percentile end-to-end request latency.")
    itl_p95_ms: PositiveFloat | None = Field(None, description="95th percentile gap between streamed tokens.")
    error_rate: Fraction | None = Field(None, description="Highest share of failed requests.")
    min_rps: PositiveFloat | None = Field(None, description="Lowest completed requests per second.")
    min_goodput: Fraction | None = Field(
        None, description="Lowest share of requests that succeed within every per-request target above.")
    loadtest: LoadTest = Field(default_factory=LoadTest)
    on_violation: Literal["rollback", "warn"] = "rollback"
    window: Duration = Field("28d", description="The error-budget window that burn-rate alerts measure against.")
    alert_min_rps: PositiveFloat = Field(
        0.01, description="Below this request rate (over an alert's long window) burn-rate alerts stay quiet, so one "
        "failure in a quiet hour does not page.")


# --- evals -------------------------------------------------------------------------------------------------

ASSERTION_TYPES = ("equals", "contains", "icontains", "contains_all", "icontains_all", "regex", "starts_with",
                   "is_json", "json_schema", "min_length", "max_length", "max_latency_ms", "max_cost_usd", "similar",
                   "llm_rubric")
# Negatable: `not_contains` passes where `contains` fails. Latency and cost bounds are limits already.
NEGATABLE = tuple(t for t in ASSERTION_TYPES if t not in ("max_latency_ms", "max_cost_usd", "llm_rubric"))


class EvalAssertion(Strict):
    """One check of an answer. `value` is what the type compares with (text, a list of texts, a pattern, a JSON
    schema, a bound, a reference answer or a rubric)."""

    type: str = Field(description=f"One of {', '.join(ASSERTION_TYPES)}; {', '.join('not_' + t for t in NEGATABLE[:2])}"
                      ", ... negate.")
    value: Any = None
    threshold: Fraction | None = Field(None, description="similar: the lowest cosine similarity that passes.")
    judge: Name | None = Field(None, description="llm_rubric: the model (declared in this config) that grades.")

    @property
    def negated(self) -> bool:
        return self.type.startswith("not_")

    @property
    def base(self) -> str:
        return self.type.removeprefix("not_")


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class EvalCase(Strict):
    """What to ask (the prompt's variables, or whole messages) and what to expect."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    vars: dict[str, str] | None = Field(None, description="The model's prompt template variables.")
    messages: list[ChatMessage] | None = Field(None, description="Sent as they are (no prompt template).")
    expected: str | None = Field(None, description="The reference answer `equals` and `similar` default to.")
    assert_: list[EvalAssertion] = Field(default_factory=list, alias="assert")

    @model_validator(mode="after")
    def _one_input(self) -> "EvalCase":
        if (self.vars is None) == (self.messages is None):
            raise ValueError("give exactly one of `vars` (the prompt's variables) or `messages`")
        return self


class Eval(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Name
    dataset: str | None = Field(None, description="JSONL beside the config, one case a line: {\"vars\": {...}} or "
                                "{\"messages\": [...]}, with optional \"expected\" and \"assert\".")
    cases: list[EvalCase] = Field(default_factory=list, description="Inline cases, run beside the dataset's.")
    assert_: list[EvalAssertion] = Field(default_factory=list, alias="assert",
                                         description="Applied to every case.")
    pass_rate: Fraction = Field(1.0, description="The lowest share of cases that must pass.")
    repeat: PositiveInt = Field(1, description="Samples per case; a case passes by majority.")
    baseline: bool = Field(False, description="Also fail on cases that passed in the last applied run.")
    on_failure: Literal["rollback", "warn"] = "rollback"
    key: Name | None = Field(None, description="The gateway key to ask as, with that key's model list, rate limits "
                             "and team, as its users are served; the cases are paced to its requests_per_minute. "
                             "Default: llmctl's own key, which has no limits.")


# --- rollouts ----------------------------------------------------------------------------------------------------


class RolloutStep(Strict):
    weight: int = Field(ge=1, le=100, description="Percent of callers the new version serves in this step.")
    duration: Duration | None = Field(None, description="How long the step runs before its analysis decides.")
    pause: bool = Field(False, description="After the step, wait for `llmctl rollout promote`.")


class RolloutAnalysis(Strict):
    """What each step compares, new version against stable, on the same window."""

    slo: Name | None = Field(None, description="The SLO whose targets both versions are held to; default: the "
                             "model's own.")
    evals: list[Name] | None = Field(None, description="Evals run against the new version; default: the model's.")
    max_negative_feedback_increase: Fraction | None = Field(None, description="How much more negative feedback "
                                                            "the new version may get, as a share of its requests.")
    max_cost_increase: float | None = Field(None, ge=0, description="How much more a request may cost on the new "
                                            "version, as a fraction of stable's (0.1: 10%).")
    min_requests: PositiveInt = Field(50, description="Below this many requests a version has not been judged: "
                                      "llmctl drives load to it rather than deciding on nothing.")


class Rollout(Strict):
    """How a change to a model (or its prompt) reaches traffic."""

    name: Name
    strategy: Literal["all_at_once", "canary", "blue_green"] = "canary"
    steps: list[RolloutStep] = Field(default_factory=list, description="canary: the weights it moves through, "
                                     "ending at 100.")
    preview: Duration | None = Field(None, description="blue_green: how long the new version is analysed, fully "
                                     "up and taking the analysis load only, before traffic switches.")
    keep_previous: Duration | None = Field(None, description="blue_green: how long the old version stays up after "
                                           "the switch, so switching back is instant.")
    analysis: RolloutAnalysis = Field(default_factory=RolloutAnalysis)
    on_failure: Literal["abort"] = Field("abort", description="Weight back to 0, the new version stopped; exit 4, "
                                         "or 5 when an eval failed.")

    def effective_steps(self) -> list[RolloutStep]:
        """The steps apply walks. blue_green: the new version analysed on llmctl's own load at weight 0 for
        `preview`, then every caller switched at once."""
        if self.strategy == "blue_green":
            # Weight 0 is no step a user may declare, but it is what a preview is: built without validation.
            return [RolloutStep.model_construct(weight=0, duration=self.preview, pause=False),
                    RolloutStep(weight=100)]
        return list(self.steps)


# --- the gateway -------------------------------------------------------------------------------------------------


class GatewayKey(Strict):
    """A client API key, declared by reference: the key itself never enters the config, a plan or state."""

    name: Name = Field(description="What logs, metrics and the audit log call this key.")
    env: str | None = Field(None, description="Environment variable holding the key (read at apply).")
    file: str | None = Field(None, description="File holding the key, relative to the config (read at apply).")
    models: list[Name] | None = Field(None, description="Models this key may call; every model when omitted.")
    team: Name | None = Field(None, description="The team metrics and spend of this key are labelled with.")
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "GatewayKey":
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` (an environment variable) or `file` holding the key")
        return self


class Team(Strict):
    """A team: the keys whose `team` names it, and the budget their spend counts against, whatever model."""

    name: Name
    budget: Name | None = Field(None, description="A budget the team's requests count against, enforced by the "
                                "gateway request by request (on_exceed: block refuses the team's keys only).")


class FeedbackRange(Strict):
    """A numeric score, e.g. 1..5 stars."""

    min: float
    max: float
    negative_below: float | None = Field(None, description="A score below this is negative; default: the middle "
                                         "of the range.")

    @model_validator(mode="after")
    def _ordered(self) -> "FeedbackRange":
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        if self.negative_below is not None and not self.min < self.negative_below <= self.max:
            raise ValueError(f"negative_below ({self.negative_below:g}) must be above min and at most max")
        return self

    @property
    def threshold(self) -> float:
        return self.negative_below if self.negative_below is not None else (self.min + self.max) / 2


class Feedback(Strict):
    """Users' ratings of answers: POST /v1/feedback with the answer's id, by the key that asked."""

    # Told apart by shape, so a range with a mistake reports that mistake alone, not also "expected 'thumbs'".
    scale: Annotated[Annotated[Literal["thumbs"], Tag("thumbs")] | Annotated[FeedbackRange, Tag("range")],
                     Discriminator(lambda value: "range" if isinstance(value, (dict, FeedbackRange)) else "thumbs")
                     ] = Field("thumbs", description="thumbs: score `up` or `down` (or 1 / -1); a range: a number "
                               "from min to max.")
    window: Duration = Field("7d", description="How long after an answer it can be rated; older ids are 404.")


class Cache(Strict):
    """Answers to deterministic requests (temperature 0, or a seed), replayed for the same request from the same
    team (or key): at $0, marked `x-llmctl-cache: hit`."""

    ttl: Duration = Field("1h", description="How long an answer is replayed.")
    max_entries: PositiveInt = Field(10_000, description="Beyond this, the least recently used answers go.")


def _inline_secret(hint: str) -> Any:
    """A field that exists only to refuse a secret written into the file, with what to write instead."""
    def refuse(value: Any) -> None:
        if value is not None:
            raise ValueError(f"is a secret: it never goes in llmops.yaml, where plans, state and rendered files would "
                             f"carry it; {hint}")
        return None
    return Annotated[Any, AfterValidator(refuse), Field(None, description=f"Refused: {hint}")]


InlineUrl = _inline_secret("set it in an environment variable and write `url_env: NAME`")
InlinePassword = _inline_secret("set it in an environment variable and write `password_env: NAME`")
InlineDsn = _inline_secret("set it in an environment variable and write `env: NAME`, or in a file and write "
                            "`file: PATH`")


class RdsStore(Strict):
    """aws: an RDS PostgreSQL instance for the store, created with the target's instances."""

    instance_class: str = Field("db.t4g.micro", description="The RDS instance class.")
    storage_gb: Annotated[int, Field(ge=20, le=65536)] = 20
    password_env: str = Field(description="Environment variable holding the master password (read at apply; "
                              "it reaches the instances through SSM, never the plan or state).")


class GatewayStore(Strict):
    """One PostgreSQL database every gateway replica shares for spend, rate limits, alerts, feedback and the cache.

    Without it each gateway keeps a SQLite file of its own."""

    kind: Literal["postgres"] = "postgres"
    env: str | None = Field(None, description="Environment variable holding the DSN (postgresql://...), read by "
                            "each gateway when it starts.")
    file: str | None = Field(None, description="File holding the DSN, relative to the config (local target).")
    rds: RdsStore | None = Field(None, description="aws: create the database with the target; `env` then names "
                                 "nothing, the DSN is built from the instance's endpoint.")
    pool_size: Annotated[int, Field(ge=1, le=100)] = Field(4, description="Connections each gateway keeps open.")
    dsn: InlineDsn = None

    @model_validator(mode="after")
    def _one_source(self) -> "GatewayStore":
        if sum(source is not None for source in (self.env, self.file, self.rds)) != 1:
            raise ValueError("give exactly one of `env` (a variable holding the DSN), `file` (a file holding it) "
                             "or `rds` (aws: create the database)")
        return self


class Gateway(Strict):
    """The OpenAI-compatible endpoint in front of every model: guardrails, keys, rate limits, budgets, metrics."""

    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="Local target: the gateway's port; a free one, kept across applies, when omitted.")
    keys: list[GatewayKey] = Field(default_factory=list,
                                   description="Keys clients must send; when empty, no key is required.")
    max_request_bytes: PositiveInt = Field(1_048_576, description="Larger request bodies are refused (413).")
    upstream_timeout: Duration = Field("120s", description="A model slower than this to answer gets a 504.")
    cache: Cache | None = Field(None, description="A response cache; none when omitted.")
    teams: list[Team] = Field(default_factory=list, description="Teams that keys belong to (`keys[].team`), with "
                              "the budget each one's spend counts against.")
    feedback: Feedback = Field(default_factory=Feedback, description="How answers are rated (on by default: "
                               "thumbs, for 7 days).")
    store: GatewayStore | None = Field(None, description="A database every gateway replica shares; a SQLite file "
                                       "per gateway when omitted.")
    replicas: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="Gateway processes (local) or pods (kubernetes); default 2 with a `store`, else 1.")
    store_failure: Literal["closed", "open"] = Field(
        "closed", description="When the store is lost while serving: `closed` refuses requests with 503; `open` "
        "serves them on this gateway's last known totals and meters to a local spool, replayed when the store "
        "returns.")

    @model_validator(mode="after")
    def _shared(self) -> "Gateway":
        if self.store is None and (self.replicas or 1) > 1:
            raise ValueError("replicas above 1 need a `store` they share: with a SQLite file each, budgets and rate "
                             "limits would hold per replica, not in total")
        return self

    @property
    def replica_count(self) -> int:
        return self.replicas or (2 if self.store is not None else 1)


# --- monitoring -----------------------------------------------------------------------------------------------

AlertKind = Literal["slo_page", "slo_ticket", "budget", "down", "errors", "guardrails", "feedback"]
ALERT_KINDS: tuple[str, ...] = typing.get_args(AlertKind)




class PrometheusSettings(Strict):
    run: bool = Field(False, description="Local target: run a real Prometheus process, planned like a model server.")
    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(None, description="A free port, kept, when omitted.")
    retention: Duration = "15d"
    scrape_interval: Duration = "15s"
    evaluation_interval: Duration = "15s"


class AlertmanagerSettings(Strict):
    run: bool = Field(False, description="Local target: run a real Alertmanager routing to `receivers`.")
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class WebhookReceiver(Strict):
    url_env: str = Field(description="Environment variable holding the webhook URL.")
    url: InlineUrl = None


class SlackReceiver(WebhookReceiver):
    channel: str | None = None


class EmailReceiver(Strict):
    to: str
    smarthost: Annotated[str, StringConstraints(pattern=r"^[^:\s]+:[0-9]+$")] = Field(
        description="HOST:PORT of the SMTP server.")
    sender: str | None = Field(None, description="From address; alertmanager@HOSTNAME when omitted.")
    username: str | None = None
    password_env: str | None = Field(None, description="Environment variable holding the SMTP password.")
    password: InlinePassword = None


class Receiver(Strict):
    name: Name
    webhook: WebhookReceiver | None = None
    slack: SlackReceiver | None = None
    email: EmailReceiver | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Receiver":
        if sum(kind is not None for kind in (self.webhook, self.slack, self.email)) != 1:
            raise ValueError("give exactly one of webhook, slack or email")
        return self


class AlertRoute(Strict):
    alerts: list[AlertKind] = Field(min_length=1, description="Which kinds of alert go to this receiver.")
    to: Name = Field(description="A receiver's name.")


class Monitoring(Strict):
    """Rules, alerts and dashboards generated from the SLOs and budgets; where they run and who they page."""

    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    dashboards: bool = Field(True, description="A Grafana dashboard per environment.")
    down_for: Duration = Field("2m", description="How long a gateway or model must be down before it pages.")
    receivers: list[Receiver] = Field(default_factory=list)
    routes: list[AlertRoute] = Field(default_factory=list)


# --- the document ------------------------------------------------------------------------------------------------


class Config(Strict):
    """An llmops.yaml document."""

    model_config = ConfigDict(extra="forbid", title="llmops.yaml")

    version: Literal[1]
    project: Name
    environment: Name = Field("default", description="One state per (project, environment).")
    targets: dict[Name, Target] = Field(default_factory=dict)
    models: list[Model] = Field(default_factory=list)
    prompts: list[Prompt] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    budgets: list[Budget] = Field(default_factory=list)
    slos: list[Slo] = Field(default_factory=list)
    evals: list[Eval] = Field(default_factory=list)
    rollouts: list[Rollout] = Field(default_factory=list)
    gateway: Gateway | None = Field(None, description="Gateway settings; a gateway with defaults runs when omitted.")
    monitoring: Monitoring | None = Field(None, description="Monitoring settings; rules are generated either way.")


# The named-list sections and the address prefix of their entries in plans and state.
SECTIONS: dict[str, str] = {
    "models": "model",
    "prompts": "prompt",
    "guardrails": "guardrail",
    "budgets": "budget",
    "slos": "slo",
    "evals": "eval",
    "rollouts": "rollout",
}
