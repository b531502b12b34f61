import os

import pytest

from shared.exchange import (
    Attempt,
    CapturedRequest,
    CapturedResponse,
    Exchange,
    IncompleteExchange,
    Timings,
    decode_body,
    encode_body,
    from_items,
    to_items,
)


def make_exchange(body: bytes = b'{"messages": []}', content_type: str = "application/json") -> Exchange:
    value, encoding = encode_body(body, content_type)
    return Exchange(
        request_id="rid-1",
        request=CapturedRequest(
            method="POST",
            path="/openai/deployments/gpt-4o/chat/completions",
            query={"api-version": "2024-10-21"},
            headers={"content-type": content_type},
            body=value,
            body_encoding=encoding,
            body_bytes=len(body),
        ),
        timings=Timings(received_at="2026-11-27T04:00:00.000Z", upstream_first_byte_ms=12.5, last_byte_ms=40.0),
        response=CapturedResponse(status=200, headers={"content-type": "text/event-stream"}, sse="data: [DONE]\n\n"),
        backend="b1",
        attempts=[Attempt(backend="b1", status=200, duration_ms=40.0, outcome="served")],
    )


def test_json_round_trip_keeps_every_field():
    ex = make_exchange()
    assert Exchange.from_json(ex.to_json()) == ex


def test_to_dict_and_to_json_equal_asdict_for_every_field():
    from dataclasses import asdict, fields

    import orjson

    ex = make_exchange()
    ex.enforcement = {"mode": "enforce", "verdict": "ok"}
    ex.gateway_error = {"code": "x", "message": "y"}
    ex.attempts = ex.attempts * 2
    for f in fields(ex):  # a field added later must still be serialized (no hand-kept list)
        assert f.name in ex.to_dict()
    assert ex.to_dict() == asdict(ex)
    assert ex.to_json() == orjson.dumps(asdict(ex))


def test_small_exchange_is_one_readable_item():
    items = to_items(make_exchange())
    assert len(items) == 1
    assert items[0]["exchange"]["request"]["body"] == {"messages": []}
    assert from_items(items) == make_exchange()


def test_large_exchange_splits_into_items_under_one_megabyte_and_joins_back():
    audio = os.urandom(5_000_000)
    ex = make_exchange(audio, "multipart/form-data; boundary=x")
    items = to_items(ex)
    assert len(items) > 5
    import orjson

    assert all(len(orjson.dumps(it)) <= 1_000_000 for it in items)
    shuffled = items[::-1]
    back = from_items(shuffled)
    assert decode_body(back.request.body, back.request.body_encoding) == audio


def test_item_rows_are_the_items_as_json_for_small_large_and_unserializable_exchanges():
    deep: object = []
    for _ in range(300):
        deep = [deep]
    small, large = make_exchange(), make_exchange(os.urandom(3_000_000), "application/octet-stream")
    unserializable = make_exchange()
    unserializable.request.body = deep  # orjson writes 255 levels at most: the body is replaced
    import orjson

    from shared.exchange import to_item_rows

    for ex in (small, large, unserializable):
        rows = to_item_rows(ex)
        items = to_items(ex)
        assert [(seq, count) for seq, count, _ in rows] == [(it["seq"], it["count"]) for it in items]
        assert [orjson.loads(item) for _, _, item in rows] == items
        assert [item for _, _, item in rows] == [orjson.dumps(it) for it in items]  # same bytes, same order


def test_missing_item_is_reported_not_silently_joined():
    items = to_items(make_exchange(os.urandom(3_000_000), "application/octet-stream"))
    with pytest.raises(IncompleteExchange):
        from_items(items[:-1])


def test_non_json_body_is_base64_and_json_body_is_parsed():
    assert encode_body(b"\x00\x01", "application/octet-stream") == ({"base64": "AAE="}, "base64")
    assert encode_body(b'{"a": 1}', "application/json") == ({"a": 1}, "json")
    assert encode_body(b"not json", "application/json")[1] == "base64"
    assert encode_body(b"", None) == (None, "empty")
