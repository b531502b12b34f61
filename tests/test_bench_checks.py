"""The benchmark's completeness checks catch fast wrong answers (bench/checks.py)."""

import json

from bench.checks import check_chat, check_stream, expected_from_chat, expected_from_stream
from bench.report import added, percentile

BIG = "東京 café 🚀 " * 700  # > 8 KiB of multibyte text


def stream(pieces, *, done=True, finish="stop", prompt_frame=True):
    events = [{"id": "", "choices": [], "prompt_filter_results": []}] if prompt_frame else []
    events.append({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    events += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    body = "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


PIECES = ["Hello", " wörld", BIG, " 👋🏽", "."]
EXPECTED = expected_from_stream(stream(PIECES))


def test_reference_stream_passes_and_peer_style_reencoding_passes():
    assert EXPECTED.content_events == 5 and EXPECTED.large_piece == BIG
    assert check_stream(200, stream(PIECES), EXPECTED) is None
    assert check_stream(200, stream(PIECES, prompt_frame=False), EXPECTED) is None


def test_incomplete_or_altered_streams_are_errors():
    assert check_stream(200, stream(PIECES, done=False), EXPECTED) == "no final [DONE]"
    assert "content events" in check_stream(200, stream(PIECES[:-1]), EXPECTED)
    split = ["Hello", " wörld", BIG[:4000], BIG[4000:], " 👋🏽", "."]
    assert check_stream(200, stream(split[:2] + [BIG[:4000] + BIG[4000:-1]] + split[4:]), EXPECTED) is not None
    assert "large chunk" in check_stream(200, stream(["Hello", " wörld" + BIG[:10], BIG[10:], " 👋🏽", "."]), EXPECTED)
    assert check_stream(200, stream(["Hello", " world", BIG, " 👋🏽", "."]), EXPECTED) == "content text differs"
    assert check_stream(200, stream(PIECES, finish="length"), EXPECTED).startswith("finish reasons")
    assert check_stream(502, b"", EXPECTED) == "status 502"
    assert check_stream(200, stream(PIECES)[:-40] + b"\n\ndata: [DONE]\n\n", EXPECTED) is not None


def test_chat_check_compares_content():
    body = json.dumps({"choices": [{"message": {"content": "Grüß dich 🚀"}, "finish_reason": "stop"}]}).encode()
    expected = expected_from_chat(body)
    assert check_chat(200, body, expected) is None
    assert check_chat(200, body.replace(b"dich", b"euch"), expected) == "content differs"
    assert check_chat(200, b'{"choices": []}', expected).startswith("malformed")
    assert check_chat(429, body, expected) == "status 429"


def test_percentiles_are_measured_values_and_added_is_per_percentile():
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 95, 99)] == [50, 95, 99]
    assert percentile([], 50) is None
    arm = {"ttfb_ms": {"p50": 3.0, "p99": 9.0}, "total_ms": {"p50": 5.0, "p99": None}}
    direct = {"ttfb_ms": {"p50": 1.0, "p99": 4.0}, "total_ms": {"p50": 2.0, "p99": 3.0}}
    assert added(arm, direct) == {"ttfb_ms": {"p50": 2.0, "p99": 5.0}, "total_ms": {"p50": 3.0, "p99": None}}
