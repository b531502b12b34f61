from shared.redaction import REDACTED, forwardable_query, redact_headers, redact_query


def test_secret_headers_are_redacted_whatever_their_case():
    out = redact_headers(
        [("Api-Key", "k1"), ("AUTHORIZATION", "Bearer t"), ("x-functions-key", "f"),
         ("Ocp-Apim-Subscription-Key", "s"), ("Content-Type", "application/json")]
    )
    assert out == {
        "api-key": REDACTED,
        "authorization": REDACTED,
        "x-functions-key": REDACTED,
        "ocp-apim-subscription-key": REDACTED,
        "content-type": "application/json",
    }


def test_repeated_headers_are_joined():
    assert redact_headers([("X-A", "1"), ("x-a", "2")]) == {"x-a": "1, 2"}


def test_query_credentials_are_redacted_and_not_forwarded():
    params = [("api-version", "2024-10-21"), ("api-key", "secret"), ("code", "fkey")]
    assert redact_query(params) == {"api-version": "2024-10-21", "api-key": REDACTED, "code": REDACTED}
    assert forwardable_query(params) == [("api-version", "2024-10-21")]
