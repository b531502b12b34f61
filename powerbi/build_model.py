"""Writes the Power BI project (TMDL model, PBIR report) and the Azure workbook from powerbi/queries/*.kql.

The .kql files are the single source of the queries: every table partition and every workbook
item carries the text of one file, so the three cannot drift. Run it after editing a query or the
spec below:  python powerbi/build_model.py   (tests/test_reports.py fails when the output is stale).
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERIES = HERE / "queries"
NAME = "AOAIGateway"
WORKBOOK = Path("workbook") / "aoai-gateway.workbook.json"
SCHEMAS = "https://developer.microsoft.com/json-schemas/fabric"
#: Namespace for lineage tags and logical ids: stable across runs so regenerating changes nothing.
_NS = uuid.UUID("5f0e3c52-7d0b-4d7e-9a49-2f7f3b8f6a10")

PARAMETERS = {
    "SubscriptionId": (
        "00000000-0000-0000-0000-000000000000",
        "Azure subscription id of the Application Insights resource",
    ),
    "ResourceGroup": ("rg-aoai-gateway", "Resource group of the Application Insights resource"),
    "AppInsightsName": (
        "appi-aoai-gateway",
        "Name of the Application Insights resource the gateway writes AOAIUsage events to",
    ),
}


@dataclass(frozen=True)
class Measure:
    name: str
    dax: str
    format: str = "#,0"
    description: str = ""


@dataclass(frozen=True)
class Table:
    query: str  # file stem in powerbi/queries
    title: str  # table name in the model
    columns: tuple[tuple[str, str], ...]  # (column, TMDL dataType)
    measures: tuple[Measure, ...] = field(default_factory=tuple)


S, I, D, T, B = "string", "int64", "double", "dateTime", "boolean"  # noqa: E741 - TMDL data types, one letter each
USD = "\\$#,0.00;(\\$#,0.00);\\$#,0.00"
PCT = "0.00%;-0.00%;0.00%"
MS = '#,0 "ms"'


def _worst(table: str, col: str, label: str) -> Measure:
    return Measure(
        f"Worst {label}",
        f"MAX('{table}'[{col}])",
        MS,
        f"{label} per deployment x backend x stream as computed by the query; above that grain the worst group.",
    )


TABLES: tuple[Table, ...] = (
    Table(
        "usage_by_day",
        "Usage by day",
        (
            ("day", T),
            ("subscription_id", S),
            ("subscription_name", S),
            ("product", S),
            ("deployment", S),
            ("model", S),
            ("requests", I),
            ("prompt_tokens", D),
            ("completion_tokens", D),
            ("total_tokens", D),
            ("cached_tokens", D),
            ("reasoning_tokens", D),
            ("cost_usd", D),
            ("uncosted_requests", I),
        ),
        (
            Measure("Requests", "SUM('Usage by day'[requests])"),
            Measure("Total tokens", "SUM('Usage by day'[total_tokens])"),
            Measure("Prompt tokens", "SUM('Usage by day'[prompt_tokens])"),
            Measure("Completion tokens", "SUM('Usage by day'[completion_tokens])"),
            Measure("Cached tokens", "SUM('Usage by day'[cached_tokens])"),
            Measure("Reasoning tokens", "SUM('Usage by day'[reasoning_tokens])"),
            Measure("Cost (USD)", "SUM('Usage by day'[cost_usd])", USD),
            Measure(
                "Cached prompt share",
                "DIVIDE(SUM('Usage by day'[cached_tokens]), SUM('Usage by day'[prompt_tokens]))",
                PCT,
            ),
            Measure("Uncosted requests", "SUM('Usage by day'[uncosted_requests])"),
        ),
    ),
    Table(
        "chargeback_monthly",
        "Chargeback by month",
        (
            ("month", T),
            ("subscription_id", S),
            ("subscription_name", S),
            ("product", S),
            ("requests", I),
            ("total_tokens", D),
            ("cost_usd", D),
            ("uncosted_requests", I),
            ("uncosted_tokens", D),
            ("uncosted_reasons", S),
            ("price_versions", S),
        ),
        (
            Measure("Chargeback (USD)", "SUM('Chargeback by month'[cost_usd])", USD),
            Measure("Chargeback tokens", "SUM('Chargeback by month'[total_tokens])"),
            Measure("Uncosted tokens", "SUM('Chargeback by month'[uncosted_tokens])"),
        ),
    ),
    Table(
        "latency_percentiles",
        "Latency percentiles",
        (
            ("deployment", S),
            ("backend", S),
            ("stream", B),
            ("requests", I),
            ("p50_latency_ms", D),
            ("p90_latency_ms", D),
            ("p95_latency_ms", D),
            ("p99_latency_ms", D),
            ("p50_ttft_ms", D),
            ("p90_ttft_ms", D),
            ("p95_ttft_ms", D),
            ("p99_ttft_ms", D),
        ),
        (
            _worst("Latency percentiles", "p50_latency_ms", "p50 latency"),
            _worst("Latency percentiles", "p95_latency_ms", "p95 latency"),
            _worst("Latency percentiles", "p99_latency_ms", "p99 latency"),
            _worst("Latency percentiles", "p50_ttft_ms", "p50 TTFT"),
            _worst("Latency percentiles", "p95_ttft_ms", "p95 TTFT"),
            Measure("Successful requests", "SUM('Latency percentiles'[requests])"),
        ),
    ),
    Table(
        "errors_by_backend",
        "Errors by backend",
        (
            ("day", T),
            ("backend", S),
            ("requests", I),
            ("throttled", I),
            ("client_errors", I),
            ("server_errors", I),
            ("retried", I),
            ("client_disconnects", I),
            ("parse_errors", I),
            ("complete", I),
            ("upstream_broken", I),
            ("timeouts", I),
            ("blocked", I),
            ("error_codes", S),
            ("throttle_rate", D),
            ("error_rate", D),
            ("broken_rate", D),
        ),
        (
            Measure(
                "Throttle rate", "DIVIDE(SUM('Errors by backend'[throttled]), SUM('Errors by backend'[requests]))", PCT
            ),
            Measure(
                "Error rate",
                "DIVIDE(SUM('Errors by backend'[client_errors]) + SUM('Errors by backend'[server_errors]), SUM('Errors by backend'[requests]))",
                PCT,
            ),
            Measure("Throttled requests", "SUM('Errors by backend'[throttled])"),
            Measure("Retried requests", "SUM('Errors by backend'[retried])"),
            Measure(
                "Broken answer rate",
                "DIVIDE(SUM('Errors by backend'[upstream_broken]) + SUM('Errors by backend'[timeouts]), SUM('Errors by backend'[requests]))",
                PCT,
            ),
        ),
    ),
    Table(
        "safety_flags",
        "Safety flags",
        (
            ("day", T),
            ("subscription_name", S),
            ("deployment", S),
            ("requests", I),
            ("content_filtered", I),
            ("safety_flagged", I),
            ("safety_errors", I),
            ("safety_skipped", I),
            ("prompt_attacks", I),
            ("flagged_by", S),
            ("max_hate", I),
            ("max_self_harm", I),
            ("max_sexual", I),
            ("max_violence", I),
        ),
        (
            Measure("Content filtered", "SUM('Safety flags'[content_filtered])"),
            Measure("Safety flagged", "SUM('Safety flags'[safety_flagged])"),
            Measure("Prompt attacks", "SUM('Safety flags'[prompt_attacks])"),
            Measure("Flag rate", "DIVIDE(SUM('Safety flags'[safety_flagged]), SUM('Safety flags'[requests]))", PCT),
        ),
    ),
    Table(
        "streaming_share",
        "Streaming share",
        (
            ("day", T),
            ("stream", B),
            ("requests", I),
            ("request_share", D),
            ("total_tokens", D),
            ("token_share", D),
            ("p50_latency_ms", D),
            ("p50_ttft_ms", D),
        ),
        (
            Measure(
                "Streamed request share",
                "DIVIDE(CALCULATE(SUM('Streaming share'[requests]), 'Streaming share'[stream] = TRUE()), SUM('Streaming share'[requests]))",
                PCT,
            ),
        ),
    ),
    Table(
        "usage_source_share",
        "Usage source share",
        (
            ("day", T),
            ("deployment", S),
            ("usage_source", S),
            ("requests", I),
            ("request_share", D),
            ("total_tokens", D),
            ("token_share", D),
        ),
        (
            Measure(
                "Estimated token share",
                "DIVIDE(CALCULATE(SUM('Usage source share'[total_tokens]), 'Usage source share'[usage_source] = \"estimated\"), SUM('Usage source share'[total_tokens]))",
                PCT,
            ),
        ),
    ),
    Table(
        "prompt_shields",
        "Prompt shields",
        (
            ("day", T),
            ("subscription_name", S),
            ("deployment", S),
            ("requests", I),
            ("jailbreak_detected", I),
            ("jailbreak_blocked", I),
            ("indirect_attack_detected", I),
            ("indirect_attack_blocked", I),
            ("prompts_blocked", I),
            ("blocked_reasons", S),
        ),
        (
            Measure("Jailbreaks detected", "SUM('Prompt shields'[jailbreak_detected])"),
            Measure("Indirect attacks detected", "SUM('Prompt shields'[indirect_attack_detected])"),
            Measure("Prompts blocked", "SUM('Prompt shields'[prompts_blocked])"),
        ),
    ),
    Table(
        "cache_savings",
        "Cache savings",
        (
            ("day", T),
            ("product", S),
            ("subscription_name", S),
            ("audience_rule", S),
            ("requests", I),
            ("hits", I),
            ("stored", I),
            ("bypassed", I),
            ("tokens_avoided", D),
            ("cost_avoided_usd", D),
            ("hit_rate", D),
        ),
        (
            Measure("Cache hit rate", "DIVIDE(SUM('Cache savings'[hits]), SUM('Cache savings'[requests]))", PCT),
            Measure("Cost avoided (USD)", "SUM('Cache savings'[cost_avoided_usd])", USD),
        ),
    ),
    Table(
        "top_users",
        "Top users",
        (
            ("user_id", S),
            ("subscription_name", S),
            ("requests", I),
            ("total_tokens", D),
            ("cost_usd", D),
            ("deployments", S),
        ),
        (Measure("User cost (USD)", "SUM('Top users'[cost_usd])", USD),),
    ),
    Table(
        "budget_spend",
        "Budget spend",
        (
            ("month", T),
            ("budget_name", S),
            ("spent_usd", D),
            ("limit_usd", D),
            ("used_percent", D),
            ("requests", I),
            ("downgraded", I),
            ("unsettled", I),
            ("store_errors", I),
            ("soft_crossed_at", T),
        ),
        (
            Measure("Budget spent (USD)", "SUM('Budget spend'[spent_usd])", USD),
            Measure("Budget limit (USD)", "SUM('Budget spend'[limit_usd])", USD),
        ),
    ),
)

#: Report pages (and workbook tabs): title -> visuals (type, table, fields). Fields are measures or columns.
PAGES: dict[str, list[tuple[str, str, list[str]]]] = {
    "Overview": [
        ("card", "Usage by day", ["Requests"]),
        ("card", "Usage by day", ["Total tokens"]),
        ("card", "Usage by day", ["Cost (USD)"]),
        ("card", "Usage source share", ["Estimated token share"]),
        ("lineChart", "Usage by day", ["day", "Total tokens"]),
        ("clusteredBarChart", "Usage by day", ["model", "Total tokens"]),
        ("tableEx", "Streaming share", ["day", "stream", "requests", "request_share", "token_share"]),
    ],
    "Chargeback": [
        ("clusteredBarChart", "Chargeback by month", ["subscription_name", "Chargeback (USD)"]),
        (
            "tableEx",
            "Chargeback by month",
            [
                "month",
                "subscription_name",
                "product",
                "requests",
                "total_tokens",
                "cost_usd",
                "uncosted_requests",
                "uncosted_reasons",
            ],
        ),
        ("tableEx", "Top users", ["user_id", "subscription_name", "requests", "total_tokens", "cost_usd"]),
        ("card", "Cache savings", ["Cache hit rate"]),
        ("card", "Cache savings", ["Cost avoided (USD)"]),
        (
            "tableEx",
            "Cache savings",
            [
                "day",
                "product",
                "subscription_name",
                "requests",
                "hits",
                "hit_rate",
                "tokens_avoided",
                "cost_avoided_usd",
            ],
        ),
        ("clusteredBarChart", "Budget spend", ["budget_name", "Budget spent (USD)"]),
        (
            "tableEx",
            "Budget spend",
            ["month", "budget_name", "spent_usd", "limit_usd", "used_percent", "downgraded", "soft_crossed_at"],
        ),
    ],
    "Performance": [
        ("card", "Latency percentiles", ["Worst p95 latency"]),
        ("card", "Latency percentiles", ["Worst p95 TTFT"]),
        (
            "tableEx",
            "Latency percentiles",
            [
                "deployment",
                "backend",
                "stream",
                "requests",
                "p50_latency_ms",
                "p95_latency_ms",
                "p99_latency_ms",
                "p50_ttft_ms",
                "p95_ttft_ms",
            ],
        ),
    ],
    "Safety": [
        ("card", "Safety flags", ["Content filtered"]),
        ("card", "Safety flags", ["Safety flagged"]),
        ("card", "Safety flags", ["Prompt attacks"]),
        (
            "tableEx",
            "Safety flags",
            [
                "day",
                "subscription_name",
                "deployment",
                "requests",
                "content_filtered",
                "safety_flagged",
                "prompt_attacks",
                "max_hate",
                "max_self_harm",
                "max_sexual",
                "max_violence",
            ],
        ),
        ("card", "Prompt shields", ["Jailbreaks detected"]),
        ("card", "Prompt shields", ["Indirect attacks detected"]),
        ("card", "Prompt shields", ["Prompts blocked"]),
        (
            "tableEx",
            "Prompt shields",
            [
                "day",
                "subscription_name",
                "deployment",
                "requests",
                "jailbreak_detected",
                "jailbreak_blocked",
                "indirect_attack_detected",
                "indirect_attack_blocked",
                "prompts_blocked",
                "blocked_reasons",
            ],
        ),
    ],
    "Errors": [
        ("card", "Errors by backend", ["Throttle rate"]),
        ("card", "Errors by backend", ["Error rate"]),
        ("card", "Errors by backend", ["Broken answer rate"]),
        ("lineChart", "Errors by backend", ["day", "Throttled requests"]),
        (
            "tableEx",
            "Errors by backend",
            [
                "day",
                "backend",
                "requests",
                "throttled",
                "client_errors",
                "server_errors",
                "retried",
                "upstream_broken",
                "timeouts",
                "blocked",
                "throttle_rate",
                "error_rate",
            ],
        ),
    ],
}

#: Workbook tabs: the same pages, each showing the queries behind that page.
WORKBOOK_TABS: dict[str, list[str]] = {
    "Overview": ["usage_by_day", "streaming_share", "usage_source_share"],
    "Chargeback": ["chargeback_monthly", "top_users", "cache_savings", "budget_spend"],
    "Performance": ["latency_percentiles"],
    "Safety": ["safety_flags", "prompt_shields"],
    "Errors": ["errors_by_backend"],
}


def read_query(stem: str) -> str:
    return (QUERIES / f"{stem}.kql").read_text(encoding="utf-8")


def tag(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def quote(name: str) -> str:
    """TMDL object names with spaces or symbols are single-quoted (quotes doubled)."""
    return name if name.isidentifier() else "'" + name.replace("'", "''") + "'"


def m_string(text: str) -> str:
    """An M text literal: quotes doubled, line feeds as #(lf), so the KQL survives byte for byte."""
    return '"' + text.replace('"', '""').replace("\r\n", "\n").replace("\n", "#(lf)") + '"'


