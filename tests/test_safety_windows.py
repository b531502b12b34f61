import random

import pytest

from shared.safety.windows import MAX_WINDOW_CHARS, split_windows, window_count


@pytest.mark.parametrize("length", [0, 1, 9_999, 10_000, 10_001, 25_000, 31_337])
@pytest.mark.parametrize("overlap", [0, 1, 200, 9_999])
def test_windows_cover_text_within_limit_and_honour_overlap(length, overlap):
    text = "".join(random.Random(length).choice("ab😀é ") for _ in range(length))
    windows = split_windows(text, MAX_WINDOW_CHARS, overlap)
    assert len(windows) == window_count(length, MAX_WINDOW_CHARS, overlap)
    if not text:
        assert windows == []
        return
    assert all(0 < len(w.text) <= MAX_WINDOW_CHARS for w in windows)
    assert windows[0].start == 0 and windows[-1].end == len(text)
    for prev, cur in zip(windows, windows[1:], strict=False):
        assert cur.start == prev.end - overlap  # the overlap repeats exactly
        assert text[cur.start : cur.end] == cur.text
    rebuilt = windows[0].text + "".join(w.text[overlap:] for w in windows[1:])
    assert rebuilt == text


def test_25000_characters_make_three_windows():
    assert [(w.start, w.end) for w in split_windows("x" * 25_000, 10_000, 0)] == [
        (0, 10_000),
        (10_000, 20_000),
        (20_000, 25_000),
    ]
    assert window_count(25_000, 10_000, 200) == 3


def test_astral_characters_count_as_one_code_point():
    text = "😀" * 10_000
    assert len(split_windows(text)) == 1


@pytest.mark.parametrize("size,overlap", [(0, 0), (10_001, 0), (100, 100), (100, -1)])
def test_bad_window_settings(size, overlap):
    with pytest.raises(ValueError):
        split_windows("abc", size, overlap)
