"""The shapes of the JSON-valued settings, as pydantic models: what each entry may hold.

A setting declared `JsonText(SHAPE)` in shared/settings.py is checked against its shape when the
settings are read, and its consumer reads it with `parse_json(name, text)`: one description for the
check and the parse. Entries are strict: an unknown key is an error (with the closest known one).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return value


HttpUrlText = Annotated[str, AfterValidator(_http_url)]


class Entry(BaseModel):
    """An object inside a JSON setting: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------ GATEWAY_BACKENDS
class ManagedIdentityAuth(Entry):
    type: Literal["managed_identity"]
    #: A user-assigned identity's client id, and a tenant other than the identity's home tenant.
    client_id: str | None = None
    tenant_id: str | None = None
    scope: str | None = None


class ApiKeyAuth(Entry):
    type: Literal["api_key"]
    #: The app setting that holds the key (a Key Vault reference resolves like any setting).
    setting: NonEmpty | None = None
    value: NonEmpty | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeyAuth:
        if not (self.setting or self.value):
            raise ValueError("api_key auth needs 'setting' (name of the app setting) or 'value'")
        return self


class BackendEntry(Entry):
    name: NonEmpty
    endpoint: HttpUrlText
    auth: Annotated[ManagedIdentityAuth | ApiKeyAuth, Field(discriminator="type")] = ManagedIdentityAuth(
        type="managed_identity"
    )
    deployments: list[NonEmpty] = []
    #: Public deployment name -> the account's own deployment name.
    deployment_map: dict[str, NonEmpty] = {}
    #: Lower first; within a priority, traffic is shared by weight.
    priority: Annotated[StrictInt, Field(ge=0)] = 1
    weight: Annotated[StrictInt, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _serves_something(self) -> BackendEntry:
        if not self.deployments and not self.deployment_map:
            raise ValueError("serves no deployment: list 'deployments' (or [\"*\"]) or a 'deployment_map'")
        return self


Backends = list[BackendEntry]


# --------------------------------------------------------------------------- LOCAL_SUBSCRIPTIONS
class SubscriptionEntry(Entry):
    id: NonEmpty
    name: str | None = None
    product: str | None = None


#: api-key value -> identity.
Subscriptions = dict[NonEmpty, SubscriptionEntry]


# ----------------------------------------------------------------------------- DEPLOYMENT_MODELS
class DeploymentModelEntry(Entry):
    model: str | None = None
    #: global, data_zone, regional or provisioned: decides the price row, not visible on the wire.
    type: Annotated[str, AfterValidator(lambda v: v.strip().lower())] = "global"


DeploymentModels = dict[str, DeploymentModelEntry]


# ------------------------------------------------------------------------- CONTENT_SAFETY_* JSON
Category = Literal["Hate", "SelfHarm", "Sexual", "Violence"]
Severity = Annotated[StrictInt, Field(ge=0, le=7)]
#: product (or "default") -> category -> severity at or above which the record is flagged.
Thresholds = dict[str, dict[Category, Severity]]
#: product (or "default") -> what enforcement does.
Modes = dict[str, Literal["monitor", "enforce"]]
FailModes = dict[str, Literal["open", "closed"]]