def _table_tmdl(t: Table) -> str:
    cluster = (
        '"https://ade.applicationinsights.io/subscriptions/" & SubscriptionId & "/resourcegroups/" & '
        'ResourceGroup & "/providers/microsoft.insights/components/" & AppInsightsName'
    )
    out = [f"table {quote(t.title)}", f"\tlineageTag: {tag(t.title)}", ""]
    for m in t.measures:
        out += [f"\tmeasure {quote(m.name)} = {m.dax}", f"\t\tformatString: {m.format}"]
        if m.description:
            out.append(f"\t\tdescription: {m.description}")
        out += [f"\t\tlineageTag: {tag(t.title, 'measure', m.name)}", ""]
    for col, dtype in t.columns:
        out += [f"\tcolumn {quote(col)}", f"\t\tdataType: {dtype}"]
        if dtype == "dateTime":
            out.append("\t\tformatString: yyyy-mm-dd")
        out += [
            f"\t\tlineageTag: {tag(t.title, 'column', col)}",
            f"\t\tsummarizeBy: {'sum' if dtype in ('int64', 'double') else 'none'}",
            f"\t\tsourceColumn: {col}",
            "",
        ]
    out += [
        f"\tpartition {quote(t.title)} = m",
        "\t\tmode: import",
        "\t\tsource =",
        "\t\t\t\tlet",
        f"\t\t\t\t    Cluster = {cluster},",
        f"\t\t\t\t    Query = {m_string(read_query(t.query))},",
        "\t\t\t\t    Source = AzureDataExplorer.Contents(Cluster, AppInsightsName, Query, [MaxRows = null, MaxSize = null, NoTruncate = null, AdditionalSetStatements = null])",
        "\t\t\t\tin",
        "\t\t\t\t    Source",
        "",
        "\tannotation PBI_ResultType = Table",
        "",
    ]
    return "\n".join(out)


