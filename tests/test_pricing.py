"""Cost of usage records against hand-computed examples from shared/pricing/prices.json."""

from __future__ import annotations

import json

import pytest

from shared.errors import ConfigurationError
from shared.pricing.book import DEFAULT_BOOK_PATH, load_book, parse_book
from shared.pricing.cost import cost_of
from shared.pricing.deployments import DeploymentModel, parse_deployment_models

BOOK = load_book()
VERSION = "aoai-retail-2026-08-11+audio-batch"


def rec(**fields):
    base = {
        "timestamp": "2025-09-15T10:00:00Z",
        "deployment": "d",
        "model": None,
        "api": "chat.completions",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "image_count": 0,
    }
    base.update(fields)
    return base


def test_chat_gpt4o_global():
    # gpt-4o global: input 2.50, output 10.00 USD per 1M tokens.
    # 1,200 * 2.50 / 1e6 = 0.003; 350 * 10.00 / 1e6 = 0.0035; total 0.0065
    r = rec(model="gpt-4o-2024-08-06", prompt_tokens=1200, completion_tokens=350)
    assert cost_of(r, BOOK) == (pytest.approx(0.0065), None, VERSION)


def test_cached_prompt_tokens_billed_at_cached_price():
    # gpt-4o-mini global: input 0.15, cached 0.075, output 0.60.
    # uncached 10,000 - 8,000 = 2,000 * 0.15 = 300; cached 8,000 * 0.075 = 600; output 100 * 0.60 = 60
    # (300 + 600 + 60) / 1e6 = 0.00096
    r = rec(model="gpt-4o-mini-2024-07-18", prompt_tokens=10_000, cached_tokens=8_000, completion_tokens=100)
    cost, reason, _ = cost_of(r, BOOK)
    assert reason is None
    assert cost == pytest.approx(0.00096)


def test_reasoning_tokens_are_inside_completion_tokens_and_not_billed_twice():
    # o4-mini global: input 1.10, output 4.40. completion_tokens 2,000 already include 1,500 reasoning.
    # 500 * 1.10 = 550; 2,000 * 4.40 = 8,800; (550 + 8,800) / 1e6 = 0.00935
    r = rec(model="o4-mini-2025-04-16", prompt_tokens=500, completion_tokens=2000, reasoning_tokens=1500)
    assert cost_of(r, BOOK)[0] == pytest.approx(0.00935)


def test_embeddings_bill_input_only():
    # text-embedding-3-small global: 0.02 per 1M. 50,000 * 0.02 / 1e6 = 0.001
    r = rec(api="embeddings", model="text-embedding-3-small", prompt_tokens=50_000)
    assert cost_of(r, BOOK)[0] == pytest.approx(0.001)


def test_dalle3_per_image_with_size_and_quality():
    # dall-e-3 global: hd 1792x1024 0.12 per image; 3 images = 0.36
    r = rec(
        api="images.generations", model="dall-e-3", image_count=3, usage_details={"size": "1792x1024", "quality": "hd"}
    )
    assert cost_of(r, BOOK)[0] == pytest.approx(0.36)


def test_dalle3_default_size_and_quality_are_the_api_defaults():
    # standard 1024x1024 = 0.04 per image; 2 images = 0.08
    r = rec(api="images.generations", model="dall-e-3", image_count=2)
    assert cost_of(r, BOOK)[0] == pytest.approx(0.08)


def test_gpt_image_1_tokens_with_image_input():
    # gpt-image-1 global from 2025-06-01: text input 5.00, image input 10.00, output 40.00 per 1M.
    # prompt 1,100 of which 1,000 image tokens: text 100 * 5 = 500; image 1,000 * 10 = 10,000;
    # output 4,160 * 40 = 166,400; (500 + 10,000 + 166,400) / 1e6 = 0.1769
    r = rec(
        api="images.generations",
        model="gpt-image-1",
        image_count=1,
        prompt_tokens=1100,
        completion_tokens=4160,
        usage_details={"input_tokens_details": {"text_tokens": 100, "image_tokens": 1000}},
    )
    assert cost_of(r, BOOK)[0] == pytest.approx(0.1769)


def test_deployment_mapping_sets_model_and_type():
    # The deployment "chat" is gpt-4o on a data-zone deployment: input 2.75, cached 1.375, output 11.00.
    # (1,000 - 400) * 2.75 = 1,650; 400 * 1.375 = 550; 200 * 11 = 2,200; 4,400 / 1e6 = 0.0044
    mapping = parse_deployment_models('{"chat": {"model": "gpt-4o-2024-11-20", "type": "data_zone"}}')
    r = rec(deployment="chat", model="gpt-4o", prompt_tokens=1000, cached_tokens=400, completion_tokens=200)
    assert cost_of(r, BOOK, mapping)[0] == pytest.approx(0.0044)


