"""The USD cost of one usage record from the price book, or None with the reason it cannot be known."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.pricing.book import VERSION_SUFFIX, PriceBook, record_date
from shared.pricing.deployments import DeploymentModel, resolve_deployment

PER_MILLION = 1_000_000

#: AOAI's defaults when a dall-e-3 request names no size or quality (images API reference).
DEFAULT_IMAGE_SIZE = "1024x1024"
DEFAULT_IMAGE_QUALITY = "standard"

CostResult = tuple[float | None, str | None, str]
#: A line of a batch job runs on the batch deployment type of its deployment's type.
BATCH_TYPES = {"global": "global_batch", "data_zone": "data_zone_batch"}


def served_model(record: Mapping[str, Any], configured: str | None, book: PriceBook) -> str | None:
    """The model to price: the configured one (DEPLOYMENT_MODELS, more trustworthy where AOAI reports
    a generic name) when the book prices it, else the one that served (`model` in the answer: a
    model-router deployment answers with the model it routed to)."""
    served = record.get("model")
    served = served if isinstance(served, str) and served else None
    if configured is None or served is None or book.match(configured)[0] is not None:
        return configured or served
    return served


def family(model: str) -> str:
    return VERSION_SUFFIX.sub("", model.strip().lower())


def cost_of(
    record: Mapping[str, Any],
    book: PriceBook,
    deployment_models: Mapping[str, DeploymentModel] | None = None,
) -> CostResult:
    """(cost USD | None, reason | None, price_version) for a usage record (see `priced`)."""
    cost, reason, version, _ = priced(record, book, deployment_models)
    return cost, reason, version


def priced(
    record: Mapping[str, Any],
    book: PriceBook,
    deployment_models: Mapping[str, DeploymentModel] | None = None,
) -> tuple[float | None, str | None, str, str | None]:
    """(cost USD | None, reason | None, price_version, price_match) for a usage record.

    Tokens: uncached prompt tokens at the input price, cached_tokens at the cached-input price
    (zero-rated where the model has no cached price), completion_tokens at the output price, and
    audio tokens (usage_details) at the audio prices. Reasoning tokens are already inside
    completion_tokens in AOAI usage, so they are billed there once. Embeddings bill input only;
    dall-e-3 bills per image; whisper per minute of audio; tts per input character. Not billable
    costs 0 ("not billable"); a record with no usage at all costs 0 (except on provisioned
    deployments, which say so). A price that is not in the book gives None and a reason, never a
    guess: in particular never 0 for audio whose duration or characters are unknown.
    """
    version = book.version
    if record.get("billable") is False:
        return 0.0, "not billable", version, None
    model, dtype = resolve_deployment(record, deployment_models or {})
    model = served_model(record, model, book)
    if record.get("batch_id") and record.get("custom_id") is not None:
        dtype = BATCH_TYPES.get(dtype, dtype)
    if "provisioned" in dtype:
        return None, "provisioned", version, None
    if not _billable(record):
        # Nothing was used (throttled, rejected, failed before the model ran): zero whatever the model.
        return 0.0, None, version, None
    if dtype not in book.deployment_types:
        return None, f"unknown_deployment_type:{dtype}", version, None
    key, match = book.match(model)
    if key is None:
        return None, f"unknown_model:{model or 'none'}", version, None
    at = record_date(record["timestamp"])
    entry = book.entry(key, dtype, at)
    factor = 1.0
    if entry is None and book.batch_discount is not None and dtype in book.batch_discount.get("applies_to", {}):
        entry = book.entry(key, book.batch_discount["applies_to"][dtype], at)
        factor, match = float(book.batch_discount["factor"]), "batch_discount"
    if entry is None:
        return None, f"no_price_in_effect:{key}/{dtype}", version, None
    kind = book.kind(key)
    if kind == "images":
        cost, reason, _ = _image_cost(record, entry, version)
    elif kind == "embeddings":
        cost, reason = _round(int(record.get("prompt_tokens") or 0) * entry["input"] / PER_MILLION), None
    elif kind == "audio_minutes":
        cost, reason = _minutes_cost(record, entry)
    elif kind == "characters":
        cost, reason = _characters_cost(record, entry)
    elif str(record.get("api") or "").startswith("audio.") and not _billable_tokens(record):
        # A token-priced audio model whose answer reported no usage (a text-format transcript, a
        # speech body): the tokens are unknown, so the cost is too, never 0.
        cost, reason = None, f"no_usage_reported:{key}"
    else:
        cost, reason, _ = _token_cost(record, entry, key, version)
    if cost is None:
        return None, reason, version, None
    return _round(cost * factor), reason, version, match


def _minutes_cost(record: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[float | None, str | None]:
    seconds = record.get("audio_seconds")
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return None, "no_audio_duration"
    return _round(seconds / 60 * entry["per_minute"]), None


def _characters_cost(record: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[float | None, str | None]:
    chars = record.get("input_characters")
    if not isinstance(chars, int) or chars <= 0:
        return None, "no_input_characters"
    return _round(chars * entry["per_million_characters"] / PER_MILLION), None


def _billable_tokens(record: Mapping[str, Any]) -> bool:
    return any(int(record.get(k) or 0) for k in ("prompt_tokens", "completion_tokens"))


def _billable(record: Mapping[str, Any]) -> bool:
    used = any(int(record.get(k) or 0) for k in ("prompt_tokens", "completion_tokens", "image_count"))
    # Audio APIs bill on what was sent even when no tokens are reported: a success is never free.
    audio = str(record.get("api") or "").startswith("audio.") and 200 <= int(record.get("status_code") or 0) < 300
    return used or audio or bool(record.get("audio_seconds")) or bool(record.get("input_characters"))


def _token_cost(record: Mapping[str, Any], entry: Mapping[str, Any], key: str, version: str) -> CostResult:
    prompt = int(record.get("prompt_tokens") or 0)
    cached = int(record.get("cached_tokens") or 0)
    completion = int(record.get("completion_tokens") or 0)
    image_in, cached_image_in = _image_input_tokens(record)
    if (image_in or cached_image_in) and entry.get("input_image") is None:
        return None, f"no_image_input_price:{key}", version
    audio_in, cached_audio_in, audio_out = _audio_tokens(record)
    if (audio_in or cached_audio_in) and entry.get("input_audio") is None:
        return None, f"no_audio_price:{key}", version
    if audio_out and entry.get("output_audio") is None:
        return None, f"no_audio_price:{key}", version
    if not completion and audio_out:
        completion = audio_out
    text_uncached = prompt - cached - image_in - audio_in
    text_cached = cached - cached_image_in - cached_audio_in
    text_out = completion - audio_out
    if text_uncached < 0 or text_cached < 0 or text_out < 0:
        return None, "inconsistent_usage", version
    # No cached price: cached tokens are zero-rated (the model has no cache meter to bill them on).
    usd = (
        text_uncached * entry["input"]
        + text_cached * (entry.get("cached_input") or 0.0)
        + image_in * (entry.get("input_image") or 0.0)
        + cached_image_in * (entry.get("cached_input_image") or 0.0)
        + audio_in * (entry.get("input_audio") or 0.0)
        + cached_audio_in * (entry.get("cached_input_audio") or 0.0)
        + text_out * entry["output"]
        + audio_out * (entry.get("output_audio") or 0.0)
    ) / PER_MILLION
    return _round(usd), None, version


def _audio_tokens(record: Mapping[str, Any]) -> tuple[int, int, int]:
    """Uncached and cached audio input tokens and audio output tokens, as AOAI reports them."""
    details = record.get("usage_details") or {}
    inp = details.get("prompt_tokens_details") or details.get("input_tokens_details") or {}
    out = details.get("completion_tokens_details") or details.get("output_tokens_details") or {}
    audio_in = int(inp.get("audio_tokens") or 0)
    cached_audio = int((inp.get("cached_tokens_details") or {}).get("audio_tokens") or 0)
    return max(audio_in - cached_audio, 0), cached_audio, int(out.get("audio_tokens") or 0)


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
