"""Stop azure-functions-runtime 1.3.0 from keeping one HTTP coordinator entry per invocation.

Its HTTP v2 coordinator adds an entry per invocation and, after handing the response to its web
server, clears the entry's fields but never deletes it: about 2 KB per request, for the life of
the worker (hundreds of MB an hour on a busy instance). The entry is of no use once the response
was popped, so the pop also deletes it. Harmless on a runtime that deletes it itself; a no-op where
the runtime is not the 3.13+ library (the host's own worker). tests/test_functions_runtime.py fails
if the runtime's internals change under this.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def release_http_invocations() -> bool:
    """Patch the coordinator once; True when the runtime is present and patched."""
    try:
        from azure_functions_runtime import http_v2
    except ImportError:
        return False
    coordinator = getattr(http_v2, "HttpCoordinator", None)
    original = getattr(coordinator, "_pop_http_response", None)
    if coordinator is None or original is None or not hasattr(http_v2.http_coordinator, "_context_references"):
        log.warning("azure-functions-runtime changed: its per-invocation HTTP entries are not released")
        return False
    if getattr(original, "releases_entry", False):
        return True

    def pop_and_release(self: Any, invoc_id: str) -> Any:
        try:
            return original(self, invoc_id)
        finally:
            self._context_references.pop(invoc_id, None)

    pop_and_release.releases_entry = True  # type: ignore[attr-defined]
    coordinator._pop_http_response = pop_and_release
    return True
