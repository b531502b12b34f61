"""Billable or not, per operation: reading, listing, deleting or cancelling never bills again."""

import pytest

from parser.enrich import default_book
from shared.normalize import record_schema
from shared.normalize.apis import billable, classify, operation
from shared.normalize.usage import normalize
from shared.pricing.cost import cost_of
from testing.factories import exchange

_STORED_RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-4o-2024-08-06",
    "output": [{"type": "message", "content": [{"type": "output_text", "text": "hello"}]}],
    "usage": {"input_tokens": 8, "output_tokens": 59, "total_tokens": 67},
}


@pytest.mark.parametrize(
    ("method", "path", "expected_op"),
    [
        ("GET", "/openai/v1/responses/resp_1", "retrieve"),
        ("DELETE", "/openai/v1/responses/resp_1", "delete"),
        ("GET", "/openai/v1/responses/resp_1/input_items", "list"),
        ("POST", "/openai/v1/responses/resp_1/cancel", "cancel"),
        ("GET", "/openai/models", "list"),
        ("GET", "/openai/v1/models/gpt-4o", "retrieve"),
        ("GET", "/openai/files", "list"),
        ("POST", "/openai/files", "create"),
        ("GET", "/openai/v1/files/file-1/content", "content"),
        ("GET", "/openai/batches/batch_1", "retrieve"),
        ("POST", "/openai/v1/batches/batch_1/cancel", "cancel"),
        ("GET", "/openai/v1/fine_tuning/jobs", "list"),
        ("GET", "/openai/v1/vector_stores/vs_1", "retrieve"),
    ],
)
def test_non_generative_calls_are_not_billable(method, path, expected_op):
    route = classify(path)
    op = operation(method, path, route)
    assert op == expected_op
    assert billable(route.api if route else "other", op) is False


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/responses",
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/whisper/audio/transcriptions",
        "/openai/v1/embeddings",
    ],
)
def test_creating_an_answer_is_billable(path):
    route = classify(path)
    assert operation("POST", path, route) == "create" and billable(route.api, "create") is True


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/openai/v1/responses/resp_1"),
        ("DELETE", "/openai/v1/responses/resp_1"),
        ("GET", "/openai/v1/responses/resp_1/input_items"),
    ],
)
def test_retrieve_never_inherits_the_tokens_of_the_object_it_reads(method, path):
    record, _ = normalize(exchange(method=method, path=path, query={}, body=None, response_body=_STORED_RESPONSE))
    record_schema.validate(record)
    assert record["billable"] is False and record["api"] == "responses"
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (0, 0, 0)
    assert record["usage_source"] == "none" and record["finish_reasons"] == []
    assert cost_of(record, default_book())[:2] == (0.0, "not billable")


def test_create_still_bills_the_tokens_the_service_reported():
    record, _ = normalize(
        exchange(
            path="/openai/v1/responses",
            query={},
            body={"model": "gpt-4o", "input": "hi"},
            response_body=_STORED_RESPONSE,
        )
    )
    record_schema.validate(record)
    assert record["billable"] is True and record["operation"] == "create"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (8, 59)
    cost, reason, _ = cost_of(record, default_book())
    assert cost is not None and cost > 0 and reason is None
