"""The dated Azure OpenAI price book: loading it and finding the entry in effect for a model, type and time."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

DEFAULT_BOOK_PATH = Path(__file__).with_name("prices.json")

#: Version suffixes AOAI appends to model names: -2024-08-06 (dated) and -0125 (gpt-35-turbo style).
VERSION_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


KINDS = frozenset({"tokens", "embeddings", "images", "audio_minutes", "characters"})


@dataclass(frozen=True, slots=True)
class PriceBook:
    version: str
    models: Mapping[str, Mapping[str, Any]]
    deployment_types: frozenset[str]
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: Global/Data Zone Batch: the factor on the standard price for models without batch meters.
    batch_discount: Mapping[str, Any] | None = None

    def resolve_model(self, model: str | None) -> str | None:
        """The price-book row for a model name: exact match, else the name without its version suffix."""
        return self.match(model)[0]

    def match(self, model: str | None) -> tuple[str | None, str | None]:
        """(row, "exact" | "family") for a model name; (None, None) when the book has no row for it.

        An unknown version of a known model (`gpt-4o-2099-01-01`) is priced as its family and says so."""
        if not model:
            return None, None
        name = model.strip().lower()
        name = self.aliases.get(name, name)
        if name in self.models:
            return name, "exact"
        base = VERSION_SUFFIX.sub("", name)
        base = self.aliases.get(base, base)
        return (base, "family") if base in self.models else (None, None)

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
            if row["kind"] not in KINDS:
                raise ValueError(f"model {name!r}: unknown kind {row['kind']!r}")
            for entry in row["prices"]:
                date.fromisoformat(entry["effective_from"])
                if entry["type"] not in types:
                    raise ValueError(f"model {name!r}: unknown type {entry['type']!r}")
                if not entry.get("source"):
                    raise ValueError(f"model {name!r}: entry without source")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid price book: {exc}") from None
    aliases = data.get("aliases") or {}
    discount = data.get("batch_discount")
    if discount is not None and not 0 < float(discount.get("factor", 0)) <= 1:
        raise ConfigurationError("invalid price book: batch_discount.factor must be in (0, 1]")
    return PriceBook(version=version, models=models, deployment_types=types, aliases=aliases, batch_discount=discount)


def load_book(path: Path | str = DEFAULT_BOOK_PATH) -> PriceBook:
    return parse_book(json.loads(Path(path).read_text(encoding="utf-8")))


def record_date(timestamp: str) -> date:
    """The UTC calendar date of an ISO-8601 record timestamp (a trailing Z accepted)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).date()
