"""The engine's record of what providers create (Resource) and of what a plan would do to it (ResourceChange).

Providers build and return these; state stores Resources; plans carry ResourceChanges. The engine's own markers
(a deposed object, drift, where a model answers, what a gateway fronts) are typed fields, never keys of `attrs`,
which belongs to the provider alone.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

Action = Literal["create", "update", "replace", "delete"]
# Which of a model's versions a resource serves: the one that serves now, or the new one a rollout runs beside it.
# A canary has its stable twin's address; (address, version) names one resource, as (address, deposed) does.
Version = Literal["stable", "canary"]

# State written before these markers were fields kept them in `attrs`; reading such a file must lose nothing.
_MARKERS_ONCE_IN_ATTRS = {"deposed": "deposed", "drift": "drift", "endpoint": "endpoint", "serves": "serves",
                          "url": "endpoint"}


class Resource(BaseModel):
    """A thing a provider created for a model: a process, a cloud resource."""

    address: str = Field(description="TYPE.NAME[INDEX], e.g. local_process.assistant[0]")
    type: str
    owner: str = Field(description="The object it serves, e.g. model.assistant")
    provider: str
    target: str
    spec: dict[str, Any] = Field(description="What the config asks of it; a different spec means replacing it.")
    attrs: dict[str, Any] = Field(default_factory=dict, description="What exists, in the provider's terms: pid, "
                                  "port, log, cloud ids...")
    endpoint: str | None = Field(None, description="The OpenAI base URL where this resource answers, when clients "
                                 "on this machine can reach it (the SLO load test goes there).")
    serves: list[str] = Field(default_factory=list, description="A gateway: the models it fronts; clients of those "
                              "models use its endpoint instead of the replicas'.")
    deposed: bool = Field(False, description="The old object of a replace, kept until its replacement is ready.")
    drift: list[str] = Field(default_factory=list, description="Attributes a refresh found changed outside llmctl.")
    version: Version = Field("stable", description="canary: the new version of its model that a rollout runs "
                             "beside the stable one until it is promoted or aborted.")

    @model_validator(mode="before")
    @classmethod
    def _markers_out_of_attrs(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("attrs"), dict):
            attrs = dict(data["attrs"])
            moved = {field: attrs.pop(key) for key, field in _MARKERS_ONCE_IN_ATTRS.items() if key in attrs}
            if moved:
                data = {**data, "attrs": attrs, **{k: v for k, v in moved.items() if k not in data}}
        return data

    @property
    def model(self) -> str:
        """The name of the object it serves (`assistant` for owner `model.assistant`)."""
        return self.owner.split(".", 1)[1]

    @property
    def label(self) -> str:
        """The address, with the version when it is a rollout's new one: what progress lines and reports show."""
        return labelled(self.address, self.version)


def labelled(address: str, version: Version) -> str:
    return address if version == "stable" else f"{address} ({version})"


class ResourceChange(BaseModel):
    """A provider resource (a process, a cloud resource) that will change."""

    address: str = Field(description="TYPE.NAME[INDEX], e.g. local_process.assistant[0]")
    owner: str = Field(description="The object it serves, e.g. model.assistant")
    provider: str
    target: str
    action: Action
    reason: str | None = None
    deposed: bool = Field(False, description="The old object of a replace that an interrupted apply left behind.")
    version: Version = "stable"
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
