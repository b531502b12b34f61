"""The dated Azure OpenAI price book: loading it and finding the entry in effect for a model, type and time."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

DEFAULT_BOOK_PATH = Path(__file__).with_name("prices.json")

#: Version suffixes AOAI appends to model names: -2024-08-06 (dated) and -0125 (gpt-35-turbo style).
_VERSION_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass(frozen=True, slots=True)
class PriceBook:
    version: str
    models: Mapping[str, Mapping[str, Any]]
    deployment_types: frozenset[str]

    def resolve_model(self, model: str | None) -> str | None:
        """The price-book row for a model name: exact match, else the name without its version suffix."""
        if not model:
            return None
        name = model.strip().lower()
        if name in self.models:
            return name
        base = _VERSION_SUFFIX.sub("", name)
        return base if base in self.models else None

    def entry(self, model_key: str, deployment_type: str, at: date) -> Mapping[str, Any] | None:
        """The entry for this row and type with the latest effective_from on or before `at`."""
        candidates = [
            e
            for e in self.models[model_key]["prices"]
            if e["type"] == deployment_type and date.fromisoformat(e["effective_from"]) <= at
        ]
        return max(candidates, key=lambda e: e["effective_from"], default=None)

    def kind(self, model_key: str) -> str:
        return self.models[model_key]["kind"]


def parse_book(data: Mapping[str, Any]) -> PriceBook:
    """Checks the shape the cost function relies on, so a bad edit fails at load time, not per record."""
    try:
        version = data["version"]
        models = data["models"]
        types = frozenset(data["deployment_types"])
        for name, row in models.items():
            if name != name.lower():
                raise ValueError(f"model {name!r} must be lower case")
            if row["kind"] not in {"tokens", "embeddings", "images"}:
                raise ValueError(f"model {name!r}: unknown kind {row['kind']!r}")
            for entry in row["prices"]:
                date.fromisoformat(entry["effective_from"])
                if entry["type"] not in types:
                    raise ValueError(f"model {name!r}: unknown type {entry['type']!r}")
                if not entry.get("source"):
                    raise ValueError(f"model {name!r}: entry without source")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid price book: {exc}") from None
    return PriceBook(version=version, models=models, deployment_types=types)


def load_book(path: Path | str = DEFAULT_BOOK_PATH) -> PriceBook:
    return parse_book(json.loads(Path(path).read_text(encoding="utf-8")))


def record_date(timestamp: str) -> date:
    """The UTC calendar date of an ISO-8601 record timestamp (a trailing Z accepted)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).date()
