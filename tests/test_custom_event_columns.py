"""The `AOAIUsage` custom event as the pinned azure-monitor-opentelemetry-exporter serializes it,
and the reports that read it: every KQL query, the workbook and the Power BI model read exactly the
columns the envelope has (dimensions as customDimensions, numbers as customMeasurements).

No network: the logging pipeline ends in an in-memory exporter, and the exporter's own
`_convert_log_to_envelope` builds the envelope it would send.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from shared.adapters.appinsights import EVENT_NAME, AppInsightsUsageSink, is_measurement
from tests.usage_records import make_record, validate

ROOT = Path(__file__).resolve().parents[1]
POWERBI = ROOT / "powerbi"
SCHEMA = json.loads((ROOT / "shared" / "normalize" / "schema" / "usage-record.schema.json").read_text())
PINNED = dict(
    line.strip().split("==", 1)
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if "==" in line and not line.lstrip().startswith("#")
)


def _full_record() -> dict:
    """A record with every schema field set (no nulls), so every column the event can have is there."""
    record = make_record(
        7,
        prompt_tokens=120,
        completion_tokens=30,
        reasoning_tokens=4,
        cached_tokens=64,
        cost=0.0123,
        cost_reason="priced",
        price_version="2025-09",
        error_code="none",
        parse_error="none",
        ttft_ms=95.5,
        latency_ms=812.25,
    )
    record.update(
        gateway_overhead_ms=1.75,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        usage_details={"audio_tokens": 0},
        estimation_notes=["n"],
        usage_injected=True,
        audience_rule="standard",
        cache={
            "status": "hit",
            "stored": None,
            "reason": None,
            "age_seconds": 3.5,
            "tokens_avoided": {"total_tokens": 9},
        },
        cost_avoided=0.004,
        prompt_shields={"jailbreak": {"detected": True, "filtered": False}, "indirect_attack": None},
        prompt_blocked_reason="jailbreak",
        capture_level="redacted",
        budget={
            "budgets": ["team-a"],
            "downgraded_from": "gpt-4.1",
            "store_error": False,
            "settled": True,
            "soft_crossed": [],
        },
    )
    missing = [name for name in SCHEMA["properties"] if record.get(name) is None]
    assert not missing, f"fill these schema fields in the test record: {missing}"
    validate(record)
    return record


async def _envelope(record: dict):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"test.columns.{uuid.uuid4().hex}")
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.propagate = False
    await AppInsightsUsageSink(logger).emit(record)
    (log,) = exporter.get_finished_logs()
    return _convert_log_to_envelope(log)


def test_the_exporter_under_test_is_the_pinned_one():
    assert version("azure-monitor-opentelemetry") == PINNED["azure-monitor-opentelemetry"]
    exporter = PINNED.get("azure-monitor-opentelemetry-exporter")
    if exporter is not None:
        assert version("azure-monitor-opentelemetry-exporter") == exporter


async def test_every_record_field_lands_in_custom_events():
    record = _full_record()
    envelope = await _envelope(record)
    assert envelope.name == "Microsoft.ApplicationInsights.Event"  # the customEvents table
    assert envelope.data.base_type == "EventData"
    data = envelope.data.base_data
    assert data.name == EVENT_NAME
    # Every field is a dimension (its JSON text); numbers are measurements as well, as floats.
    assert set(data.properties) - {"logger_name"} == set(record)
    numbers = {name for name, value in record.items() if is_measurement(name, value)}
    assert set(data.measurements) == numbers
    assert {"prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms", "gateway_overhead_ms", "cost"} <= numbers
    for name in numbers:
        assert data.measurements[name] == float(record[name])
    assert data.properties["stream"] == "false" and data.properties["finish_reasons"] == '["stop"]'


def _report_texts() -> dict[str, str]:
    sys.path.insert(0, str(POWERBI))
    try:
        import build_model  # noqa: PLC0415
    finally:
        sys.path.remove(str(POWERBI))
    texts = {f"queries/{p.name}": p.read_text() for p in sorted((POWERBI / "queries").glob("*.kql"))}
    texts["workbook (committed)"] = (POWERBI / "workbook" / "aoai-gateway.workbook.json").read_text()
    texts["workbook (built)"] = json.dumps(build_model.workbook())
    for path, text in build_model.project_files().items():
        if "customDimensions" in text or "customMeasurements" in text:
            texts[f"model {Path(path).name}"] = text
    return texts


def _columns(text: str, bag: str) -> set[str]:
    text = text.replace('\\"', '"')
    return set(re.findall(rf"\b{bag}\.(\w+)", text)) | set(re.findall(rf"\b{bag}\[[\"'](\w+)[\"']\]", text))


async def test_reports_read_exactly_the_envelope_columns():
    data = (await _envelope(_full_record())).data.base_data
    texts = _report_texts()
    assert any(k.startswith("model ") for k in texts) and len(texts) >= 10
    for where, text in texts.items():
        dims, measures = _columns(text, "customDimensions"), _columns(text, "customMeasurements")
        assert dims <= set(data.properties), f"{where}: no such customDimensions: {dims - set(data.properties)}"
        assert measures <= set(data.measurements), (
            f"{where}: no such customMeasurements: {measures - set(data.measurements)}"
        )


@pytest.mark.parametrize("bag", ["customDimensions", "customMeasurements"])
def test_the_column_scan_sees_both_spellings(bag):
    assert _columns(f"tostring({bag}.model) and {bag}['cost'] and {bag}[\\\"ttft_ms\\\"]", bag) == {
        "model",
        "cost",
        "ttft_ms",
    }
