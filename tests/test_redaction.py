from shared.redaction import REDACTED, forwardable_query, redact_body_secrets, redact_headers, redact_query


def test_secret_headers_are_redacted_whatever_their_case():
    out = redact_headers(
        [
            ("Api-Key", "k1"),
            ("AUTHORIZATION", "Bearer t"),
            ("x-functions-key", "f"),
            ("Ocp-Apim-Subscription-Key", "s"),
            ("Content-Type", "application/json"),
        ]
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


# --- JSON bodies --------------------------------------------------------------------------------

ON_YOUR_DATA = {
    "messages": [{"role": "user", "content": "What does the handbook say?"}],
    "data_sources": [
        {
            "type": "azure_search",
            "parameters": {
                "endpoint": "https://search.example",
                "index_name": "handbook",
                "authentication": {"type": "api_key", "key": "search-key-1"},
                "embedding_dependency": {
                    "type": "endpoint",
                    "endpoint": "https://e",
                    "authentication": {"type": "api_key", "key": "embed-key-2"},
                },
            },
        },
        {
            "type": "azure_cosmos_db",
            "parameters": {"authentication": {"type": "connection_string", "connection_string": "AccountKey=conn-3"}},
        },
        {
            "type": "elasticsearch",
            "parameters": {"authentication": {"type": "encoded_api_key", "encoded_api_key": "enc-4"}},
        },
        {"type": "azure_ml_index", "parameters": {"authentication": {"type": "access_token", "access_token": "tok-5"}}},
        {
            "type": "mongo_db",
            "parameters": {"authentication": {"type": "username_and_password", "username": "u", "password": "pw-6"}},
        },
        {"type": "pinecone", "parameters": {"authentication": {"type": "api_key", "KEY": "pine-7"}}},
        {"type": "azure_search", "parameters": {"authentication": {"type": "system_assigned_managed_identity"}}},
        {
            "type": "azure_search",
            "parameters": {
                "authentication": {
                    "type": "user_assigned_managed_identity",
                    "managed_identity_resource_id": "/subscriptions/s/mi",
                }
            },
        },
    ],
    "tools": [
        {
            "type": "mcp",
            "server_url": "https://mcp",
            "authorization": "Bearer mcp-8",
            "headers": {"X-Api-Key": "mcp-9", "accept": "application/json"},
        }
    ],
}


def test_on_your_data_credentials_are_redacted_and_the_rest_is_kept():
    out = redact_body_secrets(ON_YOUR_DATA)
    text = repr(out)
    for secret in ("search-key-1", "embed-key-2", "conn-3", "enc-4", "tok-5", "pw-6", "pine-7", "mcp-8", "mcp-9"):
        assert secret not in text
    sources = out["data_sources"]
    assert sources[0]["parameters"]["authentication"] == {"type": "api_key", "key": REDACTED}
    assert sources[0]["parameters"]["index_name"] == "handbook"
    assert sources[4]["parameters"]["authentication"]["username"] == "u"
    # Managed identities carry no secret: their objects are the very same ones.
    assert sources[6] is ON_YOUR_DATA["data_sources"][6] and sources[7] is ON_YOUR_DATA["data_sources"][7]
    assert out["tools"][0]["headers"] == {"X-Api-Key": REDACTED, "accept": "application/json"}
    assert out["messages"] is ON_YOUR_DATA["messages"]
    # The input is never changed: the upstream call still needs the credentials.
    assert ON_YOUR_DATA["data_sources"][0]["parameters"]["authentication"]["key"] == "search-key-1"


def test_a_body_without_credentials_comes_back_as_the_same_object():
    body = {
        "messages": [{"role": "user", "content": "key password api_key"}],
        "metadata": {"key": "k"},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "login",
                    "parameters": {
                        "type": "object",
                        "properties": {"password": {"type": "string"}, "api_key": {"type": "string"}},
                    },
                },
            }
        ],
    }
    assert redact_body_secrets(body) is body
    for scalar in (None, "text", 3, [1, 2]):
        assert redact_body_secrets(scalar) is scalar
    redacted = redact_body_secrets(ON_YOUR_DATA)
    assert redact_body_secrets(redacted) is redacted  # idempotent


