"""What `python -m devhost` checks and prepares before it prints anything or serves a request.

A new user's first mistakes (a busy port, a settings file that is not JSON, a misspelt setting,
the sample's placeholder endpoint, an api_key backend whose key setting is unset) each end
start-up with one line that says what to change, instead of a traceback or a 502 per request.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from textwrap import shorten

import orjson

from proxy.routing.backends import check_backends
from shared.errors import ConfigurationError
from shared.settings import Settings, misspelled
from shared.wiring import check_settings

#: The dev host's own client key when LOCAL_SUBSCRIPTIONS is empty, beside the local data.
LOCAL_KEY_FILE = "local-key"


def _listens(host: str, port: int) -> OSError | None:
    """Bind (without listening) as uvicorn would; the error, or None when the port is free."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def free_port_after(host: str, port: int, tries: int = 50) -> int | None:
    """The first free port above `port`, to suggest."""
    return next((p for p in range(port + 1, min(port + tries, 65535) + 1) if _listens(host, p) is None), None)


def port_holder(port: int) -> str | None:
    """`pid 1234 (python -m devhost)` for the process listening on `port`, when /proc tells (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = " ".join((proc / "cmdline").read_bytes().decode(errors="replace").split("\0")).split()
                return f"pid {proc.name} ({shorten(' '.join(command), 80, placeholder='...')})"
        except OSError:
            continue
    return None


def check_port(host: str, port: int) -> None:
    """ConfigurationError (one line: which port, what to use instead) when `host:port` cannot be served."""
    error = _listens(host, port)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        free = free_port_after(host, port)
        instead = f"choose another with --port {free}" if free else "choose another with --port"
        holder = port_holder(port)
        by = f"by {holder}" if holder else "(another `python -m devhost` or `func start`?)"
        raise ConfigurationError(f"port {port} on {host} is already in use {by}: stop that process or {instead}")
    raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}")


def read_settings_file(path: Path) -> dict[str, str]:
    """A local.settings.json file's `Values`; invalid JSON is `file:line:column: message`."""
    text = path.read_text(encoding="utf-8")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
    values = data.get("Values") if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{path}: 'Values' must be an object of setting names and values")
    return {str(name): "" if value is None else str(value) for name, value in values.items()}


def misspelling_warnings(path: Path, values: Mapping[str, str]) -> list[str]:
    """One warning per setting name in the file that looks like a misspelt declared setting."""
    referenced = _referenced_settings(values)
    return [
        f"warning: {path}: unknown setting {name!r} (did you mean {known!r}?)"
        for name, known in misspelled(values, also_known=referenced)
    ]


def _referenced_settings(values: Mapping[str, str]) -> set[str]:
    """Setting names other settings point to (an api_key backend's `setting`, CONTENT_SAFETY_KEY_SETTING)."""
    names = {values.get("CONTENT_SAFETY_KEY_SETTING") or ""}
    try:
        backends = orjson.loads(values.get("GATEWAY_BACKENDS") or "[]")
    except orjson.JSONDecodeError:
        backends = []
    for backend in backends if isinstance(backends, list) else []:
        auth = backend.get("auth") if isinstance(backend, dict) else None
        if isinstance(auth, dict) and isinstance(auth.get("setting"), str):
            names.add(auth["setting"])
    return names - {""}


def check_configuration(env: Mapping[str, str]) -> Settings:
    """Every setting, the backends and the adapters' needs, as the app checks them when it loads."""
    settings = Settings.from_env(env)
    check_backends(settings)
    check_settings(settings)
    return settings


def local_key(directory: Path, *, new: bool = False) -> tuple[str, bool]:
    """The dev host's client key, kept in `directory/local-key` so it stays the same across runs.

    Returns (key, whether it was just made); `new` replaces a stored one.
    """
    from devhost.subscriptions import new_local_key

    path = directory / LOCAL_KEY_FILE
    if not new and path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored, False
    key = new_local_key()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key + "\n")
    return key, True
