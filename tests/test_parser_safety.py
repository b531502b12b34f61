"""The parser handler with content safety: memory ports, the real SDK client and the fake Content
Safety server on loopback. Every record is checked against the usage-record schema."""

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from parser import enrich
from parser.enrich import Enricher, analysis_deadline
from parser.handler import handle_batch
from shared.normalize import record_schema
from shared.safety.config import SafetyConfig
from shared.settings import Settings
from shared.wiring import build_content_safety
from testing.factories import exchange, text_stream
from testing.fakes.content_safety import FakeContentSafety
from testing.memory import memory_ports

NO_WAIT = dict(delays=(0, 0, 0), sleep=lambda s: _noop())


async def _noop():
    return None


@pytest.fixture
async def fake():
    server = FakeContentSafety(key="test-key")
    await server.start()
    yield server
    await server.stop()


def _settings(fake=None, **env):
    base = {"CONTENT_SAFETY_RETRY_BACKOFF_SECONDS": "0.01", "CONTENT_SAFETY_MAX_RETRIES": "2"}
    if fake is not None:
        base |= {"CONTENT_SAFETY_ENDPOINT": fake.base_url, "CONTENT_SAFETY_KEY": "test-key"}
    return Settings.from_env({**base, **env})


@pytest.fixture
async def wired(fake):
    """Memory ports with the Content Safety client the wiring builds, and the enricher from the same settings."""

    async def make(**env):
        settings = _settings(fake, **env)
        ports = memory_ports()
        ports.safety = build_content_safety(settings)
        made.append(ports)
        return ports, Enricher.from_settings(settings)

    made = []
    yield make
    for ports in made:
        await ports.safety.close()


def _chat(rid, text, *, product="standard", prompt="hi"):
    ex = exchange(
        request_id=rid,
        body={"messages": [{"role": "user", "content": prompt}], "stream": True},
        sse_text=text_stream(re.findall(r"\S+\s*", text)),
    )
    ex.identity.product = product
    return ex


async def _run(ports, enricher, *exchanges, **kw):
    for ex in exchanges:
        await ports.exchanges.save(ex)
    result = await handle_batch([ex.request_id for ex in exchanges], ports, enricher=enricher, **NO_WAIT, **kw)
    for record in ports.sink.emitted:
        record_schema.validate(record)
    return result


async def test_flagged_completion_gives_the_category_severity_and_content_safety_as_source(fake, wired):
    ports, enricher = await wired()
    result = await _run(ports, enricher, _chat("bad", "here it is VIOLENCE_LEVEL_6 sorry"), _chat("calm", "all good"))
    assert result.recorded == ["bad", "calm"]
    bad, calm = ports.records.records["bad"]["safety"], ports.records.records["calm"]["safety"]
    assert bad["status"] == "flagged" and bad["flagged_by"] == ["content_safety"]
    assert bad["completion"]["Violence"] == 6 and bad["completion"]["Hate"] == 0
    assert bad["characters_analyzed"] == len("here it is VIOLENCE_LEVEL_6 sorry") and bad["error"] is None
    assert calm["status"] == "ok" and calm["flagged_by"] == []
    # The fake saw the consolidated completion (not chunks) and no prompt (prompt analysis is off).
    assert sorted(b["text"] for b in fake.calls("text:analyze")) == ["all good", "here it is VIOLENCE_LEVEL_6 sorry"]
    assert sorted(r["request_id"] for r in ports.sink.emitted) == ["bad", "calm"]  # emitted as each finishes


async def test_product_thresholds_and_prompt_analysis_from_settings(fake, wired):
    ports, enricher = await wired(
        CONTENT_SAFETY_THRESHOLDS='{"default": {"Hate": 6}, "kids": {"Hate": 2}}', CONTENT_SAFETY_ANALYZE_PROMPT="true"
    )
    await _run(
        ports,
        enricher,
        _chat("adult", "HATE_LEVEL_4 text"),
        _chat("kid", "HATE_LEVEL_4 text", product="kids"),
        _chat("prompted", "fine", prompt="SELFHARM_LEVEL_4 question"),
    )
    records = ports.records.records
    assert records["adult"]["safety"]["status"] == "ok" and records["adult"]["safety"]["completion"]["Hate"] == 4
    assert records["kid"]["safety"]["status"] == "flagged"
    assert records["prompted"]["safety"]["prompt"]["SelfHarm"] == 4
    assert records["prompted"]["safety"]["flagged_by"] == ["content_safety"]


def _filtered_exchange(rid):
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "I cannot"},
                "finish_reason": "content_filter",
                "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    return exchange(request_id=rid, body={"messages": [{"role": "user", "content": "hi"}]}, response_body=body)


