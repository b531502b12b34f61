import json
import subprocess
import sys
from pathlib import Path

from parser.__main__ import main
from shared.normalize import record_schema
from testing.factories import exchange, text_stream

ROOT = Path(__file__).resolve().parents[1]


def _ex(rid):
    return exchange(
        request_id=rid,
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        sse_text=text_stream(["Hello"]),
    )


def test_replay_json_and_json_lines(tmp_path, capsys):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(_ex("one").to_dict(), indent=2))
    lines = tmp_path / "many.jsonl"
    lines.write_text("\n".join(json.dumps(_ex(r).to_dict()) for r in ("two", "three")) + "\n")
    assert main(["replay", str(single), str(lines)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["request_id"] for r in records] == ["one", "two", "three"]
    for r in records:
        record_schema.validate(r)
        assert r["completion_tokens"] == 1 and r["usage_source"] == "estimated"


def test_bad_line_is_reported_and_the_rest_still_printed(tmp_path, capsys):
    f = tmp_path / "mixed.jsonl"
    f.write_text(json.dumps(_ex("good").to_dict()) + "\n{broken\n" + json.dumps({"no": "exchange"}) + "\n")
    assert main(["replay", str(f), str(tmp_path / "absent.json")]) == 1
    captured = capsys.readouterr()
    assert [json.loads(line)["request_id"] for line in captured.out.splitlines()] == ["good"]
    assert f"{f}:2: not an exchange" in captured.err and f"{f}:3: not an exchange" in captured.err
    assert "absent.json: cannot read" in captured.err


def test_replay_as_a_module_with_details(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps(_ex("cli").to_dict()))
    out = subprocess.run(
        [sys.executable, "-m", "parser", "replay", "--details", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = json.loads(out.stdout)
    assert line["record"]["request_id"] == "cli"
    assert line["details"]["response"]["choices"][0]["message"]["content"] == "Hello"