def test_entry_in_effect_at_the_record_time_is_chosen():
    # gpt-image-1 had no cached price before 2025-06-01: cached tokens in May are zero-rated
    # (50 uncached * 5 = 250 / 1e6), never billed at the full input price.
    may = rec(timestamp="2025-05-10T00:00:00Z", model="gpt-image-1", prompt_tokens=100, cached_tokens=50)
    assert cost_of(may, BOOK)[:2] == (pytest.approx(0.00025), None)
    # After 2025-06-01: 50 * 5 + 50 * 1.25 = 312.5 / 1e6
    june = dict(may, timestamp="2025-06-02T00:00:00Z")
    assert cost_of(june, BOOK)[0] == pytest.approx(0.0003125)
    # Before gpt-4.1 existed in the book: no price in effect.
    early = rec(timestamp="2024-01-01T00:00:00Z", model="gpt-4.1", prompt_tokens=10)
    assert cost_of(early, BOOK)[:2] == (None, "no_price_in_effect:gpt-4.1/global")


def test_version_suffix_rules_do_not_confuse_mini_with_base():
    assert BOOK.resolve_model("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert BOOK.resolve_model("gpt-4o-2024-11-20") == "gpt-4o"
    assert BOOK.resolve_model("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    assert BOOK.resolve_model("o3-mini-2025-01-31") == "o3-mini"
    assert BOOK.resolve_model("gpt-4o-realtime-preview") is None


def test_unknown_model_gives_null_with_reason():
    r = rec(model="my-finetune-xyz", prompt_tokens=10, completion_tokens=10)
    assert cost_of(r, BOOK) == (None, "unknown_model:my-finetune-xyz", VERSION)
    assert cost_of(rec(model=None, prompt_tokens=3), BOOK) == (None, "unknown_model:none", VERSION)


def test_unknown_type_gives_null_with_reason():
    mapping = {"d": DeploymentModel(model="gpt-4o", type="standard")}
    assert cost_of(rec(model="gpt-4o", prompt_tokens=5), BOOK, mapping)[:2] == (
        None,
        "unknown_deployment_type:standard",
    )


@pytest.mark.parametrize("dtype", ["provisioned", "global_provisioned", "data_zone_provisioned"])
def test_provisioned_has_no_per_token_price(dtype):
    mapping = {"d": DeploymentModel(model="gpt-4o", type=dtype)}
    r = rec(model="gpt-4o", prompt_tokens=1000, completion_tokens=1000)
    assert cost_of(r, BOOK, mapping) == (None, "provisioned", VERSION)


def test_record_without_usage_costs_zero_even_without_a_model():
    # A throttled request never reached a model: nothing to bill, whatever the model.
    assert cost_of(rec(model="gpt-4o", status_code=429), BOOK)[:2] == (0.0, None)
    assert cost_of(rec(model=None, status_code=429), BOOK)[:2] == (0.0, None)
    mapping = {"d": DeploymentModel(model="gpt-4o", type="provisioned")}
    assert cost_of(rec(model=None, status_code=429), BOOK, mapping)[:2] == (None, "provisioned")


def test_every_book_entry_has_a_source_and_date_and_positive_prices():
    data = json.loads(DEFAULT_BOOK_PATH.read_text())
    for name, row in data["models"].items():
        for entry in row["prices"]:
            assert entry["source"] and entry["effective_from"], name
            priced = {
                "input",
                "cached_input",
                "output",
                "input_audio",
                "output_audio",
                "per_minute",
                "per_million_characters",
            }
            prices = [v for k, v in entry.items() if k in priced and v is not None]
            prices += list(entry.get("per_image", {}).values())
            assert prices and all(p > 0 for p in prices), name


def test_bad_book_and_bad_mapping_fail_clearly():
    with pytest.raises(ConfigurationError, match="unknown type"):
        parse_book(
            {
                "version": "x",
                "deployment_types": ["global"],
                "models": {
                    "m": {
                        "kind": "tokens",
                        "prices": [{"type": "zonal", "effective_from": "2025-01-01", "source": "s"}],
                    }
                },
            }
        )
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        parse_deployment_models("{nope")
    with pytest.raises(ConfigurationError, match="must be an object"):
        parse_deployment_models('{"d": "gpt-4o"}')
    assert parse_deployment_models("") == {}
