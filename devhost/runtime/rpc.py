"""The FunctionRpc protobuf messages, compiled from `function_rpc.proto` on first use.

The runtime is handed this module as `properties["protos"]`, exactly as the Functions host's proxy
worker hands it its own generated module. The generated code lives in the git-ignored `_rpc/`
package under its own name (never `shared`, which is this project's library).
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).parent
_PROTO = _HERE / "function_rpc.proto"
_OUT = _HERE / "_rpc"
_MODULE = "devhost.runtime._rpc.function_rpc_pb2"


class ProtosUnavailable(RuntimeError):
    """grpcio-tools is missing, or protoc rejected the .proto file."""


def _compile() -> None:
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - requirements-dev.txt installs it
        raise ProtosUnavailable("grpcio-tools is not installed: run `make venv`") from exc
    _OUT.mkdir(exist_ok=True)
    (_OUT / "__init__.py").touch()
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{_HERE}", f"-I{include}", f"--python_out={_OUT}", str(_PROTO)])
    if status != 0:
        raise ProtosUnavailable(f"protoc failed ({status}) on {_PROTO}")


@functools.cache
def protos() -> ModuleType:
    """The compiled messages module (compiled again when the .proto is newer), once per process."""
    generated = _OUT / "function_rpc_pb2.py"
    if not generated.exists() or generated.stat().st_mtime < _PROTO.stat().st_mtime:
        sys.modules.pop(_MODULE, None)
        _compile()
    return importlib.import_module(_MODULE)
