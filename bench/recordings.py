"""Real service answers with their reported usage, for measuring the parser's estimates.

Each entry is a request body and the answer the service returned, without its `usage`, plus the
usage it reported. Sources: the OpenAI cookbook ("How to count tokens with tiktoken": published
prompt counts), a published gpt-4o tool-call answer, and the VCR cassettes that pydantic-ai
records against the live OpenAI API (tests/models/cassettes/test_openai/, MIT licence):
`test_multiple_agent_tool_calls.yaml` (gpt-4o-mini-2024-07-18), `test_openai_native_output.yaml`
(gpt-4o-2024-08-06, `response_format` json_schema) and `test_max_completion_tokens[o3-mini].yaml`
(o3-mini-2025-01-31: 64 hidden reasoning tokens). OpenAI and Azure OpenAI serve the same model
versions with the same tokenizer and chat format, so the counts carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    #: plain | tool-definition | tool-call | tool-result | structured-output | reasoning
    kinds: tuple[str, ...]
    source: str
    deployment: str
    body: dict[str, Any]
    answer: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int


def _answer(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
    }


def _call(name: str, arguments: str, call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


_CAPITAL_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_capital",
            "description": "Get the capital of a country.",
            "strict": True,
            "parameters": {
                "additionalProperties": False,
                "type": "object",
                "required": ["country"],
                "properties": {"country": {"description": "The country name.", "type": "string"}},
            },
        },
    }
]
_CAPITAL_TURN = [
    {"content": "What is the capital of France?", "role": "user"},
    {
        "content": None,
        "role": "assistant",
        "tool_calls": [_call("get_capital", '{"country":"France"}', "pyd_ai_5c28ff78075941bd9a9fd2f43fe84ae1")],
    },
    {"content": "Paris", "role": "tool", "tool_call_id": "pyd_ai_5c28ff78075941bd9a9fd2f43fe84ae1"},
    {"content": "The capital of France is Paris.", "role": "assistant"},
    {"content": "What is the capital of England?", "role": "user"},
]
_ENGLAND = _call("get_capital", '{"country":"England"}', "call_NihFwNUckQ2eDoE0a9OQaO5l")
_CITY_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "CityLocation",
        "description": "A city and its country.",
        "strict": True,
        "schema": {
            "additionalProperties": False,
            "type": "object",
            "required": ["city", "country"],
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        },
    },
}
_COUNTRY_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_user_country",
            "description": "",
            "parameters": {"additionalProperties": False, "properties": {}, "type": "object"},
        },
    }
]
_CITY_QUESTION = [{"content": "What is the largest city in the user country?", "role": "user"}]
_PYDANTIC = "pydantic-ai VCR cassette (live OpenAI API), tests/models/cassettes/test_openai/"

RECORDINGS: tuple[Recording, ...] = (
    Recording(
        "tool call after a tool round, gpt-4o-mini",
        ("tool-call", "tool-result", "tool-definition"),
        _PYDANTIC + "test_multiple_agent_tool_calls.yaml (request 3)",
        "gpt-4o-mini",
        {"messages": _CAPITAL_TURN, "tools": _CAPITAL_TOOL, "tool_choice": "auto"},
        _answer("gpt-4o-mini-2024-07-18", {"content": None, "tool_calls": [_ENGLAND]}, "tool_calls"),
        104,
        15,
    ),
    Recording(
        "answer after two tool rounds, gpt-4o-mini",
        ("tool-result", "tool-definition"),
        _PYDANTIC + "test_multiple_agent_tool_calls.yaml (request 4)",
        "gpt-4o-mini",
        {
            "messages": [
                *_CAPITAL_TURN,
                {"content": None, "role": "assistant", "tool_calls": [_ENGLAND]},
                {"content": "London", "role": "tool", "tool_call_id": _ENGLAND["id"]},
            ],
            "tools": _CAPITAL_TOOL,
            "tool_choice": "auto",
        },
        _answer("gpt-4o-mini-2024-07-18", {"content": "The capital of England is London."}, "stop"),
        129,
        8,
    ),
    Recording(
        "json_schema format with a tool call, gpt-4o",
        ("structured-output", "tool-call", "tool-definition"),
        _PYDANTIC + "test_openai_native_output.yaml (request 1)",
        "gpt-4o",
        {"messages": _CITY_QUESTION, "response_format": _CITY_FORMAT, "tools": _COUNTRY_TOOL, "tool_choice": "auto"},
        _answer(
            "gpt-4o-2024-08-06",
            {"content": None, "tool_calls": [_call("get_user_country", "{}", "call_tkOuQT3mf2fpSYORlhv2Ov0R")]},
            "tool_calls",
        ),
        79,
        11,
    ),
    Recording(
        "json_schema answer after a tool round, gpt-4o",
        ("structured-output", "tool-result", "tool-definition"),
        _PYDANTIC + "test_openai_native_output.yaml (request 2)",
        "gpt-4o",
        {
            "messages": [
                *_CITY_QUESTION,
                {
                    "content": None,
                    "role": "assistant",
                    "tool_calls": [_call("get_user_country", "{}", "call_tkOuQT3mf2fpSYORlhv2Ov0R")],
                },
                {"content": "Mexico", "role": "tool", "tool_call_id": "call_tkOuQT3mf2fpSYORlhv2Ov0R"},
            ],
            "response_format": _CITY_FORMAT,
            "tools": _COUNTRY_TOOL,
            "tool_choice": "auto",
        },
        _answer("gpt-4o-2024-08-06", {"content": '{"city":"Mexico City","country":"Mexico"}'}, "stop"),
        100,
        15,
    ),
    Recording(
        "reasoning model answer, o3-mini (64 reasoning tokens)",
        ("reasoning",),
        _PYDANTIC + "test_max_completion_tokens[o3-mini].yaml",
        "o3-mini",
        {"messages": [{"content": "hello", "role": "user"}], "max_completion_tokens": 100},
        _answer("o3-mini-2025-01-31", {"content": "Hello there! How can I help you today?"}, "stop"),
        7,
        87,
    ),
)
