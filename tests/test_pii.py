"""The PII recognizers: real-world formats are found, near-misses (order numbers, dates, amounts,
versions, ids, numbers whose check digits fail) are left alone, placeholders are stable per exchange."""

from __future__ import annotations

import pytest

from shared.privacy.pii import PiiRedactor, Placeholders, find

PII = PiiRedactor()


def kinds(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to john.doe+news@mail.example.co.uk today", "EMAIL", "john.doe+news@mail.example.co.uk"),
        ("Kontakt: müller@beispiel.de.", "EMAIL", "müller@beispiel.de"),
        ("call +1 415-555-0132 now", "PHONE", "+1 415-555-0132"),
        ("call (415) 555-0132 now", "PHONE", "(415) 555-0132"),
        ("London office +44 20 7946 0958", "PHONE", "+44 20 7946 0958"),
        ("Tel. 030 12345678 (Berlin)", "PHONE", "030 12345678"),
        ("Appelez le 0033 1 42 68 53 00", "PHONE", "0033 1 42 68 53 00"),
        ("card 4111 1111 1111 1111 exp 12/29", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("amex 3782-822463-10005", "CREDIT_CARD", "3782-822463-10005"),
        ("mc 5555555555554444.", "CREDIT_CARD", "5555555555554444"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN", "DE89 3704 0044 0532 0130 00"),
        ("to GB82WEST12345698765432", "IBAN", "GB82WEST12345698765432"),
        ("FR14 2004 1010 0505 0001 3M02 606", "IBAN", "FR14 2004 1010 0505 0001 3M02 606"),
        ("from 192.168.1.20:8080", "IP_ADDRESS", "192.168.1.20"),
        ("host 2001:db8::8a2e:370:7334 down", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("mapped ::ffff:10.0.0.1 here", "IP_ADDRESS", "::ffff:10.0.0.1"),
        ("SSN 536-90-4399 on file", "US_SSN", "536-90-4399"),
        ("my ssn is 536904399", "US_SSN", "536904399"),
        ("NIR 1 84 12 76 451 089 46", "FR_NIR", "1 84 12 76 451 089 46"),
        ("codice fiscale RSSMRA85T10A562S", "IT_FISCAL_CODE", "RSSMRA85T10A562S"),
        ("DNI 12345678Z", "ES_DNI", "12345678Z"),
        ("NIE X1234567L", "ES_NIE", "X1234567L"),
        ("henkilötunnus 131052-308T", "FI_HETU", "131052-308T"),
        ("personnummer 811218-9876", "SE_PERSONNUMMER", "811218-9876"),
        ("Steuer-IdNr: 86095742719", "DE_TAX_ID", "86095742719"),
        ("BSN 111222333", "NL_BSN", "111222333"),
        ("PESEL 44051401359", "PL_PESEL", "44051401359"),
    ],
)
def test_real_world_formats_are_found(text: str, kind: str, value: str) -> None:
    assert kinds(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "Order 12345678 shipped on 2024-12-06, invoice 2024/118, ref A-77213.",
        "Meeting 06/12/2024 at 12:30:45, room 4.01.",
        "Total 1,234,567.89 EUR; 12.345.678 units; pi is 3.14159265358979.",
        "Upgrade to version 1.2.3 (build 2024.12.06.1); semver 10.4.2-rc1.",
        "ids: chatcmpl-AbC123456, fp_4f2d1a9b0c, call_8L3mQ, resp_67ab12cd.",
        "Card-like but failing Luhn: 4111 1111 1111 1112; not a card prefix: 1234 5678 9012 3456.",
        "IBAN-like but failing mod 97: DE89 3704 0044 0532 0130 01.",
        "SSN-like but invalid: 000-12-3456, 666-12-3456, 912-34-5678.",
        "Order number 86095742719 and batch 44051401359 (no identifier named).",
        "Reference 111222333 for the shipment.",
        "Not an address: 300.1.1.1, 1.2.3, v1.2.3.4.",
        "Timestamps 1733450000 and 1733450000123; a year 2026; a zip 94105.",
        "Write to support at example dot com; user@localhost is no e-mail either.",
        "The ratio 2:3:4 and the time 10:30 are not addresses.",
        "sha256 0a8c93a4c23523047ee51e40029178906757febf62e6a31b5f3d561f943bb58f, uuid f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "at 2026-12-06T00:00:00.000Z; traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "ISBN 978-3-16-148410-0, GTIN 4006381333931, tracking 1Z999AA10123456784, ports 8080 and 443.",
        "token ids [15339, 1917, 0]; api-version 2024-10-21; ids call_abc123 and resp_0123456789abcdef.",
    ],
)
def test_near_misses_are_not_redacted(text: str) -> None:
    assert kinds(text) == []
    assert PII.text(text, Placeholders()) == text


def test_the_same_value_gets_the_same_placeholder_within_one_exchange() -> None:
    names = Placeholders()
    first = PII.text("Mail Jane.Roe@example.org or call +1 415-555-0132.", names)
    second = PII.text("Yes, jane.roe@example.org and (415) 555-0132; also bob@example.org.", names)
    assert first == "Mail <EMAIL_1> or call <PHONE_1>."
    assert second == "Yes, <EMAIL_1> and <PHONE_1>; also <EMAIL_2>."
    assert names.distinct == {"EMAIL": 2, "PHONE": 1}
    # Another exchange numbers from 1 again: placeholders never link two exchanges.
    assert PII.text("bob@example.org", Placeholders()) == "<EMAIL_1>"


def test_secrets_go_through_the_shared_redactor_first() -> None:
    text = "key sk-abcdefghijklmnopqrstuvwx1234 and jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl to a@b.io"
    assert PII.text(text, Placeholders()) == "key [REDACTED] and jwt [REDACTED] to <EMAIL_1>"
    assert PiiRedactor(secrets=False).text("a@b.io", Placeholders()) == "<EMAIL_1>"


def test_json_values_are_walked_at_any_depth_and_keys_and_numbers_kept() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "ip 10.1.2.3"}]}],
        "metadata": {"a@b.io": "x"},
        "max_tokens": 4111111111111111,
        "deep": [[[["call +1 415-555-0132"]]]],
    }
    out = PII.json(body, Placeholders())
    assert out["messages"][0]["content"][0]["text"] == "ip <IP_ADDRESS_1>"
    assert out["metadata"] == {"a@b.io": "x"} and out["max_tokens"] == 4111111111111111
    assert out["deep"] == [[[["call <PHONE_1>"]]]]
    assert body["messages"][0]["content"][0]["text"] == "ip 10.1.2.3"  # the input is not changed


