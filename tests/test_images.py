import base64
import struct
import zlib

import pytest

from shared.normalize.images import DEFAULT_SIZE, data_url_size, image_tokens


@pytest.mark.parametrize(
    ("size", "detail", "model", "tokens"),
    [
        # OpenAI "Images and vision -> calculating costs" published examples.
        ((1024, 1024), "high", "gpt-4o", 765),
        ((2048, 4096), "high", "gpt-4o", 1105),
        ((4096, 8192), "low", "gpt-4o", 85),
        ((1024, 1024), "low", "gpt-4o-mini", 2833),
        ((1024, 1024), "high", "gpt-4o-mini-2024-07-18", 2833 + 4 * 5667),
        ((1024, 1024), "auto", "gpt-4o-2024-08-06", 765),
        ((512, 512), "high", "gpt-4o", 255),  # not enlarged
        ((8000, 300), "high", "gpt-4o", 765),  # seed said 10625
        # Patch models (published: 1024x1024 -> 1024 patches; 1800x2400 -> 1056x1408 -> 1452 patches),
        # times the model's multiplier (1.62 for gpt-4.1-mini), rounded up.
        ((1024, 1024), "high", "gpt-4.1-mini", 1659),
        ((1800, 2400), "high", "gpt-4.1-mini", 2353),
    ],
)
def test_published_examples(size, detail, model, tokens):
    assert image_tokens(*size, detail, model) == tokens


def _png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1" + struct.pack(">H", 65000) + b"\x00" * 64998
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + exif + sof + b"\xff\xd9"


def _gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00"


def _webp_vp8x(w: int, h: int) -> bytes:
    payload = b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBP"
        + b"VP8X"
        + struct.pack("<I", len(payload))
        + payload
    )


def _webp_vp8l(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    payload = b"\x2f" + bits.to_bytes(4, "little")
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(payload))
        + b"WEBP"
        + b"VP8L"
        + struct.pack("<I", len(payload))
        + payload
    )


@pytest.mark.parametrize(
    ("mime", "data"),
    [
        ("png", _png(1920, 1080)),
        ("jpeg", _jpeg(1920, 1080)),
        ("gif", _gif(1920, 1080)),
        ("webp", _webp_vp8x(1920, 1080)),
        ("webp", _webp_vp8l(1920, 1080)),
    ],
)
def test_sizes_from_headers(mime, data):
    url = f"data:image/{mime};base64," + base64.b64encode(data).decode()
    assert data_url_size(url) == (1920, 1080)


def test_jpeg_with_large_exif_before_the_frame_header_is_read_past_the_first_block():
    data = _jpeg(640, 480)
    assert len(base64.b64encode(data)) > 64 * 1024
    assert data_url_size("data:image/jpeg;base64," + base64.b64encode(data).decode()) == (640, 480)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/cat.png", "data:image/png;base64,AAAA", "data:text/plain,hello", "data:image/png;base64,%%%"],
)
def test_unknown_sizes(url):
    assert data_url_size(url) is None
    assert DEFAULT_SIZE == (1024, 1024)
