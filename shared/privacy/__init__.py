"""Privacy: capture levels, PII redaction, retention and erasure (docs/privacy.md)."""
