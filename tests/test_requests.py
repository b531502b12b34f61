import base64

import pytest

from shared.normalize.requests import as_list, include_usage, parse_request


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("\n", ["\n"]), (["a", "b"], ["a", "b"]), (None, []), ([], [])],
)
def test_stop_as_string_or_array(stop, expected):
    assert parse_request("chat.completions", {"messages": [], "stop": stop})["stop"] == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Say hi", ["Say hi"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
        ("", [""]),
    ],
)
def test_completions_prompt_shapes(prompt, expected):
    assert parse_request("completions", {"prompt": prompt})["prompt"] == expected


@pytest.mark.parametrize("value", ["text", ["a", "b"], [101, 102], [[101], [102, 103]]])
def test_embeddings_input_shapes(value):
    req = parse_request("embeddings", {"input": value, "encoding_format": "base64", "dimensions": 256})
    assert req["input"] == as_list(value, token_array=True)
    assert req["encoding_format"] == "base64" and req["dimensions"] == 256


def test_every_field_is_kept_including_objects_and_unknown_future_fields():
    body = {
        "messages": [
            {"role": "user", "content": "x", "name": "bob"},
            {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        ],
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 3,
        "n": 3,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": {}}},
        "seed": 7,
        "parallel_tool_calls": False,
        "stream": True,
        "stream_options": {"include_usage": True},
        "data_sources": [{"type": "azure_search"}],
        "some_future_field": {"nested": [1, 2]},
    }
    req = parse_request("chat.completions", body)
    for key, value in body.items():
        assert req[key] == value
    assert req["n"] == 3 and req["stream"] is True and include_usage(req)


def test_completion_logprobs_int_and_odd_values_do_not_crash():
    req = parse_request(
        "completions", {"prompt": "x", "logprobs": 5, "n": "2", "stream": "yes", "best_of": 3, "echo": True}
    )
    assert req["logprobs"] == 5 and req["n"] == 1 and req["stream"] is False and req["best_of"] == 3


@pytest.mark.parametrize("body", [None, [], "text", 3, {}])
def test_non_object_bodies(body):
    assert isinstance(parse_request("chat.completions", body), dict)


def test_multipart_audio_upload_keeps_form_fields_not_the_file():
    boundary = "XyZ"
    raw = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        + b"RIFF\x00\x01binary"
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n\r\nde'
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="response_format"\r\n\r\ntext\r\n--{boundary}--\r\n'
        ).encode()
    )
    req = parse_request(
        "audio.transcriptions", {"base64": base64.b64encode(raw).decode()}, f"multipart/form-data; boundary={boundary}"
    )
    assert req["language"] == "de" and req["response_format"] == "text"
    assert req["files"] == [{"field": "file", "filename": "a.wav", "bytes": 12}]