def test_a_thousand_deep_body_does_not_exhaust_the_stack() -> None:
    body: list = ["a@b.io"]
    for _ in range(1000):
        body = [body]
    out = PII.json(body, Placeholders())
    for _ in range(1000):
        out = out[0]
    assert out == ["<EMAIL_1>"]


def test_texts_found_clean_are_remembered_and_nothing_else():
    """Header values recur on every request: a text the patterns found nothing in is not scanned
    again (same answer), a text with personal data is never taken for clean, the memo is bounded,
    and a redactor with a second stage (or secrets) keeps no memo at all."""
    from shared.privacy import pii

    redactor = PiiRedactor(secrets=False)
    names = Placeholders()
    assert redactor.text("keep-alive", names) == "keep-alive"
    assert redactor.text("keep-alive", Placeholders()) == "keep-alive"  # answered from the memo
    assert redactor._clean is not None and "keep-alive" in redactor._clean
    for _ in range(2):  # the second time too: a finding is never remembered as clean
        assert redactor.text("from 192.168.10.20", Placeholders()) == "from <IP_ADDRESS_1>"
    assert "from 192.168.10.20" not in redactor._clean
    for i in range(pii.CLEAN_TEXTS + 10):
        redactor.text(f"request-{i:x}", names)
    assert len(redactor._clean) <= pii.CLEAN_TEXTS

    class SecondStage:
        kind, priority = "PERSON", 0

        def find(self, text: str) -> list[pii.Finding]:
            return []

    assert PiiRedactor([*pii.RECOGNIZERS, SecondStage()], secrets=False)._clean is None
    assert PiiRedactor(secrets=True)._clean is None
