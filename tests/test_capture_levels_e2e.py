"""Capture levels end to end: the official OpenAI SDK -> dev host -> AOAI simulator, one key per
audience (CAPTURE_LEVELS by product and by subscription), the same calls at every level.

The usage record must be the same at all four levels (tokens, their source, cost), streamed and
not, including a stream whose usage the gateway estimates from the text; what is stored differs.
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.parse

import pytest
from openai import AzureOpenAI

import function_app
from devhost.simulator import SimulatorConfig
from tests.devhost_harness import DevHostGateway, dev_host

UPSTREAM_KEY = "upstream-key-levels-0001"
KEYS = {
    "full": "key-level-full-0001",
    "redacted": "key-level-redacted-0002",
    "metadata": "key-level-metadata-0003",
    "none": "key-level-none-0004",
}
SUBSCRIPTIONS = {
    KEYS["full"]: {"id": "team-open", "name": "Open", "product": "starter"},
    KEYS["redacted"]: {"id": "team-a", "name": "Team A", "product": "standard"},
    # Same product as team-a: the subscription entry wins.
    KEYS["metadata"]: {"id": "team-hr", "name": "HR", "product": "standard"},
    KEYS["none"]: {"id": "team-legal", "name": "Legal", "product": "confidential"},
}
CAPTURE_LEVELS = {"standard": "redacted", "subscription:team-hr": "metadata", "confidential": "none"}
EMAIL, PHONE, CARD = "maria.rossi@example.it", "+44 20 7946 0958", "4111 1111 1111 1111"
PROMPT = f"My e-mail is {EMAIL}, phone {PHONE}; write back to {EMAIL} about card {CARD}."
ANSWER = f"Noted: I will write to {EMAIL} and never store {CARD}."


class Gateway(DevHostGateway):
    def client(self, level: str, api_version: str = "2024-10-21") -> AzureOpenAI:
        return AzureOpenAI(api_key=KEYS[level], azure_endpoint=self.url, api_version=api_version, max_retries=0)

    def record(self, request_id: str) -> dict:
        self.settle()
        record = self.call(function_app.ports().records.get(request_id))
        assert record is not None, f"no record for {request_id}"
        return record

    def details(self, request_id: str) -> dict | None:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute("SELECT details FROM records WHERE request_id = ?", (request_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def stored_bytes(self, request_id: str) -> bytes:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT item FROM exchange_items WHERE request_id = ?", (request_id,)).fetchall()
        return b"".join(r[0].encode() if isinstance(r[0], str) else r[0] for r in rows)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("levels"),
        SUBSCRIPTIONS,
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, seed=7, stream_chunks=24)},
        env={"CAPTURE_LEVELS": json.dumps(CAPTURE_LEVELS)},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def _call(gw: Gateway, level: str, *, stream: bool, api_version: str = "2024-10-21") -> str:
    """One chat call; returns the gateway's request id. The answer is forced (x-sim-content) so
    every level gets the same text, cut into many events so the e-mail spans several of them."""
    headers = {"x-sim-content": urllib.parse.quote(ANSWER)}
    client = gw.client(level, api_version)
    messages = [{"role": "user", "content": PROMPT}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=messages, stream=True, extra_headers=headers
        ) as response:
            text = "".join(
                json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                for line in response.iter_lines()
                if line.startswith("data: {") and json.loads(line[6:])["choices"]
            )
            rid = response.headers["x-gateway-request-id"]
    else:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, extra_headers=headers)
        text = raw.parse().choices[0].message.content or ""
        rid = raw.headers["x-gateway-request-id"]
    assert text == ANSWER  # the client gets the answer untouched at every level
    return rid


USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_source",
    "cost",
    "model",
    "finish_reasons",
    "stream",
    "status_code",
    "api",
    "deployment",
)


@pytest.mark.parametrize(
    ("stream", "api_version"),
    [(False, "2024-10-21"), (True, "2024-10-21"), (True, "2024-06-01")],
    ids=["non-stream", "stream-service-usage", "stream-estimated-usage"],
)
def test_the_usage_record_is_the_same_at_every_level(gw: Gateway, stream: bool, api_version: str) -> None:
    ids = {level: _call(gw, level, stream=stream, api_version=api_version) for level in KEYS}
    records = {level: gw.record(rid) for level, rid in ids.items()}
    usage = {level: {f: r[f] for f in USAGE_FIELDS} for level, r in records.items()}
    assert usage["full"]["prompt_tokens"] > 0 and usage["full"]["cost"] > 0
    expected_source = "estimated" if api_version == "2024-06-01" else "service"
    assert usage["full"]["usage_source"] == expected_source
    for level in KEYS:
        assert usage[level] == usage["full"], level
        assert records[level]["capture_level"] == level
    assert gw.emitted[ids["none"]] == 1  # recorded and emitted once, like every level


def test_each_level_stores_what_it_promises(gw: Gateway) -> None:
    ids = {level: _call(gw, level, stream=True) for level in KEYS}
    gw.settle()
    full, redacted, metadata = (gw.exchange(ids[level]) for level in ("full", "redacted", "metadata"))
    assert full is not None and redacted is not None and metadata is not None
    assert gw.exchange(ids["none"], timeout=0.5) is None and gw.stored_bytes(ids["none"]) == b""
    assert ids["none"] not in gw.published  # never stored, never announced: recorded in place

    assert full.capture_level == "full" and EMAIL.encode() in gw.stored_bytes(ids["full"])
    assert EMAIL in json.dumps(gw.details(ids["full"]))

    assert redacted.capture_level == "redacted" and redacted.privacy["rule"] == "standard"
    stored = gw.stored_bytes(ids["redacted"]).decode()
    details = json.dumps(gw.details(ids["redacted"]))
    for value in (EMAIL, "7946 0958", CARD):
        assert value not in stored and value not in details, [
            m for m in re.findall(".{80}" + value + ".{40}", stored + details)
        ]
    # The same value gets the same placeholder in the prompt, the answer and the details.
    prompt = redacted.request.body["messages"][0]["content"]
    assert prompt == "My e-mail is <EMAIL_1>, phone <PHONE_1>; write back to <EMAIL_1> about card <CREDIT_CARD_1>."
    answer = redacted.response.body["choices"][0]["message"]["content"]
    assert answer == "Noted: I will write to <EMAIL_1> and never store <CREDIT_CARD_1>."
    assert (
        "<EMAIL_1>" in details and redacted.privacy["pii"].items() >= {"CREDIT_CARD": 1, "EMAIL": 1, "PHONE": 1}.items()
    )

    assert metadata.capture_level == "metadata" and metadata.privacy["rule"] == "subscription:team-hr"
    assert metadata.request.body is None and metadata.response.body is None and metadata.response.sse is None
    assert b"rossi" not in gw.stored_bytes(ids["metadata"]), re.findall(
        rb".{200}rossi.{50}", gw.stored_bytes(ids["metadata"])
    )
    summary = gw.details(ids["metadata"])
    assert summary["request"]["model"] == "gpt-4o" and summary["prompt"]["bytes"] == len(PROMPT.encode())
    assert len(summary["completion"]["sha256"]) == 64 and "rossi" not in json.dumps(summary)
    nothing = gw.details(ids["none"])
    assert nothing is not None and nothing.keys() == summary.keys() and "rossi" not in json.dumps(nothing)
    assert nothing["prompt"] == summary["prompt"]  # the same prompt: the same size and hash
