"""The usage record as a type: one key per field of `schema/usage-record.schema.json`.

Records are plain dicts on the wire (App Insights dimensions, Cosmos items, JSON lines), so the type
is a `TypedDict`: code that reads or writes a field by a misspelled name fails type checking, and
`tests/test_record_type.py` fails when this and the schema disagree (a field, whether it is
required, its type, an enum's values).
"""

from typing import Any, Literal, Required, TypedDict

Api = Literal[
    "chat.completions",
    "completions",
    "embeddings",
    "images.generations",
    "audio.transcriptions",
    "audio.translations",
    "audio.speech",
    "responses",
    "other",
]
Operation = Literal["create", "retrieve", "list", "delete", "cancel", "update", "content", "other"]
UsageSource = Literal["service", "estimated", "none", "cache"]
Outcome = Literal["complete", "upstream_broken", "client_disconnected", "blocked", "timeout"]


class ContentFilter(TypedDict):
    """AOAI's own filter verdicts, most severe per category, for each side."""

    prompt: dict[str, Any]
    completion: dict[str, Any]
    filtered: bool


class CacheNote(TypedDict):
    """What the exact response cache did for the request (shared/response_cache.py)."""

    status: Literal["hit", "miss", "bypass", "store"]
    stored: bool | None
    reason: str | None
    age_seconds: float | None
    tokens_avoided: dict[str, int] | None


class ShieldVerdict(TypedDict):
    detected: bool
    filtered: bool


class PromptShields(TypedDict):
    """Prompt Shields' verdicts from AOAI's own content filter (None: not reported)."""

    jailbreak: ShieldVerdict | None
    indirect_attack: ShieldVerdict | None


class UsageRecord(TypedDict, total=False):
    """One request, as platform teams charge back on it (docs/usage-record.md says what each field means)."""

    request_id: Required[str]
    timestamp: Required[str]
    subscription_id: Required[str]
    subscription_name: Required[str]
    product: Required[str]
    user_id: Required[str | None]
    client_ip: Required[str | None]
    user_agent: Required[str | None]
    method: str
    path: str
    api: Required[Api]
    operation: Required[Operation]
    billable: Required[bool]
    deployment: Required[str | None]
    model: Required[str | None]
    api_version: Required[str | None]
    backend: Required[str | None]
    attempts: Required[int]
    region: Required[str | None]
    stream: Required[bool]
    outcome: Required[Outcome]
    status_code: Required[int]
    error_code: Required[str | None]
    latency_ms: Required[float | None]
    ttft_ms: Required[float | None]
    gateway_overhead_ms: float | None
    trace_id: str | None
    prompt_tokens: Required[int]
    completion_tokens: Required[int]
    total_tokens: Required[int]
    cached_tokens: Required[int]
    reasoning_tokens: Required[int]
    usage_details: dict[str, Any] | None
    usage_source: Required[UsageSource]
    estimation_notes: list[str]
    usage_injected: bool
    finish_reasons: Required[list[str | None]]
    tool_call_count: Required[int]
    image_count: Required[int]
    content_filter: Required[ContentFilter]
    safety: dict[str, Any]
    client_disconnected: Required[bool]
    parse_error: Required[str | None]
    deployment_type: str | None
    cost: float | None
    cost_reason: str | None
    price_version: str | None
    audience_rule: str | None
    capture_level: Literal["full", "redacted", "metadata", "none"]
    budget: dict[str, Any]
    cache: CacheNote | None
    cost_avoided: float | None
    prompt_shields: PromptShields
    prompt_blocked_reason: str | None