def _expressions_tmdl() -> str:
    out = []
    for name, (default, description) in PARAMETERS.items():
        out += [
            f'expression {name} = "{default}" meta [IsParameterQuery = true, Type = "Text", IsParameterQueryRequired = true]',
            f"\tdescription: {description}",
            f"\tlineageTag: {tag('parameter', name)}",
            "\tqueryGroup: Parameters",
            "",
            "\tannotation PBI_ResultType = Text",
            "",
        ]
    return "\n".join(out)


def _model_tmdl() -> str:
    order = json.dumps(list(PARAMETERS) + [t.title for t in TABLES])
    out = [
        "model Model",
        "\tculture: en-US",
        "\tdefaultPowerBIDataSourceVersion: powerBI_V3",
        "\tsourceQueryCulture: en-US",
        "\tdataAccessOptions",
        "\t\tlegacyRedirects",
        "\t\treturnErrorValuesAsNull",
        "",
        "queryGroup Parameters",
        "",
        f"annotation PBI_QueryOrder = {order}",
        "",
    ]
    out += [f"ref table {quote(t.title)}" for t in TABLES]
    return "\n".join(out) + "\n"


def _field(table: Table, name: str) -> dict:
    kind = "Measure" if name in {m.name for m in table.measures} else "Column"
    return {
        "field": {kind: {"Expression": {"SourceRef": {"Entity": table.title}}, "Property": name}},
        "queryRef": f"{table.title}.{name}",
        "nativeQueryRef": name,
    }


