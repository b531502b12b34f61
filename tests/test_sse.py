import random

import pytest

from shared.normalize.sse import SSEDecoder, decode_all, decode_text

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b'event: response.created\ndata: {"type": "response.created"}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"data: contains data: inside\n\n"
    b"id: 7\nretry: 1500\ndata: x\n\n"
    b"data: [DONE]\n\n"
)


def events_of(chunks):
    dec = SSEDecoder()
    out = []
    for c in chunks:
        out += dec.decode(c)
    return out + dec.flush()


def test_whole_stream():
    evs = [e for e in decode_all(STREAM) if e.data is not None]
    assert [e.data for e in evs] == [
        '{"a": 1}',
        '{"type": "response.created"}',
        "line one\nline two",
        "contains data: inside",
        "x",
        "[DONE]",
    ]
    assert evs[1].type == "response.created" and evs[0].type == "message"
    assert evs[4].id == "7" and evs[4].retry == 1500


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_gives_the_same_events_and_raw_bytes_add_up(seed):
    rng = random.Random(seed)
    text = STREAM.replace(b"\n", rng.choice([b"\n", b"\r\n", b"\r"]))
    cuts = sorted(rng.sample(range(1, len(text)), 15))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=False)]
    evs = events_of(chunks)
    assert b"".join(e.raw for e in evs) == text
    assert [e.data for e in evs] == [e.data for e in decode_all(text)]
    assert all(e.complete for e in evs)


def test_multibyte_text_split_mid_character():
    text = 'data: {"c": "héllo ✓ 日本"}\n\n'.encode()
    cut = text.index("✓".encode()) + 1
    evs = events_of([text[:cut], text[cut:]])
    assert evs[0].data == '{"c": "héllo ✓ 日本"}'


def test_stream_cut_without_blank_line_is_returned_incomplete():
    evs = decode_all(b'data: {"a": 1}\n\ndata: {"b": 2}')
    assert [e.data for e in evs] == ['{"a": 1}', '{"b": 2}']
    assert evs[-1].complete is False


def test_bom_is_ignored_but_kept_in_raw():
    evs = decode_all(b"\xef\xbb\xbfdata: x\n\n")
    assert evs[0].data == "x" and evs[0].raw.startswith(b"\xef\xbb\xbf")


def test_field_without_space_and_unknown_fields():
    evs = decode_all(b"data:x\nfoo: bar\ndata\n\n")
    assert evs[0].data == "x\n"


@pytest.mark.parametrize("seed", range(30))
def test_decode_text_gives_the_events_decode_all_gives(seed):
    rng = random.Random(seed)
    blocks = [
        b'data: {"a": 1}',
        b'event: response.created\ndata: {"t": 2}',
        b": comment",
        b"data: one\ndata: two",
        b"data:nospace",
        b"data",
        b"id: 3\ndata: x",
        b"event: only-event",
        b"data: [DONE]",
        b"data: caf\xc3\xa9 \xe2\x80\xa8 sep",
    ]
    picked = [rng.choice(blocks) for _ in range(12)]
    text = b"\n\n".join(picked) + rng.choice([b"\n\n", b"", b"\n"])
    text = text.replace(b"\n", rng.choice([b"\n", b"\r\n", b"\r"]))
    if seed % 5 == 0:
        text = b"\xef\xbb\xbf" + text
    expected = [(e.event, e.data) for e in decode_all(text) if e.data]
    assert [(ev, d) for ev, d in decode_text(text.decode()) if d] == expected


class _LineLoopOnly(SSEDecoder):
    """The decoder without its fast path for one-line data blocks: the reference it must agree with."""

    __slots__ = ()

    def _single_data_lines(self, events):
        return None


@pytest.mark.parametrize("seed", range(30))
def test_fast_path_gives_exactly_the_line_loop_events(seed):
    rng = random.Random(seed)
    blocks = [b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9 \xf0\x9f\x9a\x80"}}]}\n\n'] * 20 + [
        STREAM,
        b"data:no space\n\n",
        b"data: a\n\n\n",
        b"id: 9\n\n",
        b"data: \n\n",
        b"data: x\r\n\r\n",
        b": c\n\n",
    ]
    text = b"".join(rng.choice(blocks) for _ in range(40)) + b"data: tail without end"
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 30)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=False)]
    fast, slow = SSEDecoder(), _LineLoopOnly()
    got = [e for c in chunks for e in fast.decode(c)] + fast.flush()
    want = [e for c in chunks for e in slow.decode(c)] + slow.flush()
    assert got == want
    assert b"".join(e.raw for e in got) == text
