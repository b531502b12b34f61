"""The Content Safety port (`ContentSafety`) and its Azure adapter over `azure-ai-contentsafety`.

`text:analyze` goes through the SDK's async client. Prompt Shields (`text:shieldPrompt`,
api-version 2024-09-01) is not in SDK 1.0.0, so it is sent as a raw request through the same client
pipeline: same credential (managed identity or key), same retry policy, same shared aiohttp session.
Retries: 429 and 5xx (and connection errors), with exponential backoff or the server's Retry-After
(capped), at most `max_retries` times; then `ContentSafetyError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from azure.ai.contentsafety.aio import ContentSafetyClient
from azure.ai.contentsafety.models import AnalyzeTextOptions
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest

from shared.errors import ContentSafetyError
from shared.settings import Settings

if TYPE_CHECKING:
    import aiohttp

    from shared.safety.config import SafetyConfig

#: The declared defaults (shared/settings.py), so no default is written twice.
_DEFAULTS = Settings()
ANALYZE_API_VERSION = "2023-10-01"
SHIELD_API_VERSION = "2024-09-01"


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    """One `text:analyze` answer: severity per category, and the blocklist items that matched."""

    categories: dict[str, int]
    blocklist_hits: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ShieldResult:
    """One `text:shieldPrompt` answer."""

    prompt_attack: bool
    document_attacks: tuple[bool, ...] = ()


class ContentSafety(Protocol):
    async def analyze_text(self, text: str, blocklists: Sequence[str] = ()) -> TextAnalysis: ...

    async def shield_prompt(self, prompt: str, documents: Sequence[str] = ()) -> ShieldResult: ...


class _RetryPolicy(AsyncRetryPolicy):
    """azure-core's retry, adjusted: POST is safe to repeat here (analysis has no side effect), the
    first retry already backs off, and a server's Retry-After is honoured up to a cap."""

    def __init__(self, *, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._method_whitelist = frozenset({"POST"})
        self._max_retry_after = max_retry_after

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        errors = len(settings["history"])
        return min(settings["max_backoff"], settings["backoff"] * 2 ** max(errors - 1, 0))

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self._max_retry_after)


class AzureContentSafety:
    """`ContentSafety` on Azure AI Content Safety. Close it (`await close()`) on shutdown."""

    def __init__(
        self,
        endpoint: str,
        credential: Any,
        *,
        session: aiohttp.ClientSession | None = None,
        output_type: str = _DEFAULTS.content_safety_output_type,
        halt_on_blocklist_hit: bool = False,
        max_retries: int = _DEFAULTS.content_safety_max_retries,
        retry_backoff_seconds: float = _DEFAULTS.content_safety_retry_backoff_seconds,
        max_retry_after_seconds: float = _DEFAULTS.content_safety_max_retry_after_seconds,
        timeout_seconds: float = _DEFAULTS.content_safety_timeout_seconds,
        owns_credential: bool = False,
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._credential = credential
        self._owns_credential = owns_credential
        self._output_type = output_type
        self._halt = halt_on_blocklist_hit
        self._timeout = timeout_seconds
        retry = _RetryPolicy(
            max_retry_after=max_retry_after_seconds,
            retry_total=max_retries,
            retry_status=max_retries,
            retry_connect=max_retries,
            retry_read=max_retries,
            retry_backoff_factor=retry_backoff_seconds,
            retry_backoff_max=max(retry_backoff_seconds * 8, retry_backoff_seconds),
        )
        transport = AioHttpTransport(session=session, session_owner=session is None)
        self._client = ContentSafetyClient(self._endpoint, credential, transport=transport, retry_policy=retry)

    @classmethod
    def from_config(cls, config: SafetyConfig, session: aiohttp.ClientSession | None = None) -> AzureContentSafety:
        """Key when the settings give one, else managed identity (DefaultAzureCredential)."""
        if not config.endpoint:
            raise ValueError("Content Safety is off: CONTENT_SAFETY_ENDPOINT is not set")
        if config.key:
            credential: Any = AzureKeyCredential(config.key)
            owns = False
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential, owns = DefaultAzureCredential(), True
        return cls(
            config.endpoint,
            credential,
            session=session,
            output_type=config.output_type,
            halt_on_blocklist_hit=config.halt_on_blocklist_hit,
            max_retries=config.max_retries,
            retry_backoff_seconds=config.retry_backoff_seconds,
            max_retry_after_seconds=config.max_retry_after_seconds,
            timeout_seconds=config.timeout_seconds,
            owns_credential=owns,
        )

    async def analyze_text(self, text: str, blocklists: Sequence[str] = ()) -> TextAnalysis:
        options = AnalyzeTextOptions(
            text=text,
            blocklist_names=list(blocklists) or None,
            halt_on_blocklist_hit=self._halt if blocklists else None,
            output_type=self._output_type,
        )
        try:
            result = await self._client.analyze_text(
                options, connection_timeout=self._timeout, read_timeout=self._timeout
            )
        except AzureError as exc:
            raise _error("text:analyze", exc) from None
        categories = {str(c.category): int(c.severity or 0) for c in result.categories_analysis or []}
        hits = [
            {
                "blocklistName": m.blocklist_name,
                "blocklistItemId": m.blocklist_item_id,
                "blocklistItemText": m.blocklist_item_text,
            }
            for m in result.blocklists_match or []
        ]
        return TextAnalysis(categories, hits)

    async def shield_prompt(self, prompt: str, documents: Sequence[str] = ()) -> ShieldResult:
        request = HttpRequest(
            "POST",
            f"{self._endpoint}/contentsafety/text:shieldPrompt",
            params={"api-version": SHIELD_API_VERSION},
            json={"userPrompt": prompt, "documents": list(documents)},
        )
        try:
            response = await self._client.send_request(
                request, connection_timeout=self._timeout, read_timeout=self._timeout
            )
            await response.read()
            response.raise_for_status()
            body = response.json()
        except AzureError as exc:
            raise _error("text:shieldPrompt", exc) from None
        except ValueError as exc:
            raise ContentSafetyError(f"Content Safety text:shieldPrompt answered invalid JSON: {exc}") from None
        user = body.get("userPromptAnalysis") or {}
        docs = body.get("documentsAnalysis") or []
        return ShieldResult(
            prompt_attack=bool(user.get("attackDetected")),
            document_attacks=tuple(bool(d.get("attackDetected")) for d in docs if isinstance(d, dict)),
        )

    async def close(self) -> None:
        await self._client.close()
        if self._owns_credential:
            await self._credential.close()


def _error(operation: str, exc: AzureError) -> ContentSafetyError:
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = getattr(exc.error, "code", None) if exc.error else None
        detail = getattr(exc.error, "message", None) if exc.error else None
        text = f"Content Safety {operation} failed: HTTP {status}"
        if code:
            text += f" {code}"
        if detail:
            text += f": {detail}"
        return ContentSafetyError(text[:500], status=status, code=code)
    return ContentSafetyError(f"Content Safety {operation} failed: {type(exc).__name__}: {exc}"[:500])
