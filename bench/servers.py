"""The benchmark's server processes (simulator, dev host, peer): start on loopback, wait, measure RSS, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a peer may run its server in a child process)."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            frontier.append(child)
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def rss_kb(self) -> int:
        """Resident set size now, summed over the process tree."""
        return sum(_status_kb(p, "VmRSS") for p in process_tree(self.proc.pid))

    def peak_rss_kb(self) -> int:
        """Peak resident set size (VmHWM) since start, summed over the process tree."""
        return sum(_status_kb(p, "VmHWM") for p in process_tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start(
    name: str, argv: list[str], port: int, workdir: Path, env: dict[str, str] | None = None, timeout: float = 90.0
) -> Server:
    """Run `argv` with output to `<workdir>/<name>.log` and wait until it accepts connections on `port`."""
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}; see {log_path}:\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Server(name, f"http://127.0.0.1:{port}", proc, log_path)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not listen on {port} within {timeout:.0f} s; see {log_path}")


def start_devhost(
    name: str, settings: Path, workdir: Path, app: str | None = "bench.gateway_app", *, direct: bool = False
) -> Server:
    """`python -m devhost serve` with a Core Tools settings file, serving `app` (None: function_app);
    `direct`: the functions called in-process by the dev host, not through the Functions runtime."""
    port = free_port()
    argv = [sys.executable, "-m", "devhost", "serve", "--port", str(port), "--settings", str(settings)]
    argv += (["--app", app] if app else []) + (["--direct"] if direct else [])
    return start(name, argv, port, workdir, {"PYTHONPATH": str(ROOT)})
