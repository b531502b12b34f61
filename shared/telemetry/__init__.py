"""Telemetry helpers shared by the proxy and the parser (W3C trace context, conventions)."""
