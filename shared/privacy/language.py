"""Azure AI Language PII detection as a second recognizer stage: the personal data patterns cannot
find (names, postal addresses, organizations), behind the same `find(text)` as the pattern
recognizers.

It is a network call, so it is prepared in batches: `prefetch(texts)` sends every text of an
exchange (5 documents of at most 5,120 characters per request, the synchronous API's limits) and
keeps the entities; `find(text)` then only reads them. It runs where the capture level is applied,
in a worker thread after the client's last byte, never on the client's path. Stdlib HTTP (urllib)
because that thread is not an event loop. A failed call is logged and that text keeps only the
pattern stage's findings: the second stage adds to the first, it never replaces it.

Cost and latency (docs/privacy.md): billed per text record of up to 1,000 characters; a request
takes roughly 100-500 ms.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.privacy.pii import Finding

log = logging.getLogger(__name__)

API_VERSION = "2023-04-01"
MAX_DOCUMENTS = 5
MAX_CHARS = 5120
#: Service category -> placeholder kind. Only what the pattern stage cannot do is asked for.
CATEGORIES: Mapping[str, str] = {"Person": "PERSON", "Address": "ADDRESS", "Organization": "ORGANIZATION"}
#: Texts shorter than this are not sent (role names, model names, ids).
MIN_CHARS = 12

#: (url, headers, body) -> response body; urllib by default, a double in tests.
Post = Callable[[str, Mapping[str, str], bytes], bytes]


def _urllib_post(timeout: float) -> Post:
    def post(url: str, headers: Mapping[str, str], body: bytes) -> bytes:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310 - https endpoint from settings
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return bytes(response.read())

    return post


@dataclass(slots=True)
class LanguagePii:
    """`PiiEntityRecognition` of an Azure AI Language resource (`endpoint`, key) as a recognizer."""

    endpoint: str
    key: str = field(repr=False)
    language: str = "en"
    min_score: float = 0.6
    timeout: float = 10.0
    post: Post | None = None
    kind: str = "LANGUAGE"
    priority: int = 1
    _found: dict[str, list[Finding]] = field(default_factory=dict)

    def prefetch(self, texts: Iterable[str]) -> None:
        """Analyse every text not seen yet, in as few requests as the limits allow."""
        pending: list[tuple[str, int]] = []  # (text, offset of the piece)
        for text in dict.fromkeys(t for t in texts if _prose(t) and t not in self._found):
            self._found[text] = []
            pending += [(text, start) for start in range(0, len(text), MAX_CHARS)]
        for i in range(0, len(pending), MAX_DOCUMENTS):
            self._analyse(pending[i : i + MAX_DOCUMENTS])

    def find(self, text: str) -> Iterable[Finding]:
        if text not in self._found and _prose(text):
            self.prefetch([text])
        return self._found.get(text, [])

    def _analyse(self, pieces: Sequence[tuple[str, int]]) -> None:
        body = {
            "kind": "PiiEntityRecognition",
            "parameters": {
                "modelVersion": "latest",
                "stringIndexType": "UnicodeCodePoint",  # offsets as Python counts characters
                "piiCategories": list(CATEGORIES),
            },
            "analysisInput": {
                "documents": [
                    {"id": str(n), "language": self.language, "text": text[start : start + MAX_CHARS]}
                    for n, (text, start) in enumerate(pieces)
                ]
            },
        }
        url = f"{self.endpoint.rstrip('/')}/language/:analyze-text?api-version={API_VERSION}"
        headers = {"Ocp-Apim-Subscription-Key": self.key, "Content-Type": "application/json"}
        try:
            answer = orjson.loads((self.post or _urllib_post(self.timeout))(url, headers, orjson.dumps(body)))
            documents = answer["results"]["documents"]
        except Exception as exc:  # the pattern stage's findings stand
            log.warning("Azure AI Language PII detection failed for %d texts: %s", len(pieces), type(exc).__name__)
            return
        for document in documents:
            text, start = pieces[int(document["id"])]
            for entity in document.get("entities") or []:
                kind = CATEGORIES.get(str(entity.get("category")))
                if kind is None or float(entity.get("confidenceScore", 0)) < self.min_score:
                    continue
                at = start + int(entity["offset"])
                self._found[text].append(Finding(at, at + int(entity["length"]), kind))


def _prose(text: str) -> bool:
    """Worth a call: long enough and words (not a header value, an id or a number)."""
    return len(text) >= MIN_CHARS and " " in text


def language_stage(endpoint: str | None, key: str | None) -> LanguagePii | None:
    """The second stage when both an endpoint and a key are configured, else None."""
    return LanguagePii(endpoint, key) if endpoint and key else None


def texts_of(value: Any) -> list[str]:
    """Every string in a JSON value (what `prefetch` is given for one exchange)."""
    out: list[str] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out
