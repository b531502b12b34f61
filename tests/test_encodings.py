import socket

import pytest

from shared.normalize import encodings


def test_encodings_load_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tokenizer data must not be fetched from the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    encodings._cache.clear()
    # Published counts: "tiktoken is great!" is 6 tokens in cl100k_base (OpenAI cookbook).
    assert len(encodings.get_encoding("cl100k_base").encode("tiktoken is great!")) == 6
    assert encodings.get_encoding("o200k_base").encode("hello world") == [24912, 2375]


def test_encoding_is_built_once_per_process():
    assert encodings.get_encoding("o200k_base") is encodings.get_encoding("o200k_base")


def test_tampered_data_is_refused(tmp_path, monkeypatch):
    import gzip

    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(b"YQ== 0\n"))
    monkeypatch.setattr(encodings, "DATA_DIR", tmp_path)
    encodings._cache.clear()
    with pytest.raises(encodings.EncodingDataError, match="does not match"):
        encodings.get_encoding("cl100k_base")
    encodings._cache.clear()


def test_unshipped_encoding_is_refused():
    with pytest.raises(encodings.EncodingDataError):
        encodings.get_encoding("p50k_base")
