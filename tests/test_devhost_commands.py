"""The records/report text views (pure functions) and `python -m devhost` serving the dashboard at start-up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devhost.__main__ import COMMANDS
from devhost.usage_report import format_table, grand_total, record_row, report, since_filter
from tests.usage_records import make_record

ROOT = Path(__file__).resolve().parents[1]


def test_commands_are_registered():
    assert set(COMMANDS) >= {"serve", "records", "report", "dashboard"}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2025-09-15", "2025-09-15T00:00:00.000Z"),
        ("2025-09-15T10:00:00Z", "2025-09-15T10:00:00.000Z"),
        ("2025-09-15T12:30:00+02:00", "2025-09-15T10:30:00.000Z"),
        ("2025-09-15T10:00:00.5", "2025-09-15T10:00:00.500Z"),
    ],
)
def test_since_becomes_the_stored_utc_form(given, stored):
    assert since_filter(given) == stored
    # Records store `...Z` strings: string order is time order only in the same form.
    assert ("2025-09-15T10:00:00.000Z" >= since_filter(given)) == ("2025-09-15T10:00:00.000Z" >= stored)


def test_since_rejects_what_is_not_a_time():
    with pytest.raises(ValueError):
        since_filter("yesterday")


def test_report_groups_by_subscription_deployment_and_day():
    records = [
        make_record(1, prompt_tokens=100, completion_tokens=20, cost=0.001),
        make_record(2, prompt_tokens=50, completion_tokens=5, cost=0.0005, timestamp="2025-09-15T23:59:59.999Z"),
        make_record(
            3,
            prompt_tokens=7,
            completion_tokens=0,
            status_code=400,
            error_code="content_filter",
            timestamp="2025-09-16T00:00:00.000Z",
        ),
        make_record(4, subscription_id="team-b", subscription_name="Team B", deployment="embed", prompt_tokens=9),
        make_record(5, status_code=429, error_code="429", cost=0.0),
    ]
    lines = report(records)
    assert [(x.subscription, x.deployment, x.day) for x in lines] == [
        ("Team A", "chat", "2025-09-15"),
        ("Team A", "chat", "2025-09-16"),
        ("Team B", "embed", "2025-09-15"),
    ]
    a15, a16, b15 = lines
    assert (a15.requests, a15.prompt_tokens, a15.completion_tokens, a15.total_tokens, a15.errors) == (
        3,
        150,
        25,
        175,
        1,
    )
    assert a15.cost_usd == pytest.approx(0.0015) and a15.uncosted == 0
    assert (a16.requests, a16.errors, a16.cost_usd, a16.uncosted) == (1, 1, None, 1)  # no known cost: None, not 0
    assert (b15.total_tokens, b15.cost_usd) == (9, None)
    total = grand_total(lines)
    assert (total.requests, total.total_tokens, total.errors, total.uncosted) == (5, 191, 2, 2)
    assert total.cost_usd == pytest.approx(0.0015)


def test_table_aligns_numbers_right_and_text_left():
    table = format_table(("name", "tokens"), [["a", "5"], ["longer", "12345"]]).splitlines()
    assert table == ["name    tokens", "------  ------", "a            5", "longer   12345"]


def test_record_row_shows_missing_values_as_dash():
    row = record_row(make_record(1, prompt_tokens=3, completion_tokens=4, error_code=None, cost=None))
    assert row[1] == "req-0001" and row[5] == "200" and row[6] == "-" and row[8:11] == ["3", "4", "7"]
    assert row[12] == "-"
    assert row[14:17] == ["create", "yes", "0"]
    read = record_row(make_record(2, operation="retrieve", billable=False, cached_tokens=0, cost=0.0))
    assert read[14:16] == ["retrieve", "no"] and read[12] == "0"
    lower = record_row(make_record(3, cached_tokens=64, usage_quality="lower_bound"))
    assert lower[16:] == ["64", "lower_bound"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_prints_the_dashboard_url_and_serves_it(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "SQLITE_PATH": str(tmp_path / "gateway.db"),
        "GATEWAY_BACKENDS": "",
        "LOCAL_SUBSCRIPTIONS": "",
        "LOG_STORE": "sqlite",
        "CAPTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "serve", "--port", str(port), "--settings", str(tmp_path / "absent.json")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if line.startswith("Dashboard:") or not line:
                break
        dashboard = next((line for line in banner if line.startswith("Dashboard:")), None)
        assert dashboard is not None, "".join(banner)
        url = dashboard.split()[1]
        assert url == f"http://127.0.0.1:{port}/_dashboard"
        page = None
        for _ in range(200):  # the banner comes before uvicorn listens
            try:
                page = httpx.get(url, timeout=10)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert page is not None and page.status_code == 200 and 'data-requests="0"' in page.text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
