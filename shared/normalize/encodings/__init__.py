"""Offline tiktoken encodings: BPE ranks shipped with the project, verified by tiktoken's own hashes.

tiktoken normally downloads its rank files on first use; Functions behind private endpoints and
these build machines cannot. The files here come from the `bpe-openai` wheel (identical bytes to
tiktoken's published files). We run tiktoken's own constructor for each encoding, answering its
download request from the shipped file, so the pattern, special tokens and expected sha256 are
tiktoken's, not a copy of them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import tiktoken
from tiktoken_ext import openai_public

from shared.errors import EncodingDataError

DATA_DIR = Path(__file__).parent
SHIPPED = ("o200k_base", "cl100k_base")

_lock = threading.Lock()
_cache: dict[str, tiktoken.Encoding] = {}


def _load_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    path = DATA_DIR / f"{name}.tiktoken.gz"
    if not path.exists():
        raise EncodingDataError(f"encoding {name!r} is not shipped with the gateway")
    data = gzip.decompress(path.read_bytes())
    actual = hashlib.sha256(data).hexdigest()
    if expected_hash is None or actual != expected_hash:
        raise EncodingDataError(f"{path.name}: sha256 {actual} does not match tiktoken's {expected_hash}")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the named encoding, built once per process from the shipped data."""
    enc = _cache.get(name)
    if enc is not None:
        return enc
    with _lock:
        enc = _cache.get(name)
        if enc is None:
            constructor = openai_public.ENCODING_CONSTRUCTORS.get(name)
            if constructor is None or name not in SHIPPED:
                raise EncodingDataError(f"encoding {name!r} is not shipped with the gateway")
            with mock.patch.object(openai_public, "load_tiktoken_bpe", _load_ranks):
                params: dict[str, Any] = constructor()
            enc = tiktoken.Encoding(**params)
            _cache[name] = enc
    return enc
