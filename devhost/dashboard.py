"""Local dashboard over the dev host's SQLite usage records: usage, cost, latency, safety and errors.

The same views as the Power BI report and the Azure workbook, without Azure. Charts are plotly;
plotly.js comes from the pinned Python package (inlined, or served from /plotly.min.js), so nothing
is fetched from the internet. Totals are also in data attributes (#totals) for machine checks.

    python -m devhost.dashboard --db .gateway/gateway.db --port 7072
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Iterable
from dataclasses import asdict
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from devhost.usage_summary import Summary, load_records, summarize

PLOTLY_JS_PATH = "/plotly.min.js"
_PAGES = ("Overview", "Chargeback", "Performance", "Safety", "Errors")


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js as shipped inside the pinned plotly wheel."""
    return get_plotlyjs()


def _chart(fig: go.Figure, div_id: str) -> str:
    fig.update_layout(margin={"l": 40, "r": 10, "t": 40, "b": 40}, height=320, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def _table(table_id: str, headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _overview(s: Summary) -> str:
    t = s.totals
    attrs = {
        "requests": t.requests,
        "prompt-tokens": t.prompt_tokens,
        "completion-tokens": t.completion_tokens,
        "total-tokens": t.total_tokens,
        "cached-tokens": t.cached_tokens,
        "reasoning-tokens": t.reasoning_tokens,
        "cost-usd": f"{t.cost_usd:.6f}",
        "uncosted-requests": t.uncosted_requests,
        "streamed-requests": t.streamed_requests,
        "estimated-requests": t.estimated_requests,
    }
    data = " ".join(f'data-{k}="{v}"' for k, v in attrs.items())
    cards = [
        ("Requests", "total-requests", f"{t.requests:,}"),
        ("Total tokens", "total-tokens", f"{t.total_tokens:,}"),
        ("Prompt tokens", "prompt-tokens", f"{t.prompt_tokens:,}"),
        ("Completion tokens", "completion-tokens", f"{t.completion_tokens:,}"),
        ("Cost (USD)", "total-cost", f"${t.cost_usd:,.6f}"),
        ("Uncosted requests", "uncosted-requests", f"{t.uncosted_requests:,}"),
        ("Streamed", "streamed-requests", f"{t.streamed_requests:,}"),
        ("Estimated usage", "estimated-requests", f"{t.estimated_requests:,}"),
    ]
    dl = "".join(f'<div class="card"><dt>{label}</dt><dd id="{cid}">{value}</dd></div>' for label, cid, value in cards)
    fig = go.Figure()
    for model in sorted({g.key[1] for g in s.by_day_model}):
        rows = [g for g in s.by_day_model if g.key[1] == model]
        fig.add_bar(name=model, x=[g.key[0] for g in rows], y=[g.total_tokens for g in rows])
    fig.update_layout(barmode="stack", title="Tokens per day by model", showlegend=True)
    fig.update_xaxes(type="category")
    sources = go.Figure(go.Pie(labels=list(s.usage_sources), values=list(s.usage_sources.values()), hole=0.5))
    sources.update_layout(title="Usage source (service-reported vs estimated)")
    return (
        f'<dl id="totals" {data}>{dl}</dl><div class="row">{_chart(fig, "chart-tokens-by-day")}'
        f"{_chart(sources, 'chart-usage-source')}</div>"
    )


def _chargeback(s: Summary) -> str:
    fig = go.Figure(go.Bar(x=[g.key[0] for g in s.by_subscription], y=[g.cost_usd for g in s.by_subscription]))
    fig.update_layout(title="Cost (USD) by subscription")
    rows = [(g.key[0], g.requests, g.total_tokens, g.cost_usd, g.uncosted_requests) for g in s.by_subscription]
    return _chart(fig, "chart-cost-by-subscription") + _table(
        "chargeback-table", ("Subscription", "Requests", "Tokens", "Cost (USD)", "Uncosted requests"), rows
    )


def _performance(s: Summary) -> str:
    labels = [f"{x.deployment} @ {x.backend}" for x in s.latency]
    fig = go.Figure(
        [
            go.Bar(name=name, x=labels, y=[getattr(x, attr) for x in s.latency])
            for name, attr in (
                ("p50 latency", "p50_latency_ms"),
                ("p95 latency", "p95_latency_ms"),
                ("p50 TTFT", "p50_ttft_ms"),
                ("p95 TTFT", "p95_ttft_ms"),
            )
        ]
    )
    fig.update_layout(barmode="group", title="Latency and time to first token (ms), successful requests")
    rows = [
        (
            x.deployment,
            x.backend,
            x.requests,
            x.p50_latency_ms,
            x.p95_latency_ms,
            x.p99_latency_ms,
            x.p50_ttft_ms,
            x.p95_ttft_ms,
        )
        for x in s.latency
    ]
    return _chart(fig, "chart-latency") + _table(
        "latency-table",
        ("Deployment", "Backend", "Requests", "p50 ms", "p95 ms", "p99 ms", "p50 TTFT", "p95 TTFT"),
        rows,
    )


def _safety(s: Summary) -> str:
    x = s.safety
    fig = go.Figure(go.Bar(x=list(x.max_severity), y=list(x.max_severity.values())))
    fig.update_layout(title="Highest Content Safety severity per category", yaxis={"range": [0, 7]})
    rows = [
        ("AOAI content filter", x.content_filtered),
        ("Content Safety flagged", x.safety_flagged),
        ("Content Safety errors", x.safety_errors),
        ("Prompt attacks", x.prompt_attacks),
    ]
    rows += [(f"Flagged by {k}", v) for k, v in sorted(x.flagged_by.items())]
    return _chart(fig, "chart-safety") + _table("safety-table", ("Flag", "Requests"), rows)


def _errors(s: Summary) -> str:
    names = [e.backend for e in s.errors]
    fig = go.Figure(
        [
            go.Bar(name=n, x=names, y=[getattr(e, a) for e in s.errors])
            for n, a in (("429 throttled", "throttled"), ("4xx", "client_errors"), ("5xx", "server_errors"))
        ]
    )
    fig.update_layout(barmode="stack", title="Throttling and errors by backend")
    rows = [
        (
            e.backend,
            e.requests,
            e.throttled,
            e.client_errors,
            e.server_errors,
            e.retried,
            ", ".join(f"{k}×{v}" for k, v in sorted(e.incomplete.items())),
            ", ".join(f"{k}×{v}" for k, v in sorted(e.error_codes.items())),
        )
        for e in s.errors
    ]
    return _chart(fig, "chart-errors") + _table(
        "errors-table",
        ("Backend", "Requests", "429", "4xx", "5xx", "Retried", "Not complete (outcome)", "Error codes"),
        rows,
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}nav a{margin-right:1rem}
section{margin-bottom:2rem}dl#totals{display:flex;flex-wrap:wrap;gap:.75rem}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;min-width:9rem}dt{font-size:.8rem;color:#666}
dd{margin:0;font-size:1.4rem;font-weight:600}.row{display:flex;flex-wrap:wrap}.row>div{flex:1 1 28rem}
table{border-collapse:collapse;margin-top:.5rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}"""


def render_dashboard(
    records: Iterable[dict[str, Any]], *, plotly_src: str | None = None, title: str = "AOAI gateway — local usage"
) -> str:
    """The whole page for these records. plotly_src: URL of plotly.js, or None to inline it."""
    s = summarize(records)
    script = f'<script src="{html.escape(plotly_src)}"></script>' if plotly_src else f"<script>{plotly_js()}</script>"
    sections = {
        "Overview": _overview(s),
        "Chargeback": _chargeback(s),
        "Performance": _performance(s),
        "Safety": _safety(s),
        "Errors": _errors(s),
    }
    nav = "".join(f'<a href="#{p.lower()}">{p}</a>' for p in _PAGES)
    body = "".join(f'<section id="{p.lower()}"><h2>{p}</h2>{sections[p]}</section>' for p in _PAGES)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style>{script}</head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>"
    )


def dashboard_page(db_path: Path | str, *, plotly_src: str | None = PLOTLY_JS_PATH) -> str:
    """The page for the records in a SQLite file (what the dev host serves at /dashboard)."""
    return render_dashboard(load_records(db_path), plotly_src=plotly_src)


def summary_json(db_path: Path | str) -> str:
    return json.dumps(asdict(summarize(load_records(db_path))), default=str)


def serve_dashboard(db_path: Path | str, host: str = "127.0.0.1", port: int = 7072) -> None:
    """Serves the dashboard until interrupted; the database is re-read on every request."""
    server = make_server(db_path, host, port)
    print(f"dashboard on http://{host}:{server.server_address[1]}/ (records from {db_path})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def make_server(db_path: Path | str, host: str = "127.0.0.1", port: int = 7072) -> ThreadingHTTPServer:
    db = Path(db_path)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/dashboard"):
                self._send(200, "text/html; charset=utf-8", dashboard_page(db))
            elif path == PLOTLY_JS_PATH:
                self._send(200, "application/javascript", plotly_js())
            elif path == "/api/summary":
                self._send(200, "application/json", summary_json(db))
            else:
                self._send(404, "application/json", '{"error": {"code": "NotFound", "message": "no such page"}}')

        def _send(self, status: int, content_type: str, text: str) -> None:
            payload = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the dev host logs its own way
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=".gateway/gateway.db", help="SQLite file with the records table")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7072)
    parser.add_argument("--out", help="write the page (plotly.js inlined) to this file instead of serving")
    args = parser.parse_args(argv)
    if args.out:
        Path(args.out).write_text(render_dashboard(load_records(args.db)), encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        serve_dashboard(args.db, args.host, args.port)


if __name__ == "__main__":
    main()
