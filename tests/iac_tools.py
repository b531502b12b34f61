"""Runs the IaC tools (pycep-parser, checkov) from their own virtualenv, `.venv-iac`.

checkov pins packages that conflict with the app's runtime pins, so it never shares `.venv`
(`make iac-venv` builds it from requirements-iac.txt; `make test` does that first and sets
REQUIRE_IAC=1 so a missing venv fails instead of skipping).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IAC_VENV = Path(os.environ.get("IAC_VENV", ROOT / ".venv-iac"))
BICEP_DIR = ROOT / "bicep"

_PARSE = """
import json, sys
from pathlib import Path
from pycep import BicepParser
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = {"ok": True, "json": BicepParser().parse(file_path=Path(name))}
    except Exception as exc:  # report every file, not just the first failure
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out, default=str))
"""


def iac_python() -> Path:
    python = IAC_VENV / "bin" / "python"
    if not python.exists():
        message = f"IaC virtualenv missing at {IAC_VENV}: run `make iac-venv` (`make test` does it)"
        if os.environ.get("REQUIRE_IAC") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def bicep_files() -> list[Path]:
    return sorted(BICEP_DIR.rglob("*.bicep"))


def parse_bicep(files: list[Path]) -> dict[Path, dict[str, Any]]:
    """pycep-parser's JSON for each file: {"ok": bool, "json": ... | "error": str}."""
    done = subprocess.run(
        [str(iac_python()), "-c", _PARSE, *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return {Path(name): result for name, result in json.loads(done.stdout).items()}


def run_checkov() -> dict[str, Any]:
    """checkov's bicep scan of bicep/ as JSON (offline: --skip-download)."""
    checkov = IAC_VENV / "bin" / "checkov"
    iac_python()
    done = subprocess.run(
        [str(checkov), "-d", str(BICEP_DIR), "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    # checkov exits 1 when a check fails; the JSON on stdout is the result either way.
    if not done.stdout.strip():
        raise AssertionError(f"checkov produced no report (exit {done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report
