"""Cost and content safety for a normalized usage record: the steps after `shared.normalize.usage.normalize`.

The parser handler and `python -m parser replay` both call `Enricher.enrich`, so a replay re-costs
historic exchanges with the current price book (and re-checks them when Content Safety is on).
`normalize` stays pure; everything that needs settings, the price book or the network is here.
Nothing here may lose or hold up a record: cost failures give `cost: null` with a reason, and
content-safety failures give `safety.status: "error"`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.exchange import Exchange
from shared.normalize import record_schema
from shared.normalize.record import UsageRecord
from shared.normalize.texts import completion_text, prompt_text
from shared.pricing.book import PriceBook, load_book
from shared.pricing.cost import cost_of
from shared.pricing.deployments import DeploymentModel, parse_deployment_models, resolve_deployment
from shared.safety.analysis import analyze, merge_aoai_verdicts, merge_enforcement
from shared.safety.client import ContentSafety
from shared.safety.config import SafetyConfig
from shared.settings import Settings

log = logging.getLogger(__name__)

SKIPPED: Mapping[str, Any] = {"status": "skipped"}
_MAX_ERROR_CHARS = 500


@functools.cache
def default_book() -> PriceBook:
    """The price book shipped in shared/pricing/prices.json, read once per process."""
    return load_book()


@dataclass(frozen=True, slots=True)
class Enricher:
    """What the enrichment needs from settings, read once: the price book, DEPLOYMENT_MODELS and
    the content-safety configuration. The Content Safety client is an I/O port (`Ports.safety`)
    and is passed per call, so tests and replay can use the same enricher with or without it."""

    book: PriceBook = field(default_factory=default_book)
    deployment_models: Mapping[str, DeploymentModel] = field(default_factory=dict)
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    @classmethod
    def from_settings(cls, settings: Settings, book: PriceBook | None = None) -> Enricher:
        """Raises ConfigurationError naming the setting when DEPLOYMENT_MODELS or CONTENT_SAFETY_* is invalid."""
        return cls(
            book=book or default_book(),
            deployment_models=parse_deployment_models(settings.deployment_models_json),
            safety=SafetyConfig.from_settings(settings),
        )

    def analyses(self, client: ContentSafety | None) -> bool:
        """Whether `enrich` calls Content Safety at all (the handler skips known duplicates first then)."""
        return client is not None and self.safety.enabled

    async def enrich(
        self,
        record: UsageRecord,
        details: Mapping[str, Any],
        exchange: Exchange,
        client: ContentSafety | None = None,
    ) -> None:
        """Fill `deployment_type`, `cost`, `cost_reason`, `price_version` and `safety` in `record`. Never raises.

        The cost fields have their schema types by construction; the safety object folds in what the
        exchange carried (the proxy's enforcement outcome), so it is checked against its schema and
        replaced by an `error` verdict when it does not match (never dropping the record).
        """
        self.price(record, details)
        safety = await self.assess(record, details, exchange, client)
        if safety != SKIPPED:
            problems = record_schema.field_errors("safety", safety)
            if problems:
                safety = _error("safety verdict failed schema validation: " + "; ".join(problems))
        record["safety"] = safety

    # --- cost ------------------------------------------------------------------------------------

    def price(self, record: UsageRecord, details: Mapping[str, Any]) -> None:
        """The cost fields, from the book in effect at the record's timestamp. Never raises."""
        try:
            model, deployment_type = resolve_deployment(record, self.deployment_models)
            record["deployment_type"] = deployment_type
            if record.get("api") == "images.generations":
                self._image_options(record, details, model)
            cost, reason, version = cost_of(record, self.book, self.deployment_models)
        except Exception as exc:  # a malformed record (e.g. an unreadable timestamp) is not a lost record
            log.warning("parser: could not cost %s: %s: %s", record.get("request_id"), type(exc).__name__, exc)
            cost, reason, version = None, _clip(f"cost_error:{type(exc).__name__}: {exc}"), self.book.version
        record["cost"], record["cost_reason"], record["price_version"] = cost, reason, version
        record["cost_avoided"] = self._cost_avoided(record)

    def _cost_avoided(self, record: UsageRecord) -> float | None:
        """A cache hit's saving: the stored answer's usage priced as a live call at the record's time."""
        cache = record.get("cache")
        avoided = cache.get("tokens_avoided") if isinstance(cache, Mapping) and cache.get("status") == "hit" else None
        if not isinstance(avoided, Mapping):
            return None
        try:
            live = {**record, **avoided, "billable": True, "usage_source": "service"}
            cost, _, _ = cost_of(live, self.book, self.deployment_models)
        except Exception:  # an unpriceable saving is unknown, never a lost record
            return None
        return cost

    def _image_options(self, record: UsageRecord, details: Mapping[str, Any], model: str | None) -> None:
        """dall-e-3 is priced per image by quality and size, which only the request says: copy them
        into `usage_details` (where `cost_of` reads them) for models the book prices per image."""
        key = self.book.resolve_model(model)
        if key is None or self.book.kind(key) != "images":
            return
        request = details.get("request")
        if not isinstance(request, Mapping):
            return
        options = {k: request[k] for k in ("size", "quality") if isinstance(request.get(k), str) and request[k]}
        if options:
            record["usage_details"] = {**(record.get("usage_details") or {}), **options}

    # --- content safety --------------------------------------------------------------------------

    async def assess(
        self,
        record: Mapping[str, Any],
        details: Mapping[str, Any],
        exchange: Exchange,
        client: ContentSafety | None,
    ) -> dict[str, Any]:
        """The record's `safety`: Content Safety's verdict, AOAI's own filter verdict and the proxy's
        in-stream enforcement outcome, folded together. Never raises."""
        verdict = await self._analyse(record, details, exchange, client)
        verdict = merge_aoai_verdicts(verdict, record.get("content_filter"))
        if isinstance(exchange.enforcement, Mapping):
            verdict = merge_enforcement(verdict, exchange.enforcement)
        return verdict

    async def _analyse(
        self,
        record: Mapping[str, Any],
        details: Mapping[str, Any],
        exchange: Exchange,
        client: ContentSafety | None,
    ) -> dict[str, Any]:
        if not self.analyses(client) or not _reached_the_model(record, exchange):
            return dict(SKIPPED)
        if record.get("capture_level") in ("metadata", "none"):
            return dict(SKIPPED)  # no text was kept to analyse (docs/privacy.md)
        deadline = analysis_deadline(self.safety)
        try:
            api = str(record.get("api") or "other")
            return await asyncio.wait_for(
                analyze(
                    prompt_text(api, details.get("request")),
                    completion_text(api, details.get("response")),
                    product=record.get("product"),
                    config=self.safety,
                    client=client,
                ),
                deadline,
            )
        except TimeoutError:
            return _error(f"Content Safety analysis did not finish within {deadline:g} s")
        except Exception as exc:  # `analyze` does not raise; a defect still must not lose the record
            log.exception("parser: content-safety analysis failed for %s", record.get("request_id"))
            return _error(f"{type(exc).__name__}: {exc}")


def analysis_deadline(config: SafetyConfig) -> float:
    """How long one exchange's analysis may take before the record is written with `error`: a
    window's worst case (every try timing out, every backoff or Retry-After at its cap), twice,
    since windows queue behind CONTENT_SAFETY_MAX_CONCURRENCY. Only a hung analyser reaches it."""
    tries = config.max_retries + 1
    waits = config.max_retries * max(config.max_retry_after_seconds, config.retry_backoff_seconds * 8)
    return 2 * (tries * config.timeout_seconds + waits)


def _reached_the_model(record: Mapping[str, Any], exchange: Exchange) -> bool:
    """Only text AOAI answered with a success, or a 400 (its content filter blocked the prompt), is
    analysed: gateway errors, auth failures, throttling and 5xx never reached the model, and every
    Content Safety call is billed."""
    if exchange.gateway_error:
        return False
    if isinstance(exchange.cache, Mapping) and exchange.cache.get("status") == "hit":
        return False  # a stored answer, analysed when it was live
    status = record.get("status_code")
    return isinstance(status, int) and (200 <= status < 300 or status == 400)


def _error(reason: str) -> dict[str, Any]:
    return {"status": "error", "flagged_by": [], "error": _clip(reason)}


def _clip(text: str) -> str:
    return text[:_MAX_ERROR_CHARS]
