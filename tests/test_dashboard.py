"""The local dashboard: its numbers equal the records, in Python, over HTTP and rendered in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from devhost.dashboard import make_server, render_dashboard
from devhost.usage_summary import load_records, percentile, summarize
from shared.pricing.book import load_book
from shared.pricing.cost import cost_of
from shared.pricing.deployments import parse_deployment_models
from tests.usage_records import make_record, validate, write_records_db

ROOT = Path(__file__).resolve().parents[1]
BOOK = load_book()
MAPPING = parse_deployment_models('{"ptu": {"model": "gpt-4o", "type": "provisioned"}}')


def _costed(record: dict) -> dict:
    cost, reason, version = cost_of(record, BOOK, MAPPING)
    record.update(cost=cost, cost_reason=reason, price_version=version)
    return record


def sample_records() -> list[dict]:
    """A day of mixed traffic: two teams, streaming, cache hits, reasoning, embeddings, errors, safety flags."""
    rs = [
        make_record(1, prompt_tokens=1200, completion_tokens=350),
        make_record(
            2,
            stream=True,
            ttft_ms=120.0,
            latency_ms=1500.0,
            prompt_tokens=10_000,
            cached_tokens=8_000,
            completion_tokens=100,
            model="gpt-4o-mini-2024-07-18",
            deployment="mini",
            usage_source="estimated",
        ),
        make_record(
            3,
            subscription_id="team-b",
            subscription_name="Team B",
            user_id="bob",
            deployment="reason",
            model="o4-mini-2025-04-16",
            prompt_tokens=500,
            completion_tokens=2000,
            reasoning_tokens=1500,
            latency_ms=4000.0,
            ttft_ms=4000.0,
            timestamp="2025-09-16T08:00:00Z",
        ),
        make_record(
            4,
            subscription_id="team-b",
            subscription_name="Team B",
            api="embeddings",
            deployment="embed",
            model="text-embedding-3-small",
            prompt_tokens=50_000,
            finish_reasons=[],
            latency_ms=90.0,
            ttft_ms=90.0,
        ),
        make_record(
            5,
            status_code=429,
            error_code="429",
            attempts=3,
            latency_ms=30.0,
            ttft_ms=None,
            model=None,
            usage_source="none",
            finish_reasons=[],
        ),
        make_record(
            6,
            status_code=400,
            error_code="content_filter",
            backend="aoai-westeurope",
            usage_source="none",
            prompt_tokens=40,
            finish_reasons=[],
            content_filter={
                "prompt": {"hate": {"filtered": True, "severity": "high"}},
                "completion": {},
                "filtered": True,
            },
            safety={
                "status": "flagged",
                "flagged_by": ["aoai", "content_safety"],
                "prompt": {"Hate": 6},
                "completion": {},
                "prompt_attack": True,
            },
        ),
        make_record(
            7,
            deployment="ptu",
            model="gpt-4o-2024-08-06",
            prompt_tokens=300,
            completion_tokens=30,
            deployment_type="provisioned",
            backend="aoai-westeurope",
        ),
        make_record(
            8,
            model="custom-finetune",
            prompt_tokens=10,
            completion_tokens=5,
            status_code=502,
            error_code="bad_gateway",
            latency_ms=10.0,
            ttft_ms=None,
        ),
    ]
    for r in rs:
        _costed(r)
        validate(r)
    return rs


@pytest.fixture
def records_db(tmp_path) -> Path:
    # Integration can point this at a database the dev host filled with real traffic.
    override = os.environ.get("DASHBOARD_TEST_DB")
    return Path(override) if override else write_records_db(tmp_path / "gateway.db", sample_records())


def test_sample_costs_are_the_hand_computed_ones():
    by_id = {r["request_id"]: r for r in sample_records()}
    assert by_id["req-0001"]["cost"] == pytest.approx(0.0065)  # 1200*2.50 + 350*10.00 per 1M
    assert by_id["req-0002"]["cost"] == pytest.approx(0.00096)  # 2000*0.15 + 8000*0.075 + 100*0.60
    assert by_id["req-0003"]["cost"] == pytest.approx(0.00935)  # 500*1.10 + 2000*4.40
    assert by_id["req-0004"]["cost"] == pytest.approx(0.001)  # 50000*0.02
    assert by_id["req-0005"]["cost"] == 0.0  # throttled: no usage, nothing billed
    assert by_id["req-0006"]["cost"] == pytest.approx(0.0001)  # 40*2.50
    assert by_id["req-0007"]["cost_reason"] == "provisioned"
    assert by_id["req-0008"]["cost_reason"] == "unknown_model:custom-finetune"


def test_summary_totals_equal_the_records(records_db):
    records = load_records(records_db)
    t = summarize(records).totals
    assert t.requests == len(records)
    assert t.total_tokens == sum(r["total_tokens"] for r in records)
    assert t.prompt_tokens == sum(r["prompt_tokens"] for r in records)
    assert t.cost_usd == pytest.approx(sum(r["cost"] for r in records if r["cost"] is not None), abs=1e-6)
    assert t.uncosted_requests == sum(r["cost"] is None for r in records)


def test_summary_views_on_the_sample():
    s = summarize(sample_records())
    assert s.totals.requests == 8
    assert s.totals.cost_usd == pytest.approx(0.0065 + 0.00096 + 0.00935 + 0.001 + 0.0 + 0.0001)
    assert s.totals.uncosted_requests == 2  # provisioned + unknown model
    subs = {g.key[0]: g for g in s.by_subscription}
    assert subs["Team B"].cost_usd == pytest.approx(0.00935 + 0.001)
    errors = {e.backend: e for e in s.errors}
    assert errors["aoai-eastus"].throttled == 1 and errors["aoai-eastus"].server_errors == 1
    assert errors["aoai-eastus"].retried == 1 and errors["aoai-westeurope"].client_errors == 1
    assert s.safety.content_filtered == 1 and s.safety.safety_flagged == 1 and s.safety.prompt_attacks == 1
    assert s.safety.max_severity == {"Hate": 6}
    assert s.usage_sources == {"service": 5, "estimated": 1, "none": 2}
    chat = next(x for x in s.latency if x.deployment == "chat")
    assert chat.requests == 1 and chat.p50_latency_ms == 800.0  # 2xx only: the 429 and 502 are left out


def test_percentile_inclusive():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 50) == 30.0
    assert percentile([10.0, 20.0], 50) == 15.0


class _Totals(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.totals: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self._id: str | None = None
        self.charts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "totals":
            self.totals = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
        if tag == "dd":
            self._id = a.get("id")
        if tag == "svg" and "main-svg" in (a.get("class") or ""):
            self.charts += 1

    def handle_data(self, data):
        if self._id:
            self.ids[self._id] = data
            self._id = None


def _check_page(page: str, records: list[dict]) -> _Totals:
    p = _Totals()
    p.feed(page)
    assert int(p.totals["requests"]) == len(records)
    assert int(p.totals["total-tokens"]) == sum(r["total_tokens"] for r in records)
    assert int(p.totals["prompt-tokens"]) == sum(r["prompt_tokens"] for r in records)
    assert int(p.totals["completion-tokens"]) == sum(r["completion_tokens"] for r in records)
    assert float(p.totals["cost-usd"]) == pytest.approx(
        sum(r["cost"] for r in records if r["cost"] is not None), abs=1e-6
    )
    assert int(p.totals["uncosted-requests"]) == sum(r["cost"] is None for r in records)
    assert int(p.totals["cached-tokens"]) == sum(r["cached_tokens"] for r in records)
    assert int(p.totals["non-billable-requests"]) == sum(r.get("billable") is False for r in records)
    assert int(p.totals["lower-bound-requests"]) == sum(r.get("usage_quality") == "lower_bound" for r in records)
    assert p.ids["total-requests"].replace(",", "") == str(len(records))
    return p


def test_rendered_page_totals_equal_the_records(records_db):
    records = load_records(records_db)
    page = render_dashboard(records, plotly_src="/plotly.min.js")
    _check_page(page, records)
    for section in ("overview", "chargeback", "performance", "safety", "errors"):
        assert f'<section id="{section}">' in page
    assert "cdn.plot.ly" not in page and "https://" not in re.sub(
        r'"https://[^"]*plotly[^"]*"', "", page.split("<body>")[1]
    )


def test_server_serves_page_and_local_plotly(records_db):
    server = make_server(records_db, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        page = urllib.request.urlopen(base + "/").read().decode()
        _check_page(page, load_records(records_db))
        assert '<script src="/plotly.min.js">' in page
        js = urllib.request.urlopen(base + "/plotly.min.js").read()
        assert len(js) > 1_000_000 and b"plotly" in js[:2000].lower()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nope")
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.chromium
@pytest.mark.skipif(
    chromium_binary() is None,
    reason="Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)",
)
def test_dashboard_in_headless_chromium(records_db, tmp_path):
    records = load_records(records_db)
    page_path = tmp_path / "dashboard.html"
    page_path.write_text(render_dashboard(records), encoding="utf-8")  # plotly.js inlined: no network at all
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    screenshot = results / "dashboard.png"
    base = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--window-size=1280,2400",
    ]
    dom = subprocess.run(base + ["--dump-dom", page_path.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _check_page(dom.stdout, records)
    assert parsed.charts >= 5, "plotly drew the charts in the browser (one svg.main-svg per chart at least)"
    shot = subprocess.run(
        base + [f"--screenshot={screenshot}", page_path.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
