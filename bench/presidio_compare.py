"""How Microsoft Presidio's analyzer compares, pattern recognizers only: `python bench/presidio_compare.py`
in a separate virtualenv (Presidio pulls in spaCy, which the app does not ship):

    python3.13 -m venv /tmp/presidio && /tmp/presidio/bin/pip install presidio-analyzer==2.2.366
    /tmp/presidio/bin/python bench/presidio_compare.py

Presidio's default engine downloads an NLP model at start-up; here it gets a blank spaCy pipeline
instead, so only its pattern recognizers run (its e-mail recognizer still tries to download the
public suffix list on first use). Prints import and start-up time, throughput and time per 2 KB text
on the same kind of text as `python -m bench.privacy`. Results are quoted in docs/privacy.md.
"""

from __future__ import annotations

import time

PII = (
    "Please reply to jane.roe@example.org or call +44 20 7946 0958; my card is 4111 1111 1111 1111 "
    "and the refund goes to IBAN DE89 3704 0044 0532 0130 00. Server 10.20.30.40 logged it. "
)
PROSE = (
    "The committee reviewed the quarterly budget and agreed to revisit the hiring plan after the "
    "product launch, noting that customer feedback had improved across every region. "
)


def main() -> None:
    started = time.perf_counter()
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    imported = time.perf_counter()

    class BlankEngine(SpacyNlpEngine):  # no model: a tokenizer only
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
    ):
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
    ready = time.perf_counter()
    text = "".join(PII if i % 10 == 9 else PROSE for i in range(1200))[:200_000]
    analyzer.analyze(text[:2000], language="en")  # first use (the suffix-list attempt)
    start = time.process_time()
    analyzer.analyze(text, language="en")
    seconds = time.process_time() - start
    start = time.process_time()
    for _ in range(50):
        analyzer.analyze(text[:2000], language="en")
    small = (time.process_time() - start) / 50
    print(f"import {imported - started:.2f} s, start-up {ready - imported:.2f} s")
    print(f"200 KB: {seconds:.2f} s CPU, {len(text) / 1e6 / seconds:.3f} MB/s; 2 KB: {small * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
