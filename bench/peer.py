"""The peer: LiteLLM's proxy, in its own virtual environment, configured as an Azure OpenAI proxy.

The virtual environment is created under `bench/.venv-litellm` from `bench/requirements-litellm.txt`
(fully pinned) the first time the bench runs. LiteLLM's network-bound extras stay off: the model cost
map is read from the package (`LITELLM_LOCAL_MODEL_COST_MAP`), telemetry and callbacks are disabled.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from bench.servers import ROOT, Server, start

VENV = ROOT / "bench" / ".venv-litellm"
REQUIREMENTS = ROOT / "bench" / "requirements-litellm.txt"
MASTER_KEY = "sk-bench-master-key"
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_SCHEMA_UPDATE": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    # Keep every client library offline (tokenizers, hub).
    "HF_HUB_OFFLINE": "1",
}


def ensure_venv(say=print) -> Path:  # type: ignore[no-untyped-def]
    """The peer's python, installing it when the pinned requirements changed (or on first use)."""
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    say(f"installing the peer (LiteLLM) into {VENV.relative_to(ROOT)} (about a minute, once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(digest)
    return python


def version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def config(simulator_url: str, deployment: str, api_key: str) -> dict:  # type: ignore[type-arg]
    return {
        "model_list": [
            {
                "model_name": deployment,
                "litellm_params": {
                    "model": f"azure/{deployment}",
                    "api_base": simulator_url,
                    "api_key": api_key,
                    "api_version": "2024-10-21",
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY, "disable_spend_logs": True},
        "litellm_settings": {
            "telemetry": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "turn_off_message_logging": True,
        },
    }


def start_peer(python: Path, port: int, workdir: Path, simulator_url: str, deployment: str, api_key: str) -> Server:
    path = workdir / "litellm.config.json"
    path.write_text(json.dumps(config(simulator_url, deployment, api_key)))
    litellm = python.parent / "litellm"
    return start(
        "litellm",
        [str(litellm), "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        port,
        workdir,
        ENV,
        timeout=120,
    )