async def test_aoai_content_filter_is_named_as_a_source_beside_content_safety(fake, wired):
    ports, enricher = await wired()
    await _run(ports, enricher, _filtered_exchange("f"))
    record = ports.records.records["f"]
    assert record["content_filter"]["filtered"] is True
    assert record["safety"]["status"] == "flagged" and record["safety"]["flagged_by"] == ["aoai"]
    assert record["safety"]["completion"] == {"Hate": 0, "SelfHarm": 0, "Sexual": 0, "Violence": 0}


async def test_aoai_content_filter_flags_even_with_content_safety_off():
    ports = memory_ports()
    await _run(ports, Enricher.from_settings(_settings()), _filtered_exchange("f"))
    assert ports.records.records["f"]["safety"] == {"status": "flagged", "flagged_by": ["aoai"]}


async def test_outage_is_recorded_as_error_and_the_record_is_still_stored_and_emitted(fake, wired):
    ports, enricher = await wired()
    fake.fail(500, times=100)
    result = await _run(ports, enricher, _chat("down", "VIOLENCE_LEVEL_6 anyway"))
    assert result.recorded == ["down"] and not ports.deadletters.letters
    safety = ports.records.records["down"]["safety"]
    assert safety["status"] == "error" and "HTTP 500" in safety["error"] and "test-key" not in safety["error"]
    assert ports.sink.emitted[0]["safety"] == safety
    assert ports.sink.emitted[0]["cost"] is not None  # the rest of the record is whole
    assert len(fake.calls("text:analyze")) == 3  # first try + CONTENT_SAFETY_MAX_RETRIES=2


async def test_no_endpoint_means_skipped_and_no_client():
    settings = _settings()
    assert build_content_safety(settings) is None
    ports = memory_ports()
    await _run(ports, Enricher.from_settings(settings), _chat("s", "VIOLENCE_LEVEL_6 words"))
    assert ports.records.records["s"]["safety"] == {"status": "skipped"}


async def test_default_handler_without_an_enricher_still_prices_and_skips_safety():
    ports = memory_ports()
    await _run(ports, None, _chat("d", "hello"))
    record = ports.records.records["d"]
    assert record["safety"] == {"status": "skipped"} and record["price_version"] and record["cost"] is not None


async def test_exchanges_that_never_reached_the_model_are_not_sent(fake, wired):
    ports, enricher = await wired(CONTENT_SAFETY_ANALYZE_PROMPT="true")
    throttled = exchange(
        request_id="t",
        status=429,
        body={"messages": [{"role": "user", "content": "VIOLENCE_LEVEL_6"}]},
        response_body={"error": {"code": "429", "message": "slow down"}},
    )
    gateway = exchange(
        request_id="g",
        status=401,
        body={"messages": [{"role": "user", "content": "VIOLENCE_LEVEL_6"}]},
        response_body={"error": {"code": "401", "message": "no key"}},
        gateway_error={"code": "401", "message": "no key"},
    )
    await _run(ports, enricher, throttled, gateway)
    assert ports.records.records["t"]["safety"] == {"status": "skipped"}
    assert ports.records.records["g"]["safety"] == {"status": "skipped"}
    assert fake.requests == []


async def test_in_stream_enforcement_outcome_is_merged(fake, wired):
    ports, enricher = await wired()
    ex = _chat("e", "partial text")
    ex.enforcement = {
        "mode": "enforce",
        "action": "blocked",
        "source": "content_safety",
        "window_index": 2,
        "categories": {"Violence": 6},
        "severities": {"Violence": 6},
        "blocklist_hits": [],
        "windows_analyzed": 3,
        "characters_analyzed": 2700,
        "characters_released": 1800,
        "errors": [],
    }
    await _run(ports, enricher, ex)
    safety = ports.records.records["e"]["safety"]
    assert safety["status"] == "flagged" and safety["flagged_by"] == ["enforcement"]
    assert safety["enforcement"]["window_index"] == 2 and safety["enforcement"]["action"] == "blocked"


async def test_analysis_runs_concurrently_across_the_events_of_a_batch_within_the_bound(fake, wired):
    ports, enricher = await wired()
    fake.latency = 0.05
    in_flight = peak = 0
    client = ports.safety

    class Counting:
        async def analyze_text(self, text, blocklists=()):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await client.analyze_text(text, blocklists)
            finally:
                in_flight -= 1

        async def shield_prompt(self, prompt, documents=()):
            return await client.shield_prompt(prompt, documents)

        async def close(self):
            await client.close()

    ports.safety = Counting()
    result = await _run(ports, enricher, *(_chat(f"c{i}", f"text {i}") for i in range(12)), concurrency=4)
    assert result.recorded == [f"c{i}" for i in range(12)]
    assert peak == 4
    assert all(r["safety"]["status"] == "ok" for r in ports.records.records.values())


