"""The deployments a simulator serves, as an AOAI account has them: model, version, capabilities, limits.

AOAI answers a mistake in the request line before it looks at the body: a missing api-version is a
404 "Resource not found", an api-version it does not know is a 400 "API version not supported", a
deployment name the account does not have is a 404 `DeploymentNotFound`. The simulator answers the
same, so a typo fails locally as it would in Azure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .models import model_for

#: Dated data-plane api-versions AOAI accepts (GA and preview), from the API version lifecycle page.
API_VERSIONS: frozenset[str] = frozenset(
    {
        "2022-12-01",
        "2023-05-15",
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2023-06-01-preview",
        "2023-07-01-preview",
        "2023-08-01-preview",
        "2023-09-01-preview",
        "2023-12-01-preview",
        "2024-02-15-preview",
        "2024-03-01-preview",
        "2024-04-01-preview",
        "2024-05-01-preview",
        "2024-07-01-preview",
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
#: The v1 surface needs no api-version; when one is sent it is one of these.
V1_API_VERSIONS: frozenset[str] = frozenset({"preview", "latest", "v1"})
#: The first dated api-version whose chat and completions accept `stream_options`.
STREAM_OPTIONS_SINCE = "2024-09-01-preview"

_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})(-preview)?$")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model deployment of the simulated account."""

    #: The model name, e.g. "gpt-4o"; `model` in answers is this plus a dated `version`.
    model: str
    #: The model version: dated versions are reported ("gpt-4o-2024-08-06"), others ("0125", "1") are not.
    version: str = ""
    #: Whether streamed answers can carry usage (`stream_options.include_usage`); False answers 400.
    stream_usage: bool = True
    #: Enforced requests per minute (429 past it); None: advertised from the config, never enforced.
    requests_per_minute: int | None = None
    #: Enforced tokens per minute (429 once spent); None: advertised from the config, never enforced.
    tokens_per_minute: int | None = None

    @property
    def reported_model(self) -> str:
        """What AOAI puts in a response's `model`."""
        return f"{self.model}-{self.version}" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.version) else self.model


#: Served when a config names no deployments: the names of the usual models, so `make run` and the
#: examples work, while a typo gets AOAI's 404.
DEFAULT_DEPLOYMENTS: Mapping[str, Deployment] = {
    "gpt-4o": Deployment("gpt-4o", "2024-08-06"),
    "gpt-4o-mini": Deployment("gpt-4o-mini", "2024-07-18"),
    "gpt-4.1": Deployment("gpt-4.1", "2025-04-14"),
    "gpt-4.1-mini": Deployment("gpt-4.1-mini", "2025-04-14"),
    "gpt-4.1-nano": Deployment("gpt-4.1-nano", "2025-04-14"),
    "gpt-5-mini": Deployment("gpt-5-mini", "2025-08-07"),
    "o1": Deployment("o1", "2024-12-17"),
    "o1-mini": Deployment("o1-mini", "2024-09-12"),
    "o3-mini": Deployment("o3-mini", "2025-01-31"),
    "o4-mini": Deployment("o4-mini", "2025-04-16"),
    "gpt-35-turbo": Deployment("gpt-35-turbo", "0125"),
    "gpt-35-turbo-instruct": Deployment("gpt-35-turbo-instruct", "0914"),
    "text-embedding-3-small": Deployment("text-embedding-3-small", "1"),
    "text-embedding-3-large": Deployment("text-embedding-3-large", "1"),
    "text-embedding-ada-002": Deployment("text-embedding-ada-002", "2"),
    "dall-e-3": Deployment("dall-e-3", "3.0"),
    "gpt-image-1": Deployment("gpt-image-1"),
    "whisper": Deployment("whisper", "001"),
    "tts": Deployment("tts-1"),
    "tts-1": Deployment("tts-1"),
    "gpt-4o-mini-transcribe": Deployment("gpt-4o-mini-transcribe", "2025-03-20"),
    "gpt-4o-transcribe": Deployment("gpt-4o-transcribe", "2025-03-20"),
    "gpt-4o-mini-tts": Deployment("gpt-4o-mini-tts", "2025-03-20"),
    "model-router": Deployment("model-router", "2025-05-19"),
}


def resolve(deployments: Mapping[str, Deployment] | Sequence[str] | None) -> dict[str, Deployment] | None:
    """The served deployments by name; None serves any name (load tests that vary names).

    A bare name is a catalogue entry when there is one, else a deployment whose model is guessed from
    the name (`models.model_for`)."""
    if deployments is None:
        return None
    if isinstance(deployments, Mapping):
        return dict(deployments)
    return {name: DEFAULT_DEPLOYMENTS.get(name) or Deployment(model_for(name, {})) for name in deployments}


def api_version_problem(version: str | None, *, v1: bool) -> tuple[int, str, str] | None:
    """(status, error.code, error.message) AOAI answers for this api-version, or None when it is fine."""
    if v1:
        if not version or version in V1_API_VERSIONS:
            return None
        return 400, "BadRequest", "API version not supported"
    if not version:
        return 404, "404", "Resource not found"
    if version not in API_VERSIONS:
        return 400, "BadRequest", "API version not supported"
    return None


def version_at_least(version: str | None, minimum: str) -> bool:
    """Dated api-version order: the date first, then GA after the previews of the same date."""
    if not version:
        return False
    a, b = _DATED.match(version), _DATED.match(minimum)
    if a is None or b is None:
        return False
    return (a.group(1), a.group(2) is None) >= (b.group(1), b.group(2) is None)
