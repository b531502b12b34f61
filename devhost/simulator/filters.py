"""Azure content-filter annotations: what an unflagged prompt and completion look like."""

from __future__ import annotations

from typing import Any

_SAFE = {"filtered": False, "severity": "safe"}

#: `prompt_filter_results[].content_filter_results` for a clean prompt.
SAFE_PROMPT: dict[str, Any] = {
    "hate": _SAFE,
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
#: `choices[].content_filter_results` for clean completion text.
SAFE_COMPLETION: dict[str, Any] = {
    "hate": _SAFE,
    "protected_material_code": {"filtered": False, "detected": False},
    "protected_material_text": {"filtered": False, "detected": False},
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}


def prompt_filter_results(prompts: int = 1) -> list[dict[str, Any]]:
    return [{"prompt_index": i, "content_filter_results": SAFE_PROMPT} for i in range(prompts)]


def blocked_prompt() -> dict[str, Any]:
    return {**SAFE_PROMPT, "violence": {"filtered": True, "severity": "medium"}}


def jailbreak_prompt() -> dict[str, Any]:
    """A prompt the jailbreak shield blocked (block mode): detected and filtered."""
    return {**SAFE_PROMPT, "jailbreak": {"filtered": True, "detected": True}}


def blocked_completion() -> dict[str, Any]:
    return {**SAFE_COMPLETION, "violence": {"filtered": True, "severity": "medium"}}