async def test_redelivered_batch_does_not_pay_content_safety_again(fake, wired):
    ports, enricher = await wired()
    await _run(ports, enricher, _chat("once", "hello there"))
    calls = len(fake.calls("text:analyze"))
    again = await handle_batch([b"once", b"once"], ports, enricher=enricher, **NO_WAIT)
    assert again.duplicates == ["once", "once"] and len(fake.calls("text:analyze")) == calls == 1
    assert len(ports.sink.emitted) == 1


async def test_same_request_id_twice_in_one_batch_is_recorded_once():
    ports = memory_ports()
    await ports.exchanges.save(_chat("x", "hi"))
    result = await handle_batch([b"x", b"y", b"x"], ports, **NO_WAIT)
    assert result.recorded == ["x"] and result.duplicates == ["x"] and result.deadlettered == ["y"]


class _Hung:
    async def analyze_text(self, text, blocklists=()):
        await asyncio.Event().wait()

    async def shield_prompt(self, prompt, documents=()):
        await asyncio.Event().wait()


async def test_a_hung_analyser_cannot_hold_the_record_back():
    settings = _settings(
        CONTENT_SAFETY_ENDPOINT="http://127.0.0.1:9",
        CONTENT_SAFETY_KEY="k",
        CONTENT_SAFETY_TIMEOUT_SECONDS="0.05",
        CONTENT_SAFETY_MAX_RETRIES="0",
        CONTENT_SAFETY_MAX_RETRY_AFTER_SECONDS="0",
    )
    enricher = Enricher.from_settings(settings)
    assert analysis_deadline(enricher.safety) == pytest.approx(0.1)
    ports = memory_ports()
    ports.safety = _Hung()
    result = await _run(ports, enricher, _chat("h", "words"))
    assert result.recorded == ["h"]
    safety = ports.records.records["h"]["safety"]
    assert safety["status"] == "error" and "did not finish within 0.1 s" in safety["error"]


async def test_a_defect_in_the_analysis_is_an_error_not_a_lost_record(monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("defect")

    monkeypatch.setattr(enrich, "analyze", broken)
    settings = _settings(CONTENT_SAFETY_ENDPOINT="http://127.0.0.1:9", CONTENT_SAFETY_KEY="k")
    ports = memory_ports()
    ports.safety = _Hung()
    result = await _run(ports, Enricher.from_settings(settings), _chat("d", "words"))
    assert result.recorded == ["d"]
    assert ports.records.records["d"]["safety"] == {
        "status": "error",
        "flagged_by": [],
        "error": "RuntimeError: defect",
    }


def test_default_deadline_covers_the_worst_case_of_the_retries():
    config = SafetyConfig(endpoint="https://x", max_retries=3, timeout_seconds=10, max_retry_after_seconds=10)
    assert analysis_deadline(config) == 2 * (4 * 10 + 3 * 10)


async def test_replay_checks_content_safety_when_configured(fake, tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(
        "\n".join(json.dumps(_chat(r, t).to_dict()) for r, t in (("r1", "SEXUAL_LEVEL_4 here"), ("r2", "fine")))
    )
    env = {**os.environ, "CONTENT_SAFETY_ENDPOINT": fake.base_url, "CONTENT_SAFETY_KEY": "test-key"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parser",
        "replay",
        str(f),
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["request_id"] for r in records] == ["r1", "r2"]
    assert records[0]["safety"]["status"] == "flagged" and records[0]["safety"]["completion"]["Sexual"] == 4
    assert records[1]["safety"]["status"] == "ok" and records[1]["cost"] is not None
    for record in records:
        record_schema.validate(record)
    assert len(fake.calls("text:analyze")) == 2


async def test_a_safety_verdict_off_the_schema_becomes_an_error_verdict(monkeypatch):
    monkeypatch.setattr(enrich, "merge_aoai_verdicts", lambda safety, cf: {**safety, "status": "weird"})
    ports = memory_ports()
    result = await _run(ports, Enricher(), _chat("w", "words"))
    assert result.recorded == ["w"]
    safety = ports.records.records["w"]["safety"]
    assert safety["status"] == "error" and safety["error"].startswith(
        "safety verdict failed schema validation: safety/status"
    )


async def test_a_malformed_enforcement_value_is_ignored():
    ports = memory_ports()
    ex = _chat("m", "words")
    ex.enforcement = ["not", "an", "object"]
    await _run(ports, Enricher(), ex)
    assert ports.records.records["m"]["safety"] == {"status": "skipped"}
