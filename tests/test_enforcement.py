"""In-stream enforcement: what the client receives, byte for byte, in monitor and enforce modes."""

import asyncio

import aiohttp
import jsonschema
import orjson
import pytest
from azure.core.credentials import AzureKeyCredential
from openai.types.chat import ChatCompletionChunk
from openai.types.completion import Completion
from openai.types.responses import ResponseIncompleteEvent

from proxy.streams.enforcement import EnforcementOutcome, enforce
from shared.errors import ContentSafetyError
from shared.normalize.sse import decode_all
from shared.safety.analysis import merge_enforcement
from shared.safety.client import AzureContentSafety, TextAnalysis
from shared.safety.config import StreamPolicy
from testing.fakes.content_safety import FakeContentSafety

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
}


def frame(obj) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_events(pieces, *, finish="stop"):
    events = [
        frame(
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}
                ],
            }
        ),
        frame(
            {**CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        ),
    ]
    events += [
        frame({**CHUNK, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces
    ]
    events.append(frame({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    events.append(b"data: [DONE]\n\n")
    return events


def ten_char_pieces(count, trigger_at=None, trigger=("VIOLENCE_", "LEVEL_6 .")):
    pieces = [f"word{i:04d}. " for i in range(count)]  # 10 characters each
    if trigger_at is not None:
        pieces[trigger_at] = f" {trigger[0]}"[:10].ljust(10)
        pieces[trigger_at + 1] = trigger[1][:10].ljust(10)
    return pieces


async def upstream_of(events, *, chunk_size=37, delay=0.0, closed=None, per_event=False):
    """Upstream bytes in arbitrary chunk boundaries (like the network), recording when it is closed."""
    data = b"".join(events)
    chunks = list(events) if per_event else [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    try:
        for chunk in chunks:
            if delay:
                await asyncio.sleep(delay)
            yield chunk
    finally:
        if closed is not None:
            closed.append(True)


class ScriptedAnalyser:
    """In-process ContentSafety for failure cases: reads the fake's trigger words, or raises."""

    def __init__(self, fail_calls=(), delay=0.0):
        self.calls = []
        self.fail_calls = set(fail_calls)
        self.delay = delay

    async def analyze_text(self, text, blocklists=()):
        self.calls.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.calls) - 1 in self.fail_calls:
            raise ContentSafetyError("Content Safety text:analyze failed: HTTP 503", status=503)
        severity = 6 if "VIOLENCE_LEVEL_6" in text else 0
        return TextAnalysis({"Hate": 0, "SelfHarm": 0, "Sexual": 0, "Violence": severity})

    async def shield_prompt(self, prompt, documents=()):
        raise NotImplementedError


POLICY = StreamPolicy(
    mode="enforce",
    window_chars=100,
    overlap_chars=20,
    thresholds={"Hate": 4, "SelfHarm": 4, "Sexual": 4, "Violence": 4},
)


async def collect(events, analyser, policy=POLICY, api="chat.completions", **upstream_kw):
    verdicts: list[EnforcementOutcome] = []
    out = []
    async for chunk in enforce(
        upstream_of(events, **upstream_kw), api=api, analyser=analyser, config=policy, on_verdict=verdicts.append
    ):
        out.append(chunk)
    assert len(verdicts) == 1
    return b"".join(out), verdicts[0]


@pytest.fixture
async def fake_client():
    server = FakeContentSafety(key="k")
    await server.start()
    async with aiohttp.ClientSession() as session:
        client = AzureContentSafety(server.base_url, AzureKeyCredential("k"), session=session, max_retries=0)
        yield server, client
        await client.close()
    await server.stop()


async def test_third_window_violates_client_gets_cleared_text_then_content_filter_end(fake_client):
    server, client = fake_client
    # window step = 100 - 20 = 80 characters = 8 pieces; pieces 16..23 are the third window (index 2)
    pieces = ten_char_pieces(40, trigger_at=18)
    events = chat_events(pieces)
    closed = []
    body, verdict = await collect(events, client, closed=closed)

    cleared = b"".join(events[: 2 + 16])  # prompt_filter_results, role chunk, two windows of text
    assert body.startswith(cleared)
    tail = decode_all(body[len(cleared) :])
    assert [e.data for e in tail][-1] == "[DONE]" and len(tail) == 2
    final = ChatCompletionChunk.model_validate(orjson.loads(tail[0].data))
    assert final.choices[0].finish_reason == "content_filter"
    assert (final.id, final.model, final.created, final.system_fingerprint) == (
        "chatcmpl-1",
        "gpt-4o-2024-08-06",
        1700000000,
        "fp_1",
    )
    for event in events[2 + 16 : -1]:
        assert event not in body
    for piece in pieces[16:]:
        assert piece.encode() not in body
    assert closed == [True]

    assert verdict.action == "blocked" and verdict.source == "content_safety"
    assert verdict.window_index == 2
    assert verdict.categories == {"Violence": 6}
    assert verdict.characters_released == 160
    # the usage record shows the verdict
    safety = merge_enforcement({"status": "ok", "flagged_by": []}, verdict.to_record())
    schema = orjson.loads(open("shared/normalize/schema/usage-record.schema.json", "rb").read())
    jsonschema.validate(safety, {**schema["properties"]["safety"], "$defs": schema["$defs"]})
    assert safety["status"] == "flagged" and safety["flagged_by"] == ["enforcement"]
    assert safety["enforcement"]["window_index"] == 2 and safety["enforcement"]["categories"] == {"Violence": 6}
    # every window sent to the service repeats the last 20 cleared characters and fits the limit
    texts = [b["text"] for b in server.calls("text:analyze")]
    assert texts[0] == "".join(pieces[:8]) and texts[1] == "".join(pieces[:16])[-100:]


async def test_violation_upstream_never_read_to_the_end_is_closed():
    analyser = ScriptedAnalyser(delay=0.005)
    pieces = ten_char_pieces(5000, trigger_at=18)
    closed = []
    body, verdict = await collect(chat_events(pieces), analyser, delay=0.001, closed=closed)
    assert verdict.action == "blocked" and closed == [True]
    assert body.endswith(b"data: [DONE]\n\n")
    assert len(analyser.calls) < 100  # it stopped, rather than analysing the whole stream


async def test_clean_stream_is_released_byte_identical_with_final_partial_window_analysed():
    analyser = ScriptedAnalyser()
    events = chat_events(ten_char_pieces(25))  # 250 chars: windows at 80, 160, 240 and a final 10
    body, verdict = await collect(events, analyser)
    assert body == b"".join(events)
    assert verdict.action == "released" and verdict.windows_analyzed == 4
    assert verdict.characters_released == 250
    assert analyser.calls[-1].endswith("".join(ten_char_pieces(25)[24:]))


async def test_violation_in_the_final_partial_window_is_caught():
    events = chat_events(ten_char_pieces(20, trigger_at=17))  # window 2 is the final partial one
    body, verdict = await collect(events, ScriptedAnalyser())
    assert verdict.action == "blocked" and verdict.window_index == 2
    assert b"VIOLENCE" not in body and body.endswith(b"data: [DONE]\n\n")


async def test_monitor_mode_changes_nothing_on_the_wire():
    events = chat_events(ten_char_pieces(40, trigger_at=18))
    analyser = ScriptedAnalyser()
    chunks = [
        c
        async for c in enforce(
            upstream_of(events),
            api="chat.completions",
            analyser=analyser,
            config=StreamPolicy(mode="monitor"),
            on_verdict=lambda o: None,
        )
    ]
    assert chunks == [c async for c in upstream_of(events)]  # same bytes, same chunk boundaries
    assert analyser.calls == []


async def test_fail_open_releases_everything_on_analyser_errors():
    events = chat_events(ten_char_pieces(25))
    policy = _policy(fail="open")
    body, verdict = await collect(events, ScriptedAnalyser(fail_calls={1}), policy)
    assert body == b"".join(events)
    assert verdict.action == "released" and len(verdict.errors) == 1 and "503" in verdict.errors[0]


async def test_fail_closed_ends_with_content_filter_on_analyser_errors():
    events = chat_events(ten_char_pieces(25))
    body, verdict = await collect(events, ScriptedAnalyser(fail_calls={1}), _policy(fail="closed"))
    assert body.startswith(b"".join(events[: 2 + 8]))  # first window cleared before the failure
    assert verdict.action == "blocked" and verdict.source == "analyser_error" and verdict.window_index == 1
    assert body.endswith(b"data: [DONE]\n\n") and b"content_filter" in body
    assert events[2 + 8] not in body


async def test_aoai_async_filter_annotation_is_honoured():
    pieces = ten_char_pieces(12)
    events = chat_events(pieces)
    annotation = frame(
        {
            **CHUNK,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": None,
                    "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}},
                    "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 120},
                }
            ],
        }
    )
    events.insert(2 + 10, annotation)
    # AOAI's annotation trails the text it judges: by then the first window has been cleared
    body, verdict = await collect(events, ScriptedAnalyser(), per_event=True, delay=0.02)
    assert verdict.action == "blocked" and verdict.source == "aoai"
    assert body.startswith(b"".join(events[: 2 + 8]))  # the first window was cleared before the annotation
    assert annotation not in body and events[2 + 8] not in body
    assert body.endswith(b"data: [DONE]\n\n")


async def test_aoai_finish_reason_content_filter_is_honoured():
    events = chat_events(ten_char_pieces(3), finish="content_filter")
    body, verdict = await collect(events, ScriptedAnalyser())
    assert verdict.source == "aoai"
    assert b"word0000" not in body  # held text that AOAI itself filtered is not released


async def test_completions_stream_final_chunk():
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1700000001, "model": "gpt-35-turbo-instruct"}
    pieces = ten_char_pieces(30, trigger_at=18)
    events = [
        frame({**base, "choices": [{"index": 0, "text": p, "finish_reason": None, "logprobs": None}]}) for p in pieces
    ]
    events.append(b"data: [DONE]\n\n")
    body, verdict = await collect(events, ScriptedAnalyser(), api="completions")
    assert body.startswith(b"".join(events[:16]))
    final = decode_all(body[len(b"".join(events[:16])) :])
    completion = Completion.model_validate(orjson.loads(final[0].data))
    assert completion.id == "cmpl-1" and completion.choices[0].finish_reason == "content_filter"
    assert final[1].data == "[DONE]"


def responses_events(pieces):
    def ev(name, obj):
        return f"event: {name}\n".encode() + b"data: " + orjson.dumps({"type": name, **obj}) + b"\n\n"

    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000002,
        "status": "in_progress",
        "model": "gpt-4o",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    seq = iter(range(1000))
    events = [
        ev("response.created", {"sequence_number": next(seq), "response": response}),
        ev("response.in_progress", {"sequence_number": next(seq), "response": response}),
        ev(
            "response.output_item.added",
            {
                "sequence_number": next(seq),
                "output_index": 0,
                "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []},
            },
        ),
    ]
    for p in pieces:
        events.append(
            ev(
                "response.output_text.delta",
                {
                    "sequence_number": next(seq),
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": p,
                    "logprobs": [],
                },
            )
        )
    events.append(
        ev(
            "response.output_text.done",
            {
                "sequence_number": next(seq),
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": "".join(pieces),
                "logprobs": [],
            },
        )
    )
    events.append(
        ev("response.completed", {"sequence_number": next(seq), "response": {**response, "status": "completed"}})
    )
    return events


async def test_responses_stream_ends_with_incomplete_event():
    pieces = ten_char_pieces(30, trigger_at=18)
    events = responses_events(pieces)
    body, verdict = await collect(events, ScriptedAnalyser(), api="responses")
    assert body.startswith(b"".join(events[: 3 + 16]))
    tail = decode_all(body[len(b"".join(events[: 3 + 16])) :])
    assert len(tail) == 1 and tail[0].event == "response.incomplete"
    incomplete = ResponseIncompleteEvent.model_validate(orjson.loads(tail[0].data))
    assert incomplete.response.incomplete_details.reason == "content_filter"
    assert (
        incomplete.response.id == "resp_1" and incomplete.sequence_number == 3 + 16
    )  # continues from the last event released
    assert b"[DONE]" not in body and b"VIOLENCE" not in body


async def test_responses_clean_stream_released_byte_identical():
    events = responses_events(ten_char_pieces(30))
    body, verdict = await collect(events, ScriptedAnalyser(), api="responses")
    assert body == b"".join(events) and verdict.action == "released"


async def test_upstream_keeps_being_read_while_a_window_is_analysed():
    """The analyser is slow; upstream is still drained (buffered) meanwhile, not stalled."""
    read = []

    async def upstream():
        for event in chat_events(ten_char_pieces(40)):
            read.append(event)
            yield event

    analyser = ScriptedAnalyser(delay=0.2)
    stream = enforce(upstream(), api="chat.completions", analyser=analyser, config=_policy(), on_verdict=lambda o: None)
    out = b""
    while b"word0000" not in out:  # the first text comes out once window 0 is cleared (0.2 s)
        out += await stream.__anext__()
    assert out.startswith(b"".join(chat_events([])[:2]))  # the events without text went first
    assert len(read) == len(chat_events(ten_char_pieces(40)))  # by then upstream was read to the end
    assert len(analyser.calls) >= 4  # and its windows were being analysed concurrently
    await stream.aclose()


async def test_consumer_stopping_early_reports_aborted_and_closes_upstream():
    verdicts, closed = [], []
    stream = enforce(
        upstream_of(chat_events(ten_char_pieces(40)), closed=closed),
        api="chat.completions",
        analyser=ScriptedAnalyser(),
        config=_policy(),
        on_verdict=verdicts.append,
    )
    await stream.__anext__()
    await stream.aclose()
    assert [v.action for v in verdicts] == ["aborted"] and closed == [True]


def _policy(**changes):
    values = {
        "mode": "enforce",
        "window_chars": 100,
        "overlap_chars": 20,
        "thresholds": {"Hate": 4, "SelfHarm": 4, "Sexual": 4, "Violence": 4},
    }
    return StreamPolicy(**{**values, **changes})


async def test_upstream_failure_surfaces_and_is_reported_as_aborted():
    async def broken():
        for event in chat_events(ten_char_pieces(5))[:4]:
            yield event
        raise ConnectionResetError("upstream reset")

    verdicts = []
    with pytest.raises(ConnectionResetError):
        async for _ in enforce(
            broken(), api="chat.completions", analyser=ScriptedAnalyser(), config=_policy(), on_verdict=verdicts.append
        ):
            pass
    assert [v.action for v in verdicts] == ["aborted"]


async def test_choices_are_windowed_separately_and_the_end_names_the_open_choices():
    def piece(index, text):
        return frame({**CHUNK, "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}]})

    events = [frame({**CHUNK, "choices": [{"index": i, "delta": {"role": "assistant"}} for i in (0, 1)]})]
    for n, text in enumerate(ten_char_pieces(8)):
        events.append(piece(0, text))
        events.append(piece(1, " VIOLENCE_" if n == 6 else ("LEVEL_6 ..." if n == 7 else f"other{n:03d}. ")))
    events.append(frame({**CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    events.append(b"data: [DONE]\n\n")
    analyser = ScriptedAnalyser()
    body, verdict = await collect(events, analyser, per_event=True)
    assert verdict.action == "blocked" and verdict.window_index in (0, 1)
    assert not any("word" in call and "other" in call for call in analyser.calls)  # choices are not mixed
    final = ChatCompletionChunk.model_validate(orjson.loads(decode_all(body)[-2].data))
    assert {c.index for c in final.choices} == {0, 1}  # neither choice had its finish released
    assert all(c.finish_reason == "content_filter" for c in final.choices)
    assert b"VIOLENCE" not in body
