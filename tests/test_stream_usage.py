"""Stream usage injection: when the proxy asks for usage, and how the usage chunk is held back."""

import orjson
import pytest

from proxy.streams.usage import UsageChunkFilter, inject, is_usage_chunk, should_inject
from shared.normalize.apis import classify
from shared.normalize.sse import decode_all

CHAT = classify("/openai/deployments/gpt-4o/chat/completions")
V1_CHAT = classify("/openai/v1/chat/completions")
EMB = classify("/openai/deployments/e/embeddings")
COMPLETIONS = classify("/openai/deployments/instruct/completions")
V1_COMPLETIONS = classify("/openai/v1/completions")

CONTENT = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hi"},"index":0}],"id":"c1","usage":null}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"id":"c1","usage":null}\n\n'
)
USAGE = b'data: {"choices":[],"id":"c1","usage":{"completion_tokens":1,"prompt_tokens":5,"total_tokens":6}}\n\n'
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("route", "query", "body", "expected"),
    [
        (CHAT, {"api-version": "2024-10-21"}, {"stream": True}, True),
        (CHAT, {"api-version": "2024-09-01-preview"}, {"stream": True}, True),
        (CHAT, {"api-version": "2024-08-01-preview"}, {"stream": True}, False),
        (CHAT, {}, {"stream": True}, False),
        (V1_CHAT, {}, {"stream": True, "model": "gpt-4o"}, True),
        (CHAT, {"api-version": "2024-10-21"}, {"stream": False}, False),
        (CHAT, {"api-version": "2024-10-21"}, {}, False),
        (CHAT, {"api-version": "2024-10-21"}, {"stream": True, "stream_options": {"include_usage": True}}, False),
        (CHAT, {"api-version": "2024-10-21"}, {"stream": True, "stream_options": {"include_usage": False}}, True),
        (CHAT, {"api-version": "2024-10-21"}, {"stream": True, "stream_options": "bad"}, False),
        (EMB, {"api-version": "2024-10-21"}, {"stream": True}, False),
        (CHAT, {"api-version": "2024-10-21"}, None, False),
        (COMPLETIONS, {"api-version": "2024-10-21"}, {"stream": True, "prompt": "x"}, True),
        (COMPLETIONS, {"api-version": "2024-06-01"}, {"stream": True, "prompt": "x"}, False),
        (COMPLETIONS, {"api-version": "2024-10-21"}, {"prompt": "x"}, False),
        (
            COMPLETIONS,
            {"api-version": "2024-10-21"},
            {"stream": True, "stream_options": {"include_usage": True}},
            False,
        ),
        (V1_COMPLETIONS, {}, {"stream": True, "model": "gpt-35-turbo-instruct", "prompt": "x"}, True),
    ],
)
def test_should_inject(route, query, body, expected):
    assert should_inject(route, query, body) is expected


def test_inject_keeps_other_stream_options_and_fields():
    body = {"messages": [{"role": "user", "content": "é"}], "stream": True, "stream_options": {"x": 1}}
    out = orjson.loads(inject(body))
    assert out["stream_options"] == {"x": 1, "include_usage": True}
    assert out["messages"] == body["messages"] and out["stream"] is True
    assert body["stream_options"] == {"x": 1}  # the caller's dict is untouched


def test_usage_chunk_detection():
    events = decode_all(CONTENT + USAGE + DONE)
    assert [is_usage_chunk(e) for e in events] == [False, False, False, True, False]


def test_text_mentioning_usage_is_not_the_usage_chunk():
    tricky = b'data: {"choices":[{"delta":{"content":"\\"choices\\":[] \\"usage\\":{"},"index":0}],"usage":null}\n\n'
    assert not any(is_usage_chunk(e) for e in decode_all(tricky))


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_filter_removes_only_the_usage_chunk_at_any_chunking(size):
    stream = CONTENT + USAGE + DONE
    f = UsageChunkFilter()
    out = b"".join(f.decode(stream[i : i + size]) for i in range(0, len(stream), size)) + f.flush()
    assert out == CONTENT + DONE
    assert f.removed == 1


