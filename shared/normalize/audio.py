"""How long an uploaded audio file plays, read from its container header without decoding it.

Whisper-family transcription and translation are billed per minute of audio, so the duration is
taken from the file the client uploaded (WAV, MP3, M4A/MP4, OGG/Opus, FLAC: what mutagen reads),
never guessed from its size. WebM and other containers mutagen cannot read give None; the caller
then falls back to the `duration` the service put in a verbose_json answer.
"""

from __future__ import annotations

import io

import mutagen
from mutagen import MutagenError


def container_seconds(data: bytes) -> float | None:
    """The playing time the container header declares, or None when it is not a readable audio file."""
    if not data:
        return None
    try:
        parsed = mutagen.File(io.BytesIO(data))
    except (MutagenError, ValueError, OSError, EOFError, IndexError, KeyError, TypeError):
        return None
    info = getattr(parsed, "info", None) if parsed is not None else None
    length = getattr(info, "length", None)
    if isinstance(length, (int, float)) and length > 0:
        return round(float(length), 3)
    return None
