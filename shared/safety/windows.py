"""Split text into overlapping windows that fit Azure AI Content Safety's per-call limit.

`text:analyze` accepts at most 10,000 Unicode code points per call; Python `str` indexes code points,
so a slice never cuts a surrogate pair. The overlap repeats the end of one window at the start of the
next, so a phrase cut at a window boundary is still seen whole by one call.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The service limit per `text:analyze` call (and per Prompt Shields user prompt).
MAX_WINDOW_CHARS = 10_000


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    start: int
    end: int
    text: str


def check_window(size: int, overlap: int) -> None:
    """Raise ValueError unless 0 < size <= MAX_WINDOW_CHARS and 0 <= overlap < size."""
    if not 0 < size <= MAX_WINDOW_CHARS:
        raise ValueError(f"window size must be 1..{MAX_WINDOW_CHARS} characters, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"window overlap must be 0..{size - 1} characters, got {overlap}")


def split_windows(text: str, size: int = MAX_WINDOW_CHARS, overlap: int = 0) -> list[Window]:
    """Windows of at most `size` code points covering `text`, each repeating `overlap` of the last.

    Empty text gives no window. The last window ends at the end of the text; every window but the
    first starts `size - overlap` after the previous one.
    """
    check_window(size, overlap)
    if not text:
        return []
    step = size - overlap
    windows: list[Window] = []
    start = 0
    while True:
        end = min(start + size, len(text))
        windows.append(Window(len(windows), start, end, text[start:end]))
        if end == len(text):
            return windows
        start += step


def window_count(length: int, size: int = MAX_WINDOW_CHARS, overlap: int = 0) -> int:
    """How many windows (so `text:analyze` calls) `split_windows` makes for text of this length."""
    check_window(size, overlap)
    if length <= 0:
        return 0
    if length <= size:
        return 1
    step = size - overlap
    return 1 + -(-(length - size) // step)