def test_filter_forwards_each_complete_event_at_once():
    f = UsageChunkFilter()
    first = CONTENT.split(b"\n\n")[0] + b"\n\n"
    assert f.decode(first[:10]) == b""
    assert f.decode(first[10:]) == first


def test_filter_passes_a_stream_without_usage_untouched_and_flushes_a_partial_tail():
    f = UsageChunkFilter()
    partial = b'data: {"choices":[{"delta":{"content":"cut'
    assert f.decode(CONTENT) + f.decode(partial) + f.flush() == CONTENT + partial
    assert f.removed == 0


# A legacy completions stream as AOAI sends it with include_usage (the simulator's shape).
COMPLETION_CONTENT = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"logprobs":null,"text":"Once"}],"id":"cmpl-1",'
    b'"object":"text_completion","usage":null}\n\n'
    b'data: {"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"text":""}],"id":"cmpl-1",'
    b'"object":"text_completion","usage":null}\n\n'
)
COMPLETION_USAGE = (
    b'data: {"choices":[],"id":"cmpl-1","object":"text_completion",'
    b'"usage":{"completion_tokens":1,"prompt_tokens":2,"total_tokens":3}}\n\n'
)


@pytest.mark.parametrize("size", [1, 5, 10_000])
def test_filter_removes_the_completions_usage_chunk(size):
    stream = COMPLETION_CONTENT + COMPLETION_USAGE + DONE
    f = UsageChunkFilter()
    out = b"".join(f.decode(stream[i : i + size]) for i in range(0, len(stream), size)) + f.flush()
    assert out == COMPLETION_CONTENT + DONE and f.removed == 1


def _decoded_reference(pieces: list[bytes]) -> tuple[list[bytes], int]:
    """What the filter forwards when every piece goes through the SSE decoder (the exact reading)."""
    from shared.normalize.sse import SSEDecoder

    decoder, out, removed = SSEDecoder(), [], 0

    def keep(events) -> bytes:
        nonlocal removed
        kept = [e.raw for e in events if not is_usage_chunk(e)]
        removed += len(events) - len(kept)
        return b"".join(kept)

    for piece in pieces:
        out.append(keep(decoder.decode(piece)))
    out.append(keep(decoder.flush()))
    return out, removed


def test_the_byte_fast_path_forwards_what_the_decoder_would_at_every_step():
    """Seeded random streams (usage chunks anywhere, CRLF and CR line ends, a BOM, comments, blank
    lines, a tail without its blank line) cut at random: piece for piece the same bytes out, and
    the same usage chunks removed, as decoding every event."""
    import random

    usage = b'data: {"choices":[],"usage":{"total_tokens":3}}'
    blocks = [
        b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}',
        b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9 \\"choices\\": []"}}]}',
        usage,
        b'data: {"choices": [ ],"usage": {"x":1}}',
        b": keep-alive",
        b"event: x\ndata: 1\ndata: 2",
        b'data: {"choices":[],"usage":null}',
        b"data: [DONE]",
        b'\xef\xbb\xbfdata: {"choices":[],"usage":{"total_tokens":3}}',  # a BOM mid-stream is no BOM
    ]
    rnd = random.Random(5)
    for _ in range(800):
        end = rnd.choice([b"\n", b"\n", b"\n", b"\r\n", b"\r"])
        chosen = [rnd.choice(blocks) for _ in range(rnd.randint(1, 8))]
        stream = b"".join(block.replace(b"\n", end) + end + end for block in chosen)
        if rnd.random() < 0.1:
            stream = b"\xef\xbb\xbf" + stream
        if rnd.random() < 0.2:
            stream += b"\n"
        if rnd.random() < 0.2:
            stream += usage  # the stream ends before the blank line
        cuts = sorted(rnd.sample(range(1, len(stream)), min(len(stream) - 1, rnd.randint(0, 6))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        fast = UsageChunkFilter()
        out = [fast.decode(piece) for piece in pieces] + [fast.flush()]
        assert (out, fast.removed) == _decoded_reference(pieces), (stream, cuts)
