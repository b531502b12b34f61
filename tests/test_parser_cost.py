"""Cost on parser records: the handler and `python -m parser replay` price every record from the book."""

import copy
import json

from parser import enrich
from parser.__main__ import main
from parser.enrich import Enricher
from parser.handler import handle_batch
from shared.normalize import record_schema
from shared.pricing.book import load_book, parse_book
from shared.settings import Settings
from testing.factories import exchange, text_stream
from testing.memory import memory_ports

NO_WAIT = dict(delays=(0, 0, 0), sleep=lambda s: _noop())
BOOK = load_book()


async def _noop():
    return None


def _chat(rid="c", *, model="gpt-4o-2024-08-06", path="/openai/deployments/gpt-4o/chat/completions", usage=None):
    usage = usage or {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    return exchange(
        request_id=rid,
        path=path,
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        sse_text=text_stream(["Hi"], model=model, usage=usage),
    )


async def _records(*exchanges, **settings_env):
    ports = memory_ports()
    for ex in exchanges:
        await ports.exchanges.save(ex)
    enricher = Enricher.from_settings(Settings.from_env(settings_env))
    await handle_batch([ex.request_id for ex in exchanges], ports, enricher=enricher, **NO_WAIT)
    for record in ports.sink.emitted:
        record_schema.validate(record)
    return ports.records.records


async def test_chat_priced_from_the_book():
    record = (await _records(_chat()))["c"]
    # gpt-4o global (prices.json, effective 2024-10-01): input 2.50, cached input 1.25, output 10.00 USD per 1M.
    # (1200 - 1024) * 2.50 + 1024 * 1.25 + 300 * 10.00 = 440 + 1280 + 3000 = 4720 -> 0.00472 USD
    assert record["cost"] == 0.00472
    assert (record["cost_reason"], record["price_version"], record["deployment_type"]) == (None, BOOK.version, "global")


async def test_deployment_mapping_picks_the_type_and_the_model():
    # AOAI reports a generic name; the mapping says it is gpt-4o-mini on a data-zone deployment.
    env = {"DEPLOYMENT_MODELS": json.dumps({"chat": {"model": "gpt-4o-mini-2024-07-18", "type": "data_zone"}})}
    record = (await _records(_chat(model="gpt-4o", path="/openai/deployments/chat/chat/completions"), **env))["c"]
    # gpt-4o-mini data_zone: 0.165 / 0.083 / 0.66 per 1M: 176 * 0.165 + 1024 * 0.083 + 300 * 0.66 = 29.04 + 84.992 + 198
    assert record["cost"] == round((29.04 + 84.992 + 198) / 1e6, 9)
    assert record["deployment_type"] == "data_zone"


async def test_provisioned_deployment_has_no_cost_and_says_why():
    env = {"DEPLOYMENT_MODELS": json.dumps({"gpt-4o": {"model": "gpt-4o-2024-08-06", "type": "provisioned"}})}
    record = (await _records(_chat(), **env))["c"]
    assert (record["cost"], record["cost_reason"], record["deployment_type"]) == (None, "provisioned", "provisioned")
    assert record["price_version"] == BOOK.version


async def test_unknown_model_has_no_cost_and_says_which():
    record = (await _records(_chat(model="my-finetune-7", path="/openai/deployments/ft/chat/completions")))["c"]
    assert (record["cost"], record["cost_reason"]) == (None, "unknown_model:my-finetune-7")


async def test_throttled_request_costs_nothing():
    throttled = exchange(
        request_id="t", status=429, body={"messages": []}, response_body={"error": {"code": "429", "message": "x"}}
    )
    record = (await _records(throttled))["t"]
    assert (record["cost"], record["cost_reason"]) == (0.0, None)


async def test_dall_e_3_priced_by_the_request_quality_and_size():
    body = {"created": 1, "data": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}]}
    hd = exchange(
        request_id="hd",
        path="/openai/deployments/dall-e-3/images/generations",
        body={"prompt": "a cat", "n": 2, "size": "1792x1024", "quality": "hd"},
        response_body=body,
    )
    plain = exchange(
        request_id="plain",
        path="/openai/deployments/dall-e-3/images/generations",
        body={"prompt": "a cat", "n": 2},
        response_body=body,
    )
    records = await _records(hd, plain)
    # dall-e-3 global per image: hd/1792x1024 0.12, standard/1024x1024 (the API defaults) 0.04.
    assert records["hd"]["cost"] == 0.24 and records["hd"]["usage_details"] == {"size": "1792x1024", "quality": "hd"}
    assert records["plain"]["cost"] == 0.08 and records["plain"]["usage_details"] is None


async def test_unreadable_timestamp_is_a_reason_not_a_lost_record():
    odd = _chat("odd")
    odd.timings.received_at = "yesterday"
    record = (await _records(odd))["odd"]
    assert record["cost"] is None and record["cost_reason"].startswith("cost_error:ValueError")


def test_replay_recosts_historic_exchanges_with_the_current_book(tmp_path, capsys, monkeypatch):
    old = _chat("old")
    old.timings.received_at = "2025-01-15T10:00:00.000Z"
    f = tmp_path / "history.jsonl"
    f.write_text(json.dumps(old.to_dict()) + "\n")

    assert main(["replay", str(f)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["cost"], first["price_version"]) == (0.00472, BOOK.version)

    # A new book: gpt-4o global halves from 2025-01-01, version bumped. Replay applies it to history.
    data = json.loads(open("shared/pricing/prices.json").read())
    entry = copy.deepcopy(next(e for e in data["models"]["gpt-4o"]["prices"] if e["type"] == "global"))
    entry.update(effective_from="2025-01-01", input=1.25, cached_input=0.625, output=5.0)
    data["models"]["gpt-4o"]["prices"].append(entry)
    data["version"] = "test-2025-01-01"
    monkeypatch.setattr(enrich, "default_book", lambda: parse_book(data))

    assert main(["replay", str(f)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["cost"], again["price_version"]) == (0.00236, "test-2025-01-01")
    record_schema.validate(again)


def test_replay_applies_deployment_models_from_the_environment(tmp_path, capsys, monkeypatch):
    f = tmp_path / "one.json"
    f.write_text(json.dumps(_chat("p").to_dict()))
    monkeypatch.setenv("DEPLOYMENT_MODELS", json.dumps({"gpt-4o": {"type": "provisioned"}}))
    assert main(["replay", str(f)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["cost"], record["cost_reason"], record["safety"]) == (None, "provisioned", {"status": "skipped"})
