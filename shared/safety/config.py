"""Content safety settings: whether and how to analyse, thresholds, and in-stream enforcement per product.

Everything is read once from app settings (`shared.settings.Settings`) into a frozen `SafetyConfig`;
per-product values (thresholds, mode, failure policy) fall back to the `default` entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shared.errors import ConfigurationError
from shared.safety.windows import check_window
from shared.settings import Settings, parse_json

CATEGORIES: tuple[str, ...] = ("Hate", "SelfHarm", "Sexual", "Violence")
#: Severity 4 is "medium" on both output scales.
DEFAULT_THRESHOLD = 4

#: The declared defaults (shared/settings.py), so no default is written twice.
_DEFAULTS = Settings()

Mode = Literal["monitor", "enforce"]
FailMode = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How one product's streams are treated by `proxy.streams.enforcement.enforce`."""

    mode: Mode = "monitor"
    thresholds: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, DEFAULT_THRESHOLD))
    #: Characters held back and analysed per window (each window also repeats `overlap_chars`).
    window_chars: int = _DEFAULTS.content_safety_stream_window_chars
    overlap_chars: int = _DEFAULTS.content_safety_stream_window_overlap
    #: "closed": an analyser failure ends the stream with content_filter; "open": the text is released.
    fail: FailMode = "open"
    blocklists: tuple[str, ...] = ()
    #: Windows analysed at the same time while the stream keeps being read.
    max_concurrency: int = _DEFAULTS.content_safety_max_concurrency


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    endpoint: str | None = None
    #: Content Safety key when not using managed identity (resolved from the settings; never logged).
    key: str | None = field(default=None, repr=False)
    analyze_prompt: bool = False
    prompt_shields: bool = False
    #: product -> category -> severity at or above which the record is flagged; "default" applies to all.
    thresholds: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    blocklists: tuple[str, ...] = ()
    halt_on_blocklist_hit: bool = False
    output_type: str = _DEFAULTS.content_safety_output_type
    window_chars: int = _DEFAULTS.content_safety_window_chars
    window_overlap: int = _DEFAULTS.content_safety_window_overlap
    stream_window_chars: int = _DEFAULTS.content_safety_stream_window_chars
    stream_window_overlap: int = _DEFAULTS.content_safety_stream_window_overlap
    #: product -> "monitor" | "enforce"
    modes: Mapping[str, str] = field(default_factory=dict)
    #: product -> "open" | "closed"
    fail_modes: Mapping[str, str] = field(default_factory=dict)
    max_retries: int = _DEFAULTS.content_safety_max_retries
    retry_backoff_seconds: float = _DEFAULTS.content_safety_retry_backoff_seconds
    max_retry_after_seconds: float = _DEFAULTS.content_safety_max_retry_after_seconds
    timeout_seconds: float = _DEFAULTS.content_safety_timeout_seconds
    max_concurrency: int = _DEFAULTS.content_safety_max_concurrency

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)

    def thresholds_for(self, product: str | None) -> dict[str, int]:
        merged = dict.fromkeys(CATEGORIES, DEFAULT_THRESHOLD)
        merged.update(self.thresholds.get("default", {}))
        if product:
            merged.update(self.thresholds.get(product, {}))
        return merged

    def mode_for(self, product: str | None) -> Mode:
        mode = (product and self.modes.get(product)) or self.modes.get("default") or "monitor"
        return "enforce" if mode == "enforce" else "monitor"

    def stream_policy(self, product: str | None) -> StreamPolicy:
        fail = (product and self.fail_modes.get(product)) or self.fail_modes.get("default") or "open"
        return StreamPolicy(
            mode=self.mode_for(product) if self.enabled else "monitor",
            thresholds=self.thresholds_for(product),
            window_chars=self.stream_window_chars,
            overlap_chars=self.stream_window_overlap,
            fail="closed" if fail == "closed" else "open",
            blocklists=self.blocklists,
            max_concurrency=self.max_concurrency,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SafetyConfig:
        key = settings.content_safety_key
        if settings.content_safety_key_setting:
            key = settings.extra.get(settings.content_safety_key_setting) or None
            if key is None:
                raise ConfigurationError(
                    f"CONTENT_SAFETY_KEY_SETTING names {settings.content_safety_key_setting!r}, which is not set"
                )
        for name, size, overlap in (
            ("CONTENT_SAFETY_WINDOW", settings.content_safety_window_chars, settings.content_safety_window_overlap),
            (
                "CONTENT_SAFETY_STREAM_WINDOW",
                settings.content_safety_stream_window_chars,
                settings.content_safety_stream_window_overlap,
            ),
        ):
            try:
                check_window(size, overlap)
            except ValueError as exc:
                raise ConfigurationError(f"{name}_CHARS / {name}_OVERLAP: {exc}") from None
        return cls(
            endpoint=settings.content_safety_endpoint,
            key=key,
            analyze_prompt=settings.content_safety_analyze_prompt,
            prompt_shields=settings.content_safety_prompt_shields,
            thresholds=parse_json("CONTENT_SAFETY_THRESHOLDS", settings.content_safety_thresholds_json),
            blocklists=tuple(b.strip() for b in settings.content_safety_blocklists.split(",") if b.strip()),
            halt_on_blocklist_hit=settings.content_safety_halt_on_blocklist_hit,
            output_type=settings.content_safety_output_type,
            window_chars=settings.content_safety_window_chars,
            window_overlap=settings.content_safety_window_overlap,
            stream_window_chars=settings.content_safety_stream_window_chars,
            stream_window_overlap=settings.content_safety_stream_window_overlap,
            modes=parse_json("CONTENT_SAFETY_MODES", settings.content_safety_modes_json),
            fail_modes=parse_json("CONTENT_SAFETY_FAIL_MODES", settings.content_safety_fail_modes_json),
            max_retries=settings.content_safety_max_retries,
            retry_backoff_seconds=settings.content_safety_retry_backoff_seconds,
            max_retry_after_seconds=settings.content_safety_max_retry_after_seconds,
            timeout_seconds=settings.content_safety_timeout_seconds,
            max_concurrency=settings.content_safety_max_concurrency,
        )
