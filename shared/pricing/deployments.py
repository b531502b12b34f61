"""DEPLOYMENT_MODELS: which model and deployment type each AOAI deployment name stands for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import parse_json

DEFAULT_DEPLOYMENT_TYPE = "global"


@dataclass(frozen=True, slots=True)
class DeploymentModel:
    model: str | None
    type: str = DEFAULT_DEPLOYMENT_TYPE


def parse_deployment_models(raw: str | None) -> dict[str, DeploymentModel]:
    """Parses `{"<deployment>": {"model": "...", "type": "global|data_zone|regional|provisioned"}}`.

    AOAI reports generic model names for some deployments (and none on errors), so the platform
    team says what each deployment is; the type decides the price row and cannot be seen on the wire.
    """
    entries = parse_json("DEPLOYMENT_MODELS", raw)
    return {name: DeploymentModel(model=e.model, type=e.type) for name, e in entries.items()}


def resolve_deployment(
    record: Mapping[str, object], deployment_models: Mapping[str, DeploymentModel]
) -> tuple[str | None, str]:
    """(model, deployment type) for a record: the mapping wins, else the record's model and type global."""
    mapped = deployment_models.get(str(record.get("deployment") or ""))
    if mapped is not None:
        return (mapped.model or _str(record.get("model"))), mapped.type
    return _str(record.get("model")), DEFAULT_DEPLOYMENT_TYPE


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