SIZES = {"card": (300, 120), "tableEx": (1260, 300)}  # anything else is a chart: (620, 300)


def _layout(visuals: list[tuple[str, str, list[str]]]) -> list[tuple[int, int, int, int]]:
    """Left-to-right rows on a 1280-wide page: cards four to a row, charts two, tables alone."""
    boxes, x, y, row_h = [], 10, 10, 0
    for vtype, _, _ in visuals:
        w, h = SIZES.get(vtype, (620, 300))
        if x + w > 1270:
            x, y, row_h = 10, y + row_h + 10, 0
        boxes.append((x, y, w, h))
        x, row_h = x + w + 10, max(row_h, h)
    return boxes


def _visual(page: str, index: int, box: tuple[int, int, int, int], vtype: str, table: Table, fields: list[str]) -> dict:
    x, y, w, h = box
    roles = {"Values": fields} if vtype in ("card", "tableEx") else {"Category": fields[:1], "Y": fields[1:]}
    name = tag(page, str(index)).replace("-", "")[:20]
    return {
        "$schema": f"{SCHEMAS}/item/report/definition/visualContainer/1.5.0/schema.json",
        "name": name,
        "position": {"x": x, "y": y, "z": index * 1000, "height": h, "width": w, "tabOrder": index * 1000},
        "visual": {
            "visualType": vtype,
            "query": {
                "queryState": {role: {"projections": [_field(table, f) for f in fs]} for role, fs in roles.items()}
            },
            "drillFilterOtherVisuals": True,
        },
    }


