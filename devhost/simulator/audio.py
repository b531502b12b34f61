"""Audio: transcriptions/translations (multipart upload in, text out) and speech (text in, audio out)."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import struct
from typing import Any

import orjson

from . import text
from .wire import BadRequest, Context, Plan

_TEXT_FORMATS = {
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/plain; charset=utf-8",
}


def form_fields(content_type: str, raw: bytes) -> dict[str, bytes | str]:
    """Parse multipart/form-data with the standard library's MIME parser: name -> value (bytes for files)."""
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("Audio requests must be multipart/form-data with a 'file' part.", param="file")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, bytes | str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        fields[str(name)] = payload if part.get_filename() else payload.decode("utf-8", "replace")
    return fields


def transcribe(ctx: Context, *, translate: bool) -> Plan:
    fields = form_fields(ctx.content_type, ctx.raw)
    audio = fields.get("file")
    if not isinstance(audio, bytes) or not audio:
        raise BadRequest("'file' is a required property (the audio to transcribe).", param="file")
    fmt = fields.get("response_format") or "json"
    # The transcript is a pure function of the uploaded bytes.
    start = text.variant(ctx.config.seed, hashlib.blake2b(audio, digest_size=8).digest())
    words = text.answer(ctx.enc, start, min(ctx.config.completion_tokens, 24), 1).text.strip()
    duration = round(max(1.0, len(audio) / 32000), 2)
    if fmt == "json":
        return Plan(body=orjson.dumps({"text": words}))
    if fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": "translate" if translate else "transcribe",
            "language": "english" if translate else str(fields.get("language") or "english"),
            "duration": duration,
            "text": words,
            "segments": [
                {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": duration,
                    "text": words,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }
            ],
        }
        return Plan(body=orjson.dumps(body))
    if fmt == "text":
        out = words + "\n"
    elif fmt == "srt":
        out = f"1\n00:00:00,000 --> {_stamp(duration, ',')}\n{words}\n\n"
    elif fmt == "vtt":
        out = f"WEBVTT\n\n00:00:00.000 --> {_stamp(duration, '.')}\n{words}\n\n"
    else:
        raise BadRequest("'response_format' must be json, text, srt, verbose_json or vtt.", param="response_format")
    return Plan(body=out.encode(), content_type=_TEXT_FORMATS[fmt])


def _stamp(seconds: float, sep: str) -> str:
    ms = int(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


# One MPEG-1 Layer III frame, 128 kbit/s, 44.1 kHz, mono, all-zero side info: a valid frame of silence.
_MP3_FRAME = b"\xff\xfb\x90\xc4" + bytes(413)
_FRAME_SECONDS = 1152 / 44100
_SPEECH_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm"}


def speech(body: dict[str, Any], ctx: Context) -> Plan:
    words = body.get("input")
    if not isinstance(words, str) or not words:
        raise BadRequest("'input' is a required property.", param="input")
    if not isinstance(body.get("voice"), str):
        raise BadRequest("'voice' is a required property.", param="voice")
    fmt = body.get("response_format") or "mp3"
    if fmt not in _SPEECH_TYPES:
        raise BadRequest(f"The simulator produces mp3, wav or pcm speech, not {fmt!r}.", param="response_format")
    seconds = max(0.2, len(words) * 0.06)  # about 60 ms of speech per character
    if fmt == "mp3":
        audio = _MP3_FRAME * max(1, int(seconds / _FRAME_SECONDS))
    else:
        pcm = bytes(int(seconds * 24000) * 2)  # 24 kHz 16-bit mono silence, as the service's pcm
        audio = pcm if fmt == "pcm" else _wav(pcm, 24000)
    return Plan(body=audio, content_type=_SPEECH_TYPES[fmt])


def _wav(pcm: bytes, rate: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
