"""Start-up cost of the settings: `python -m bench.settings_startup [--runs N] [--baseline DIR]`.

Each figure is the median over fresh interpreters (no warm module cache), in milliseconds:
- `settings_import`: importing `shared.settings` once the app's own dependencies (azure.functions,
  FastAPI, hence pydantic) are loaded, as in the Function App;
- `first_from_env`: the first `Settings.from_env` over local.settings.sample.json (every setting
  validated, JSON shapes included);
- `cold`: importing `shared.settings` and reading the settings in a bare interpreter (a CLI);
- `function_app`: importing `function_app` (the whole app, as the Functions host loads it).

`--baseline DIR` runs the same in another checkout (e.g. `git archive <commit> | tar -x -C DIR`) and
prints both, interleaved run by run so that load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IN_APP = r"""
import json, time
import azure.functions, fastapi
from azurefunctions.extensions.http.fastapi import Request
t0 = time.perf_counter()
from shared.settings import Settings
t1 = time.perf_counter()
Settings.from_env(json.load(open("local.settings.sample.json"))["Values"])
t2 = time.perf_counter()
print(json.dumps({"settings_import": (t1 - t0) * 1e3, "first_from_env": (t2 - t1) * 1e3}))
"""
COLD = r"""
import json, time
t0 = time.perf_counter()
from shared.settings import Settings
Settings.from_env({})
print(json.dumps({"cold": (time.perf_counter() - t0) * 1e3}))
"""
APP = r"""
import json, os, time
os.environ["GATEWAY_BACKENDS"] = "[]"
t0 = time.perf_counter()
import function_app
print(json.dumps({"function_app": (time.perf_counter() - t0) * 1e3}))
"""


def _run(code: str, cwd: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def measure(trees: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for _ in range(runs):
        for name, tree in trees.items():
            for code in (IN_APP, COLD, APP):
                for key, value in _run(code, tree).items():
                    samples[name].setdefault(key, []).append(value)
    return {name: {k: round(statistics.median(v), 1) for k, v in s.items()} for name, s in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.settings_startup")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    args = parser.parse_args(argv)
    trees = {"this tree": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    for name, figures in measure(trees, args.runs).items():
        print(f"{name}: " + ", ".join(f"{k} {v} ms" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
