"""Request bodies as plain dicts, normalized only where the usage record needs a fixed shape.

Every field the client sent is kept, known or not (typed request models would drop unknown fields
and reject `stop` arrays, `logit_bias` objects, array prompts and `logprobs` objects). Only
`stream`, `n`, `stop`, and the `prompt` / `input` of completions and embeddings are normalized, and
those are tolerant: a value of an unexpected type is kept as sent and never raises.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
from collections.abc import Mapping
from typing import Any

#: Form fields of audio uploads worth keeping (the file itself is never kept).
_FORM_FIELDS = ("model", "prompt", "language", "response_format", "temperature", "timestamp_granularities[]")


def parse_request(api: str, body: Any, content_type: str | None = None) -> dict[str, Any]:
    """The normalized request: a copy of the JSON body with the record's fields given fixed shapes."""
    if isinstance(body, Mapping) and "base64" in body and len(body) == 1:
        return _binary_request(body["base64"], content_type)
    if not isinstance(body, Mapping):
        return {"body": body} if body is not None else {}
    req = dict(body)
    req["stream"] = body.get("stream") is True
    n = body.get("n")
    req["n"] = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    if "stop" in body:
        req["stop"] = as_list(body.get("stop"))
    if api == "completions" and "prompt" in body:
        req["prompt"] = as_list(body.get("prompt"), token_array=True)
    if api == "embeddings" and "input" in body:
        req["input"] = as_list(body.get("input"), token_array=True)
    return req


def as_list(value: Any, *, token_array: bool = False) -> list[Any]:
    """A scalar or a list as a list; a flat token array (list of ints) stays one item when asked."""
    if value is None:
        return []
    if isinstance(value, list):
        if token_array and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value]
        return list(value)
    return [value]


def include_usage(request: Mapping[str, Any]) -> bool:
    """The client asked for a usage chunk at the end of its stream."""
    options = request.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _binary_request(b64: Any, content_type: str | None) -> dict[str, Any]:
    """Multipart uploads (audio): the text form fields only; the file is summarized, never kept."""
    info: dict[str, Any] = {"content_type": content_type}
    if not isinstance(b64, str) or not content_type or "multipart/form-data" not in content_type.lower():
        return info
    try:
        raw = base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return info
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + raw
    )
    files: list[dict[str, Any]] = []
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        if filename is not None:
            files.append({"field": name, "filename": filename, "bytes": len(payload)})
        elif name in _FORM_FIELDS or name == "stream":
            info[str(name)] = payload.decode("utf-8", "replace")
    if files:
        info["files"] = files
    if "stream" in info:
        info["stream"] = info["stream"].strip().lower() == "true"
    return info
