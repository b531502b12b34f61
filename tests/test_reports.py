"""KQL queries, the Power BI project and the Azure workbook: fields exist, files parse, nothing drifts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.tmdl import TmdlError, m_literal, parse

ROOT = Path(__file__).resolve().parents[1]
POWERBI = ROOT / "powerbi"
QUERIES = sorted((POWERBI / "queries").glob("*.kql"))
SCHEMA = json.loads((ROOT / "shared" / "normalize" / "schema" / "usage-record.schema.json").read_text())
MODEL = POWERBI / "AOAIGateway.SemanticModel" / "definition"
MEASUREMENTS = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "latency_ms",
    "ttft_ms",
    "cost",
    "cost_avoided",
}

sys.path.insert(0, str(POWERBI))
import build_model  # noqa: E402


def _fields(kql: str, bag: str) -> set[str]:
    return set(re.findall(rf"\b{bag}\.(\w+)", kql)) | set(re.findall(rf"\b{bag}\[[\"'](\w+)[\"']\]", kql))


def test_every_question_has_a_query():
    stems = {q.stem for q in QUERIES}
    assert stems == {
        "usage_by_day",
        "chargeback_monthly",
        "latency_percentiles",
        "errors_by_backend",
        "safety_flags",
        "streaming_share",
        "usage_source_share",
        "top_users",
        "prompt_shields",
        "cache_savings",
        "budget_spend",
    }


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_query_header_and_source(path):
    text = path.read_text()
    assert text.startswith("// Answers: "), "each query starts with the question it answers"
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    assert "customEvents" in code and '| where name == "AOAIUsage"' in code


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.stem)
def test_query_fields_exist_in_the_usage_record_schema(path):
    text = path.read_text()
    props = SCHEMA["properties"]
    dims, measures = _fields(text, "customDimensions"), _fields(text, "customMeasurements")
    assert dims or measures
    assert dims <= props.keys(), f"unknown customDimensions: {dims - props.keys()}"
    assert measures <= props.keys() and measures <= MEASUREMENTS, (
        f"unknown customMeasurements: {measures - MEASUREMENTS}"
    )
    # Dimensions are strings in App Insights: read them through tostring(), measurements through todouble().
    assert not re.search(r"(?<!tostring\()customDimensions\.\w+\)", text.replace("parse_json(tostring(", "tostring("))
    for name in measures:
        assert f"todouble(customMeasurements.{name})" in text
    # Nested objects arrive as JSON strings: what the query reads inside them must be in the schema too.
    for obj in re.findall(r"(\w+) = parse_json\(tostring\(customDimensions\.(\w+)\)\)", text):
        alias, field = obj
        for key in re.findall(rf"\b{alias}\.(\w+)", text):
            assert key in props[field]["properties"], f"{field}.{key} not in schema"


def test_nested_fields_checked_against_schema():
    text = (POWERBI / "queries" / "safety_flags.kql").read_text()
    pairs = set(re.findall(r"\b(content_filter|safety)\.(\w+)", text))
    assert ("safety", "status") in pairs and ("content_filter", "filtered") in pairs
    for obj, key in pairs:
        assert key in SCHEMA["properties"][obj]["properties"], f"{obj}.{key}"


def _model_tables():
    tables = {}
    for path in sorted((MODEL / "tables").glob("*.tmdl")):
        roots = parse(path.read_text(encoding="utf-8"))
        assert len(roots) == 1 and roots[0].kind == "table", path.name
        tables[roots[0].name] = roots[0]
    return tables


def test_tmdl_structure():
    for path in MODEL.rglob("*.tmdl"):
        parse(path.read_text(encoding="utf-8"))  # raises on bad indentation or stray lines
    model = parse((MODEL / "model.tmdl").read_text())
    assert model[0].kind == "model"
    refs = {n.name for n in model if n.kind == "ref table"}
    tables = _model_tables()
    assert refs == set(tables)
    for name, table in tables.items():
        kinds = [c.kind for c in table.children]
        assert kinds.count("partition") == 1, name
        assert "column" in kinds and "measure" in kinds, name
        for col in (c for c in table.children if c.kind == "column"):
            assert col.properties["dataType"] in {"string", "int64", "double", "dateTime", "boolean"}
            assert col.properties["sourceColumn"] == col.name
    params = {n.name for n in parse((MODEL / "expressions.tmdl").read_text()) if n.kind == "expression"}
    assert params == {"SubscriptionId", "ResourceGroup", "AppInsightsName"}


def test_tmdl_reader_rejects_bad_indentation():
    with pytest.raises(TmdlError, match="tabs"):
        parse("table T\n    column c\n")
    with pytest.raises(TmdlError, match="more than one level"):
        parse("table T\n\t\t\tcolumn c\n")


def test_every_model_query_is_a_file_in_queries_with_the_same_text():
    files = {q.read_text(encoding="utf-8") for q in QUERIES}
    loaded = set()
    for name, table in _model_tables().items():
        partition = next(c for c in table.children if c.kind == "partition")
        assert partition.value == "m" and partition.properties["mode"] == "import"
        assert "AzureDataExplorer.Contents(Cluster, AppInsightsName, Query" in partition.source
        assert "ade.applicationinsights.io/subscriptions/" in partition.source
        kql = m_literal(partition.source, "Query")
        assert kql in files, f"table {name!r} loads a query that is not in powerbi/queries"
        loaded.add(kql)
        # Every column the table declares is produced by the query.
        for col in (c.name for c in table.children if c.kind == "column"):
            assert re.search(rf"\b{col}\b", kql), f"{name}.{col} not in its query"
    assert loaded == files, "every query is loaded by the model"


def test_measures_reference_their_own_columns():
    for name, table in _model_tables().items():
        cols = {c.name for c in table.children if c.kind == "column"}
        for m in (c for c in table.children if c.kind == "measure"):
            for tbl, col in re.findall(r"'([^']+)'\[(\w+)\]", m.value or ""):
                assert tbl == name and col in cols, f"{name}: measure {m.name} reads {tbl}[{col}]"


def test_generated_files_are_up_to_date():
    for rel, text in build_model.project_files().items():
        path = POWERBI / rel
        assert path.exists(), f"{rel} missing: run python powerbi/build_model.py"
        assert path.read_text(encoding="utf-8") == text, f"{rel} is stale: run python powerbi/build_model.py"


def test_pbip_json_files_parse_and_reference_each_other():
    for path in (
        list(POWERBI.rglob("*.json"))
        + list(POWERBI.rglob("*.pbi?"))
        + list(POWERBI.rglob("*.pbism"))
        + list(POWERBI.rglob(".platform"))
    ):
        json.loads(path.read_text(encoding="utf-8"))
    pbip = json.loads((POWERBI / "AOAIGateway.pbip").read_text())
    report = POWERBI / pbip["artifacts"][0]["report"]["path"]
    pbir = json.loads((report / "definition.pbir").read_text())
    assert (report / pbir["datasetReference"]["byPath"]["path"] / "definition.pbism").exists()
    pages = json.loads((report / "definition" / "pages" / "pages.json").read_text())
    titles = [
        json.loads((report / "definition" / "pages" / p / "page.json").read_text())["displayName"]
        for p in pages["pageOrder"]
    ]
    assert titles == ["Overview", "Chargeback", "Performance", "Safety", "Errors"]


def test_report_visuals_bind_to_model_fields():
    tables = _model_tables()
    visuals = list((POWERBI / "AOAIGateway.Report" / "definition" / "pages").rglob("visual.json"))
    assert visuals
    for path in visuals:
        v = json.loads(path.read_text())
        for role in v["visual"]["query"]["queryState"].values():
            for proj in role["projections"]:
                ((kind, ref),) = proj["field"].items()
                table = tables[ref["Expression"]["SourceRef"]["Entity"]]
                names = {c.name for c in table.children if c.kind == kind.lower()}
                assert ref["Property"] in names, f"{path}: {kind} {ref['Property']}"


def test_workbook_parses_with_the_five_tabs_and_the_same_queries():
    wb = json.loads((POWERBI / "workbook" / "aoai-gateway.workbook.json").read_text())
    assert wb["version"] == "Notebook/1.0"
    tabs = next(i for i in wb["items"] if i["type"] == 11)["content"]["links"]
    assert [t["linkLabel"] for t in tabs] == ["Overview", "Chargeback", "Performance", "Safety", "Errors"]
    groups = {g["conditionalVisibility"]["value"]: g for g in wb["items"] if g["type"] == 12}
    assert set(groups) == {t["subTarget"] for t in tabs}
    files = {q.read_text(encoding="utf-8") for q in QUERIES}
    seen = set()
    for group in groups.values():
        for item in group["content"]["items"]:
            assert item["content"]["query"] in files
            assert item["content"]["timeContextFromParameter"] == "TimeRange"
            seen.add(item["content"]["query"])
    assert seen == files