def _json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def project_files() -> dict[Path, str]:
    """Every generated file, path relative to powerbi/, with its text."""
    files: dict[Path, str] = {}
    sm, rp = Path(f"{NAME}.SemanticModel"), Path(f"{NAME}.Report")
    files[Path(f"{NAME}.pbip")] = _json(
        {
            "$schema": f"{SCHEMAS}/pbip/pbipProperties/1.0.0/schema.json",
            "version": "1.0",
            "artifacts": [{"report": {"path": str(rp)}}],
            "settings": {"enableAutoRecovery": True},
        }
    )
    files[sm / ".platform"] = _json(
        {
            "$schema": f"{SCHEMAS}/gitIntegration/platformProperties/2.0.0/schema.json",
            "metadata": {"type": "SemanticModel", "displayName": NAME},
            "config": {"version": "2.0", "logicalId": tag("semantic-model")},
        }
    )
    files[sm / "definition.pbism"] = _json(
        {
            "$schema": f"{SCHEMAS}/item/semanticModel/definitionProperties/1.0.0/schema.json",
            "version": "4.0",
            "settings": {},
        }
    )
    files[sm / "definition" / "database.tmdl"] = "database\n\tcompatibilityLevel: 1567\n"
    files[sm / "definition" / "model.tmdl"] = _model_tmdl()
    files[sm / "definition" / "expressions.tmdl"] = _expressions_tmdl()
    for t in TABLES:
        files[sm / "definition" / "tables" / f"{t.title}.tmdl"] = _table_tmdl(t)

    files[rp / ".platform"] = _json(
        {
            "$schema": f"{SCHEMAS}/gitIntegration/platformProperties/2.0.0/schema.json",
            "metadata": {"type": "Report", "displayName": NAME},
            "config": {"version": "2.0", "logicalId": tag("report")},
        }
    )
    files[rp / "definition.pbir"] = _json(
        {
            "$schema": f"{SCHEMAS}/item/report/definitionProperties/2.0.0/schema.json",
            "version": "4.0",
            "datasetReference": {"byPath": {"path": f"../{sm}"}},
        }
    )
    d = rp / "definition"
    files[d / "version.json"] = _json(
        {"$schema": f"{SCHEMAS}/item/report/definition/versionMetadata/1.0.0/schema.json", "version": "2.0.0"}
    )
    files[d / "report.json"] = _json(
        {
            "$schema": f"{SCHEMAS}/item/report/definition/report/1.0.0/schema.json",
            "themeCollection": {},
            "layoutOptimization": "None",
        }
    )
    by_title = {t.title: t for t in TABLES}
    page_ids = [page.lower() for page in PAGES]
    files[d / "pages" / "pages.json"] = _json(
        {
            "$schema": f"{SCHEMAS}/item/report/definition/pagesMetadata/1.0.0/schema.json",
            "pageOrder": page_ids,
            "activePageName": page_ids[0],
        }
    )
    for page, visuals in PAGES.items():
        pid = page.lower()
        boxes = _layout(visuals)
        height = max(720, max(y + h for _, y, _, h in boxes) + 10)
        files[d / "pages" / pid / "page.json"] = _json(
            {
                "$schema": f"{SCHEMAS}/item/report/definition/page/1.3.0/schema.json",
                "name": pid,
                "displayName": page,
                "displayOption": "FitToPage",
                "height": height,
                "width": 1280,
            }
        )
        for i, ((vtype, table, fields), box) in enumerate(zip(visuals, boxes, strict=False)):
            v = _visual(page, i, box, vtype, by_title[table], fields)
            files[d / "pages" / pid / "visuals" / v["name"] / "visual.json"] = _json(v)
    files[WORKBOOK] = _json(workbook())
    return files


