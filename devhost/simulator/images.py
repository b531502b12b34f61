"""Image generations (dall-e-3 shape): a small deterministic PNG, inline (b64_json) or by URL."""

from __future__ import annotations

import base64
import functools
import struct
import zlib
from typing import Any

import orjson

from .filters import SAFE_PROMPT
from .wire import BadRequest, Context, Plan

#: Where `response_format: url` images are served by the simulator itself.
IMAGE_PATH = "/simulator/images/"
_SIZES = ("1024x1024", "1792x1024", "1024x1792", "256x256", "512x512", "1536x1024", "1024x1536", "auto")
_IMAGE_FILTER = {k: v for k, v in SAFE_PROMPT.items() if k != "jailbreak"}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=256)
def png(color: int, side: int = 8) -> bytes:
    """A valid side x side RGB PNG filled with one colour (the colour comes from the prompt)."""
    rgb = color.to_bytes(3, "big")
    rows = b"".join(b"\x00" + rgb * side for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def build(body: dict[str, Any], ctx: Context, *, stream: bool) -> Plan:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' is a required property.", param="prompt")
    if len(prompt) > 4000:
        raise BadRequest("'prompt' must be at most 4000 characters.", param="prompt")
    n = body.get("n", 1) or 1
    if not isinstance(n, int) or not 1 <= n <= (1 if ctx.model.startswith("dall-e-3") else 10):
        raise BadRequest("Invalid value for 'n' for this model.", param="n")
    size = body.get("size") or "1024x1024"
    if size not in _SIZES:
        raise BadRequest(f"Invalid value for 'size': {size}.", param="size")
    fmt = body.get("response_format") or ("b64_json" if ctx.model.startswith("gpt-image") else "url")
    if fmt not in ("url", "b64_json"):
        raise BadRequest("'response_format' must be 'url' or 'b64_json'.", param="response_format")
    data = []
    for i in range(n):
        color = zlib.crc32(orjson.dumps([ctx.config.seed, prompt, i])) & 0xFFFFFF
        item: dict[str, Any] = {
            "content_filter_results": _IMAGE_FILTER,
            "prompt_filter_results": SAFE_PROMPT,
            "revised_prompt": f"A simple picture of: {prompt}",
        }
        if fmt == "b64_json":
            item["b64_json"] = base64.b64encode(png(color)).decode()
        else:
            item["url"] = f"{ctx.base_url}{IMAGE_PATH}{color:06x}.png"
        data.append(item)
    return Plan(body=orjson.dumps({"created": ctx.created, "data": data}))


def image_bytes(name: str) -> bytes | None:
    """The PNG behind a URL this module handed out, or None for a name it never produces."""
    stem = name.removesuffix(".png")
    if len(stem) != 6 or not name.endswith(".png"):
        return None
    try:
        return png(int(stem, 16))
    except ValueError:
        return None