def test_a_list_of_scalars_is_skipped_whole_but_a_mixed_list_is_walked():
    tokens = {"input": [[1, 2, 3], [4, 5]]}
    assert redact_body_secrets(tokens) is tokens
    mixed = {"metadata": [1, "two", {"api_key": "hidden-1"}]}
    assert redact_body_secrets(mixed) == {"metadata": [1, "two", {"api_key": REDACTED}]}
    # A list under a secret name is a secret too (only an object, a schema, is looked into).
    assert redact_body_secrets({"password": ["hidden-2"]}) == {"password": REDACTED}


def test_the_anchored_shape_search_equals_the_pattern_over_the_whole_text():
    """`_redact_shapes` tries the pattern only near markers; seeded random texts built from secrets,
    near-misses and separators give exactly what `_SHAPES.sub` over the whole text gives."""
    import random

    from shared import redaction as r

    pieces = [
        "sk-" + "A" * 20,
        "xsk-" + "B" * 20,
        "Bearer abc.def_ghi123",
        "bearer authentication",
        "AccountKey=abc123",
        "SharedAccessSignature=sv=2020&sig=xyz",
        "eyJhbGciOi.eyJzdWIiOi.sig",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "api-key=zzz",
        "password=hunter2",
        "Pwd=p",
        "client_secret=s3",
        "access_token=t",
        "subscription_key=q",
        " basic ",
        "token=",
        "\u0130",  # lower-cases to two characters: the whole-text path
        "SIG=ABC",
    ]
    rnd = random.Random(7)
    for _ in range(5000):
        text = "".join(
            rnd.choice(pieces) if rnd.random() < 0.4 else rnd.choice("abc =-_.;&\"'\n")
            for _ in range(rnd.randint(1, 30))
        )
        assert r._redact_shapes(text) == r._SHAPES.sub(r._shape, text), text


def test_the_re2_screen_of_long_texts_changes_no_result():
    """Texts from 2 KB on are screened by one RE2 pass before the exact scans: seeded random long
    texts (secrets, near-misses, secret-named JSON pairs, Unicode case and whitespace variants) give
    exactly what the unscreened scans give, for shapes and for event streams."""
    import random

    from shared import redaction as r

    pieces = [
        "sk-" + "A" * 20,
        "Bearer abc.def_ghi123",
        "Account\u212aey=abc123",  # KELVIN SIGN lower-cases to k
        "SharedAccessSignature=sv=2020&sig=xyz",
        "EYJhbGciOi.eyJzdWIiOi.sig",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        "PASSWORD=hunter2",
        "\u0130",
        '"api_key": "v1"',
        '"x-Upstream-TOKEN" :\u00a0"v2"',
        '"client_secret"\u2028:"v3"',
        '"Api_Key"\t:\r\n "v4"',
        '"completion_tokens": 5',
        '"token": "word", "logprob": -0.1',
        '{"choices":[{"delta":{"content":"caf\u00e9 token"}}]}',
        "data: ",
    ]
    filler = '{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"delta":{"content":"x"}}]}\n\n'
    redactor = r.Redactor(["caller-key-123456"])
    rnd = random.Random(11)
    for _ in range(400):
        middle = "".join(rnd.choice(pieces) if rnd.random() < 0.3 else rnd.choice('ab =-_:"\n') for _ in range(20))
        text = filler * rnd.randint(24, 40) + middle + filler * rnd.randint(0, 3)
        if rnd.random() < 0.2:
            text = filler * 30  # nothing to find: the screen answers alone
        assert len(text) >= r._SCREEN_FROM
        screened = (r._redact_shapes(text), redactor.event_text(text))
        saved = r._SCREEN_FROM
        r._SCREEN_FROM = 10**9
        try:
            assert r._redact_shapes(text) == r._SHAPES.sub(r._shape, text), middle
            assert screened == (r._redact_shapes(text), redactor.event_text(text)), middle
        finally:
            r._SCREEN_FROM = saved
