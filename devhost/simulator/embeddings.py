"""Embeddings: deterministic unit vectors per input, as float lists or base64 little-endian float32."""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import operator
import struct
from typing import Any

import orjson

from . import tokens
from .models import embedding_dimensions
from .wire import BadRequest, Context, Plan


@functools.lru_cache(maxsize=2048)
def vector(key: bytes, dimensions: int) -> bytes:
    """float32 little-endian bytes of a unit vector derived from the input (same input, same vector).

    SHAKE-256 supplies the components (in C), which keeps large batches fast.
    """
    raw = struct.unpack(f"<{dimensions}h", hashlib.shake_256(key).digest(2 * dimensions))
    scale = 1.0 / (math.sqrt(sum(map(operator.mul, raw, raw))) or 1.0)
    return struct.pack(f"<{dimensions}f", *map(scale.__mul__, raw))


def _inputs(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        return [raw]
    if isinstance(raw, list) and raw and len(raw) <= 2048:
        if all(isinstance(x, str) or (isinstance(x, list) and all(isinstance(t, int) for t in x)) for x in raw):
            return raw
    raise BadRequest(
        "'input' must be a string, an array of up to 2048 strings, a token array or an array of token arrays.",
        param="input",
    )


def build(body: dict[str, Any], ctx: Context, *, stream: bool) -> Plan:
    inputs = _inputs(body.get("input"))
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    dims = body.get("dimensions")
    if dims is None:
        dims = embedding_dimensions(ctx.model)
    elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= embedding_dimensions(ctx.model):
        raise BadRequest("Invalid value for 'dimensions'.", param="dimensions")
    data = []
    for i, item in enumerate(inputs):
        packed = vector(orjson.dumps([ctx.config.seed, item]), dims)
        if fmt == "base64":
            embedding: Any = base64.b64encode(packed).decode()
        else:
            embedding = list(struct.unpack(f"<{dims}f", packed))
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    prompt = tokens.prompt_text_tokens(ctx.enc, inputs)
    out = {
        "object": "list",
        "data": data,
        "model": ctx.model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
    return Plan(body=orjson.dumps(out), tokens=prompt)