def workbook() -> dict:
    """Azure Monitor workbook (Notebook/1.0): a time-range parameter, a tab strip and one group per tab."""
    items: list[dict] = [
        {
            "type": 1,
            "name": "title",
            "content": {
                "json": (
                    "# Azure OpenAI gateway\nUsage, cost, latency, safety and errors from the gateway's `AOAIUsage` custom events. "
                    "Costs are USD from the gateway's price book (null when the model is unknown or the deployment provisioned)."
                )
            },
        },
        {
            "type": 9,
            "name": "parameters",
            "content": {
                "version": "KqlParameterItem/1.0",
                "style": "pills",
                "queryType": 0,
                "resourceType": "microsoft.insights/components",
                "parameters": [
                    {
                        "id": tag("wb", "TimeRange"),
                        "version": "KqlParameterItem/1.0",
                        "name": "TimeRange",
                        "label": "Time range",
                        "type": 4,
                        "isRequired": True,
                        "value": {"durationMs": 2592000000},
                        "typeSettings": {
                            "selectableValues": [
                                {"durationMs": d} for d in (86400000, 604800000, 2592000000, 7776000000)
                            ]
                        },
                    }
                ],
            },
        },
        {
            "type": 11,
            "name": "tabs",
            "content": {
                "version": "LinkItem/1.0",
                "style": "tabs",
                "links": [
                    {
                        "id": tag("wb", "tab", tab),
                        "cellValue": "tab",
                        "linkTarget": "parameter",
                        "linkLabel": tab,
                        "subTarget": tab.lower(),
                        "style": "link",
                    }
                    for tab in WORKBOOK_TABS
                ],
            },
        },
    ]
    for tab, queries in WORKBOOK_TABS.items():
        group = [
            {
                "type": 3,
                "name": stem,
                "content": {
                    "version": "KqlItem/1.0",
                    "query": read_query(stem),
                    "size": 0,
                    "title": _header(stem),
                    "timeContextFromParameter": "TimeRange",
                    "queryType": 0,
                    "resourceType": "microsoft.insights/components",
                    "visualization": "table",
                    "gridSettings": {"filter": True},
                },
            }
            for stem in queries
        ]
        items.append(
            {
                "type": 12,
                "name": f"tab-{tab.lower()}",
                "conditionalVisibility": {"parameterName": "tab", "comparison": "isEqualTo", "value": tab.lower()},
                "content": {"version": "NotebookGroup/1.0", "groupType": "editable", "items": group},
            }
        )
    return {
        "version": "Notebook/1.0",
        "items": items,
        "fallbackResourceIds": [],
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }


def _header(stem: str) -> str:
    """The question a query answers: its first header line without the 'Answers:' prefix."""
    first = read_query(stem).splitlines()[0]
    return first.removeprefix("//").strip().removeprefix("Answers:").strip()


def write(root: Path = HERE) -> list[Path]:
    written = []
    for rel, text in project_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written


if __name__ == "__main__":
    paths = write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    print(f"wrote {len(paths)} files")
