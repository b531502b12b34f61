"""The worst case of a request, before it is sent: prompt tokens counted locally, plus the most output
the request allows, priced with the price book. Pure; the proxy reserves this much."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.budgets.config import UNITS_PER_USD, Budget
from shared.normalize.tokens import TokenCounter, encoding_name
from shared.pricing.book import PriceBook
from shared.pricing.deployments import DEFAULT_DEPLOYMENT_TYPE, DeploymentModel

#: The local count of a prompt can differ from the service's by a few tokens (tool and image
#: framing): reserve 5 % and 16 tokens more, so a settled charge stays within its reservation.
PROMPT_MARGIN_PERCENT = 5
PROMPT_MARGIN_TOKENS = 16
_UNITS_PER_PRICE = UNITS_PER_USD // 1_000_000  # prices are per million tokens

#: Where each API puts its output limit (the first one set wins).
_OUTPUT_LIMITS: Mapping[str, tuple[str, ...]] = {
    "chat.completions": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


@dataclass(frozen=True, slots=True)
class Worst:
    """At most this many prompt and output tokens."""

    prompt_tokens: int
    output_tokens: int
    #: Images a generation may return (priced per image).
    images: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def worst_case(api: str, body: Any, deployment: str | None, default_max_tokens: int, model: str | None = None) -> Worst:
    """Prompt tokens (with a margin) and the largest output `body` allows (`default_max_tokens` when
    it sets none), times the number of choices asked for. Embeddings have no output."""
    body = body if isinstance(body, Mapping) else {}
    name, _ = encoding_name(model, deployment, body.get("model") if isinstance(body.get("model"), str) else None)
    counter = TokenCounter(name, model=model or deployment)
    if api == "chat.completions":
        prompt = counter.chat_prompt(body.get("messages"), body.get("tools"), body.get("functions"))
    elif api == "responses":
        prompt = counter.responses_input(body)
    elif api == "completions":
        prompt = counter.texts_or_tokens(body.get("prompt"))
    elif api == "embeddings":
        prompt = counter.texts_or_tokens(body.get("input"))
    else:
        prompt = 0
    prompt = prompt + math.ceil(prompt * PROMPT_MARGIN_PERCENT / 100) + PROMPT_MARGIN_TOKENS
    if api == "embeddings":
        return Worst(prompt, 0)
    if api == "images.generations":
        return Worst(0, 0, _positive(body.get("n")) or 1)
    output = next((body[k] for k in _OUTPUT_LIMITS.get(api, ()) if _positive(body.get(k))), default_max_tokens)
    choices = max(_positive(body.get("n")) or 1, _positive(body.get("best_of")) or 1)
    return Worst(prompt, int(output) * choices)


def units(budget: Budget, worst: Worst, price: Mapping[str, Any] | None) -> int | None:
    """The worst case in the budget's unit; None when a dollar budget cannot price the deployment."""
    if budget.unit == "tokens":
        return worst.tokens
    if price is None:
        return None
    if "per_image" in price:  # the dearest size and quality: the request may ask for any
        return math.ceil(worst.images * max(price["per_image"].values()) * UNITS_PER_USD)
    total = worst.prompt_tokens * price["input"] + worst.output_tokens * price.get("output", 0.0)
    return math.ceil(total * _UNITS_PER_PRICE)


def price_for(
    book: PriceBook, deployment_models: Mapping[str, DeploymentModel], deployment: str | None, day: date
) -> tuple[str | None, Mapping[str, Any] | None]:
    """(model, price entry) for a deployment, as the parser will price it: DEPLOYMENT_MODELS, else
    the deployment's own name; None when the book has no price for it."""
    mapped = deployment_models.get(deployment or "")
    model = (mapped.model if mapped else None) or deployment
    dtype = mapped.type if mapped else DEFAULT_DEPLOYMENT_TYPE
    key = book.resolve_model(model)
    if key is None or book.kind(key) not in ("tokens", "embeddings", "images"):
        return model, None
    return model, book.entry(key, dtype, day)


def record_units(budget: Budget, record: Mapping[str, Any]) -> int | None:
    """What a usage record charges the budget; None when its cost is unknown (no price)."""
    if budget.unit == "tokens":
        return int(record.get("prompt_tokens") or 0) + int(record.get("completion_tokens") or 0)
    cost = record.get("cost")
    if cost is None:
        return None
    return round(float(cost) * UNITS_PER_USD)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
