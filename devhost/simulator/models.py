"""Which model version a deployment reports and which tiktoken encoding counts its tokens."""

from __future__ import annotations

from collections.abc import Mapping

import tiktoken
from tiktoken.model import encoding_name_for_model

from shared.normalize.encodings import SHIPPED, get_encoding

# Checked in order: the first fragment found in the deployment name picks the model version.
_GUESSES: tuple[tuple[str, str], ...] = (
    ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    ("gpt-4.1", "gpt-4.1-2025-04-14"),
    ("gpt-5-mini", "gpt-5-mini-2025-08-07"),
    ("gpt-5", "gpt-5-2025-08-07"),
    ("o4-mini", "o4-mini-2025-04-16"),
    ("o3-mini", "o3-mini-2025-01-31"),
    ("o3", "o3-2025-04-16"),
    ("o1", "o1-2024-12-17"),
    ("instruct", "gpt-35-turbo-instruct"),
    ("gpt-35", "gpt-35-turbo"),
    ("gpt-3.5", "gpt-35-turbo"),
    ("gpt-4-turbo", "gpt-4-turbo-2024-04-09"),
    ("gpt-4-32k", "gpt-4-32k"),
    ("gpt-4", "gpt-4"),
    ("embedding-3-large", "text-embedding-3-large"),
    ("embedding-3-small", "text-embedding-3-small"),
    ("embedding", "text-embedding-ada-002"),
    ("ada", "text-embedding-ada-002"),
    ("dall-e", "dall-e-3"),
    ("gpt-image", "gpt-image-1"),
    ("whisper", "whisper"),
    ("tts", "tts-1"),
)
DEFAULT_MODEL = "gpt-4o-2024-08-06"
_FALLBACK_ENCODING = "o200k_base"


def model_for(deployment: str, overrides: Mapping[str, str]) -> str:
    """The model version AOAI would put in `model` for this deployment."""
    if deployment in overrides:
        return overrides[deployment]
    name = deployment.lower()
    for fragment, model in _GUESSES:
        if fragment in name:
            return model
    return DEFAULT_MODEL


def encoding_for(model: str) -> tiktoken.Encoding:
    """tiktoken's encoding for the model (Azure spells gpt-3.5 as gpt-35); o200k_base when unknown."""
    try:
        name = encoding_name_for_model(model.replace("gpt-35", "gpt-3.5"))
    except KeyError:
        name = _FALLBACK_ENCODING
    if name not in SHIPPED:
        name = _FALLBACK_ENCODING
    return get_encoding(name)


def embedding_dimensions(model: str) -> int:
    return 3072 if "3-large" in model else 1536
