"""Per-audience settings: one value per APIM product, overridable per subscription.

A table maps an APIM product name, or `subscription:<id>`, to a value; the subscription's entry
wins over its product's, and an audience in neither gets the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Resolved(Generic[T]):
    value: T
    rule: str


def resolve(table: Mapping[str, T], *, product: str | None, subscription_id: str | None, default: T) -> Resolved[T]:
    """The value for one audience and the key that chose it (`subscription:<id>`, the product, or "default")."""
    if subscription_id is not None:
        key = f"subscription:{subscription_id}"
        if key in table:
            return Resolved(table[key], key)
    if product is not None and product in table:
        return Resolved(table[product], product)
    return Resolved(default, "default")
