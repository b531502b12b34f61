"""Vision input images: pixel size from a data URL's image header, and the tokens an image costs.

Sizes come from the PNG/GIF/JPEG/WebP headers with the standard library only (no Pillow, no
network: a remote URL is never fetched; an anonymous GET would fail on private images and
lose the record). Token costs follow OpenAI's published "calculating costs" rules:
512-px tiles for gpt-4o-class models, 32-px patches for the mini/nano patch models.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass

#: Size assumed for an image whose size cannot be read (a remote URL): a common 1024×1024 upload.
DEFAULT_SIZE = (1024, 1024)


@dataclass(frozen=True, slots=True)
class TileCosts:
    base: int
    tile: int


@dataclass(frozen=True, slots=True)
class PatchCosts:
    multiplier: float
    cap: int = 1536


#: Checked in order, so the longer prefixes (gpt-4o-mini, gpt-4.1-mini) come before their families.
_MODEL_COSTS: tuple[tuple[str, TileCosts | PatchCosts], ...] = (
    ("gpt-4o-mini", TileCosts(2833, 5667)),
    ("gpt-4.1-mini", PatchCosts(1.62)),
    ("gpt-4.1-nano", PatchCosts(2.46)),
    ("gpt-5-mini", PatchCosts(1.62)),
    ("gpt-5-nano", PatchCosts(2.46)),
    ("o4-mini", PatchCosts(1.72)),
    ("gpt-5", TileCosts(70, 140)),
    ("o1", TileCosts(75, 150)),
    ("o3", TileCosts(75, 150)),
    ("computer-use", TileCosts(65, 129)),
    ("gpt-4o", TileCosts(85, 170)),
    ("gpt-4.1", TileCosts(85, 170)),
    ("gpt-4.5", TileCosts(85, 170)),
    ("gpt-4", TileCosts(85, 170)),
)
_DEFAULT_COSTS = TileCosts(85, 170)


def costs_for(model: str | None) -> tuple[TileCosts | PatchCosts, bool]:
    """The cost table of a model, and whether it was known (else gpt-4o's, which callers flag)."""
    name = (model or "").lower()
    for prefix, costs in _MODEL_COSTS:
        if name.startswith(prefix):
            return costs, True
    return _DEFAULT_COSTS, False


def tile_tokens(width: int, height: int, detail: str, costs: TileCosts) -> int:
    """Tokens for one image on a tile model (`low` is the base cost alone).

    `high`: fit within 2048×2048, then shrink so the shortest side is at most 768 (small images are
    not enlarged), then count 512-px tiles.
    """
    if detail == "low":
        return costs.base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return costs.base + tiles * costs.tile


def patch_tokens(width: int, height: int, costs: PatchCosts) -> int:
    """Tokens for one image on a patch model: 32-px patches, shrunk to fit `cap` patches."""
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > costs.cap:
        shrink = math.sqrt(32 * 32 * costs.cap / (width * height))
        shrink *= min(
            math.floor(width * shrink / 32) / (width * shrink / 32),
            math.floor(height * shrink / 32) / (height * shrink / 32),
        )
        patches = min(costs.cap, math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32))
    return math.ceil(patches * costs.multiplier)


def image_tokens(width: int, height: int, detail: str | None, model: str | None) -> int:
    """Tokens one input image costs. `auto` (and a missing detail) is counted as `high`."""
    costs, _ = costs_for(model)
    level = (detail or "auto").lower()
    if isinstance(costs, PatchCosts):
        return patch_tokens(width, height, costs)
    return tile_tokens(width, height, "low" if level == "low" else "high", costs)


# --- sizes from image headers -------------------------------------------------------------------

#: Base64 characters decoded first; JPEG EXIF blocks can push the frame header further, then we
#: decode the rest.
_HEAD_CHARS = 64 * 1024


def data_url_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 `data:image/...` URL, or None when it is not one we can read."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        return None
    head = payload[:_HEAD_CHARS]
    size = _size_from_bytes(_b64(head[: len(head) // 4 * 4]))
    if size is None and len(payload) > _HEAD_CHARS:
        size = _size_from_bytes(_b64(payload))
    return size


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return b""


def _size_from_bytes(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None
