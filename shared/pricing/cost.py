"""The USD cost of one usage record from the price book, or None with the reason it cannot be known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.pricing.book import PriceBook, record_date
from shared.pricing.deployments import DeploymentModel, resolve_deployment

PER_MILLION = 1_000_000

#: AOAI's defaults when a dall-e-3 request names no size or quality (images API reference).
DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_IMAGE_QUALITY = "standard"

CostResult = tuple[float | None, str | None, str]


def cost_of(
    record: Mapping[str, Any],
    book: PriceBook,
    deployment_models: Mapping[str, DeploymentModel] | None = None,
) -> CostResult:
    """(cost USD | None, reason | None, price_version) for a usage record.

        Tokens: uncached prompt tokens at the input price, cached_tokens at the cached-input price,
        completion_tokens at the output price. Reasoning tokens are already inside completion_tokens in
        AOAI usage, so they are billed there once and never added again. Embeddings bill input only;
        dall-e-3 bills per image. A record with no usage at all costs 0 (except on provisioned deployments,
    which say so). A price that is not in the book gives None and a reason, never a guess.
    """
    version = book.version
    if record.get("billable") is False:
        return 0.0, "not billable", version
    model, dtype = resolve_deployment(record, deployment_models or {})
    if "provisioned" in dtype:
        return None, "provisioned", version
    if not _billable(record):
        # Nothing was used (throttled, rejected, failed before the model ran): zero whatever the model.
        return 0.0, None, version
    if dtype not in book.deployment_types:
        return None, f"unknown_deployment_type:{dtype}", version
    key = book.resolve_model(model)
    if key is None:
        return None, f"unknown_model:{model or 'none'}", version
    entry = book.entry(key, dtype, record_date(record["timestamp"]))
    if entry is None:
        return None, f"no_price_in_effect:{key}/{dtype}", version
    kind = book.kind(key)
    if kind == "images":
        return _image_cost(record, entry, version)
    if kind == "embeddings":
        return _round(int(record.get("prompt_tokens") or 0) * entry["input"] / PER_MILLION), None, version
    return _token_cost(record, entry, key, version)


def _billable(record: Mapping[str, Any]) -> bool:
    return any(int(record.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "image_count"))


def _token_cost(record: Mapping[str, Any], entry: Mapping[str, Any], key: str, version: str) -> CostResult:
    prompt = int(record.get("prompt_tokens") or 0)
    cached = int(record.get("cached_tokens") or 0)
    completion = int(record.get("completion_tokens") or 0)
    if cached and entry.get("cached_input") is None:
        return None, f"no_cached_price:{key}", version
    image_in, cached_image_in = _image_input_tokens(record)
    if (image_in or cached_image_in) and entry.get("input_image") is None:
        return None, f"no_image_input_price:{key}", version
    if cached_image_in and entry.get("cached_input_image") is None:
        return None, f"no_cached_price:{key}", version
    text_uncached = prompt - cached - image_in
    text_cached = cached - cached_image_in
    if text_uncached < 0 or text_cached < 0:
        return None, "inconsistent_usage", version
    usd = (
        text_uncached * entry["input"]
        + text_cached * (entry.get("cached_input") or 0.0)
        + image_in * (entry.get("input_image") or 0.0)
        + cached_image_in * (entry.get("cached_input_image") or 0.0)
        + completion * entry["output"]
    ) / PER_MILLION
    return _round(usd), None, version


def _image_input_tokens(record: Mapping[str, Any]) -> tuple[int, int]:
    """Uncached and cached image input tokens (gpt-image-1 edits) from usage_details, as AOAI reports them."""
    details = record.get("usage_details") or {}
    inp = details.get("input_tokens_details") or {}
    image = int(inp.get("image_tokens") or 0)
    cached_image = int((inp.get("cached_tokens_details") or {}).get("image_tokens") or 0)
    return max(image - cached_image, 0), cached_image


def _image_cost(record: Mapping[str, Any], entry: Mapping[str, Any], version: str) -> CostResult:
    details = record.get("usage_details") or {}
    size = str(details.get("size") or DEFAULT_IMAGE_SIZE)
    quality = str(details.get("quality") or DEFAULT_IMAGE_QUALITY)
    price = entry["per_image"].get(f"{quality}/{size}")
    if price is None:
        return None, f"no_image_price:{quality}/{size}", version
    return _round(int(record.get("image_count") or 0) * price), None, version


def _round(usd: float) -> float:
    """Micro-dollar precision: enough for one request, and sums stay exact enough for chargeback."""
    return round(usd, 9)
