"""DEPLOYMENT_MODELS: which model and deployment type each AOAI deployment name stands for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import ConfigurationError

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
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"DEPLOYMENT_MODELS is not valid JSON: {exc.msg}") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError("DEPLOYMENT_MODELS must be a JSON object keyed by deployment name")
    result: dict[str, DeploymentModel] = {}
    for name, spec in data.items():
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"DEPLOYMENT_MODELS[{name!r}] must be an object with model and type")
        model = spec.get("model")
        dtype = spec.get("type", DEFAULT_DEPLOYMENT_TYPE)
        if (model is not None and not isinstance(model, str)) or not isinstance(dtype, str):
            raise ConfigurationError(f"DEPLOYMENT_MODELS[{name!r}]: model and type must be strings")
        result[name] = DeploymentModel(model=model, type=dtype.strip().lower())
    return result


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
