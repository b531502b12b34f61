"""The optional second PII stage (Azure AI Language `PiiEntityRecognition`) through its real HTTP
client (urllib) against a double of the service: Azure AI Language cannot run here. The double is
as strict as the service's synchronous API: POST to `/language/:analyze-text` with the api-version,
the key header, at most 5 documents of at most 5,120 characters, known kind and parameters."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Identity, Timings
from shared.privacy.capture import reduce
from shared.privacy.language import API_VERSION, LanguagePii
from shared.privacy.pii import RECOGNIZERS, PiiRedactor, Placeholders

KEY = "language-key-double-0001"
NAMES = ("Maria Rossi", "Jan de Vries")


class LanguageDouble(BaseHTTPRequestHandler):
    """Answers like the service: entities for the known names (UnicodeCodePoint offsets)."""

    requests: list[dict] = []
    fail = False

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problem = None
        if self.path != f"/language/:analyze-text?api-version={API_VERSION}":
            problem = (404, "NotFound")
        elif self.headers.get("Ocp-Apim-Subscription-Key") != KEY:
            problem = (401, "Unauthorized")
        else:
            docs = body.get("analysisInput", {}).get("documents", [])
            if (
                body.get("kind") != "PiiEntityRecognition"
                or body.get("parameters", {}).get("stringIndexType") != "UnicodeCodePoint"
                or not 1 <= len(docs) <= 5
                or any(len(d["text"]) > 5120 or not d["text"] for d in docs)
                or len({d["id"] for d in docs}) != len(docs)
            ):
                problem = (400, "InvalidDocumentBatch")
        if self.fail:
            problem = (503, "ServiceUnavailable")
        if problem:
            self._answer(problem[0], {"error": {"code": problem[1], "message": "rejected by the double"}})
            return
        type(self).requests.append(body)
        results = []
        for doc in docs:
            entities = [
                {"text": m[0], "category": "Person", "offset": m.start(), "length": len(m[0]), "confidenceScore": 0.98}
                for name in NAMES
                for m in re.finditer(re.escape(name), doc["text"])
            ]
            results.append({"id": doc["id"], "entities": entities, "warnings": [], "redactedText": ""})
        self._answer(
            200,
            {
                "kind": "PiiEntityRecognitionResults",
                "results": {"documents": results, "errors": [], "modelVersion": "2025-01-01"},
            },
        )

    def _answer(self, status: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def language() -> Iterator[str]:
    LanguageDouble.requests, LanguageDouble.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), LanguageDouble)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_names_are_found_by_the_second_stage_beside_the_patterns(language: str) -> None:
    pii = PiiRedactor((*RECOGNIZERS, LanguagePii(language, KEY)))
    out = pii.text("Dear Maria Rossi, write to maria@example.it; Maria Rossi again.", Placeholders())
    assert out == "Dear <PERSON_1>, write to <EMAIL_1>; <PERSON_1> again."


def test_one_exchange_is_sent_in_batches_of_five_documents(language: str) -> None:
    stage = LanguagePii(language, KEY)
    messages = [{"role": "user", "content": f"Message {i} from Jan de Vries about the plan."} for i in range(7)]
    exchange = Exchange(
        request_id="r",
        request=CapturedRequest(
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            {"api-version": "2024-10-21"},
            {"content-type": "application/json"},
            {"model": "gpt-4o", "messages": messages},
            "json",
            100,
        ),
        response=CapturedResponse(
            200,
            {"content-type": "application/json"},
            {
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "Jan de Vries agreed."},
                    }
                ],
                "usage": {"prompt_tokens": 70, "completion_tokens": 5, "total_tokens": 75},
            },
            "json",
            90,
        ),
        timings=Timings("2026-12-06T00:00:00.000Z", 1.0, 2.0),
        identity=Identity("s", "S", "standard"),
    )
    reduced = reduce(exchange, "redacted", "standard", PiiRedactor((*RECOGNIZERS, stage), secrets=False))
    contents = [m["content"] for m in reduced.request.body["messages"]]
    assert contents == [f"Message {i} from <PERSON_1> about the plan." for i in range(7)]
    assert reduced.response.body["choices"][0]["message"]["content"] == "<PERSON_1> agreed."
    assert "Vries" not in json.dumps(reduced.normalized)
    # 8 distinct texts (7 messages, the answer) in 2 requests, each text sent once.
    sent = [d["text"] for body in LanguageDouble.requests for d in body["analysisInput"]["documents"]]
    assert len(LanguageDouble.requests) == 2 and len(sent) == len(set(sent)) == 8


def test_a_long_text_goes_in_pieces_with_the_offsets_kept(language: str) -> None:
    text = "x " * 3000 + "Maria Rossi" + " y" * 3000
    out = PiiRedactor((LanguagePii(language, KEY),)).text(text, Placeholders())
    assert out == "x " * 3000 + "<PERSON_1>" + " y" * 3000
    assert [len(d["text"]) for d in LanguageDouble.requests[0]["analysisInput"]["documents"]] == [
        5120,
        5120,
        len(text) - 10240,
    ]


def test_a_failing_service_leaves_the_pattern_findings(language: str, caplog: pytest.LogCaptureFixture) -> None:
    LanguageDouble.fail = True
    pii = PiiRedactor((*RECOGNIZERS, LanguagePii(language, KEY)))
    assert pii.text("Maria Rossi <maria@example.it>", Placeholders()) == "Maria Rossi <<EMAIL_1>>"
    assert "Azure AI Language PII detection failed" in caplog.text and KEY not in caplog.text


def test_a_wrong_key_is_refused_like_the_service_does(language: str) -> None:
    pii = PiiRedactor((LanguagePii(language, "wrong"),))
    assert pii.text("Maria Rossi", Placeholders()) == "Maria Rossi" and LanguageDouble.requests == []
