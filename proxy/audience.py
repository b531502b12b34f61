"""The caller's audience policy applied to one call: the allow-list check before anything is
forwarded, the model and deployment lists cut to what the caller may use, and the model of every
line of a batch input file checked when it is uploaded (`purpose=batch`).

The batch check runs on the upload because that is where the gateway holds the file's bytes: a
batch create names an uploaded file by id only, and every such file passed this check on its way in
(files uploaded around the gateway cannot be referred to through it with another account's key).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.call import ProxyCall
from shared.audience import SETTING, AudiencePolicy, AudienceTable, Resolved, operation_of
from shared.errors import BadRequest, DeploymentNotAllowed

#: The collections whose `data[].id` entries the allow-list cuts.
_LIST_OPERATIONS = frozenset({"models", "deployments"})


class AudienceGate:
    """One per process: the parsed `AUDIENCE_POLICIES` (and the capture levels the cache respects)."""

    def __init__(self, table: AudienceTable) -> None:
        self.table = table

    @property
    def active(self) -> bool:
        return bool(self.table.policies)

    def admit(self, call: ProxyCall) -> Resolved[AudiencePolicy]:
        """The caller's policy, noted on the exchange; raises DeploymentNotAllowed (403) for a
        deployment, operation or batch line outside it."""
        identity = call.recorder.identity
        resolved = self.table.policy_for(identity.product, identity.subscription_id)
        call.recorder.audience = {"rule": resolved.rule}
        policy = resolved.value
        if policy.deployments is None and policy.operations is None:
            return resolved
        operation = operation_of(call.route.api, call.path)
        if not policy.allows_operation(operation):
            raise DeploymentNotAllowed(
                f"The operation '{operation}' is not allowed for this subscription "
                f"(configured in {SETTING} entry '{resolved.rule}')."
            )
        deployment = call.deployment
        if deployment is None and call.method == "POST" and policy.deployments is not None:
            # The v1 surface's multipart uploads (audio, image edits) name the model in a form field.
            deployment = form_field(call.body, call.headers.get("content-type", ""), "model")
        if call.method == "POST" and deployment and not policy.allows_deployment(deployment):
            raise _not_allowed(deployment, resolved.rule)
        if operation == "files" and call.method == "POST" and policy.deployments is not None:
            for model in batch_models(call.body, call.headers.get("content-type", "")):
                if not policy.allows_deployment(model):
                    raise _not_allowed(model, resolved.rule, in_batch=True)
        return resolved

    def lists_to_filter(self, call: ProxyCall, resolved: Resolved[AudiencePolicy]) -> bool:
        """A model or deployment list the caller's allow-list must cut (GET /openai/models, /deployments)."""
        if call.method != "GET" or resolved.value.deployments is None:
            return False
        segments = [s for s in call.path.split("/") if s and s not in ("openai", "v1")]
        return len(segments) == 1 and segments[0] in _LIST_OPERATIONS


def _not_allowed(deployment: str, rule: str, *, in_batch: bool = False) -> DeploymentNotAllowed:
    where = " (a line of the batch input file)" if in_batch else ""
    return DeploymentNotAllowed(
        f"The deployment '{deployment}'{where} is not allowed for this subscription "
        f"(configured in {SETTING} entry '{rule}')."
    )


def filter_list(body: bytes, policy: AudiencePolicy) -> bytes:
    """`{"data": [{"id": ...}, ...]}` with only the entries the policy allows (a model also by its id
    without the version date); anything else unchanged."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
        return body
    parsed["data"] = [
        item
        for item in parsed["data"]
        if isinstance(item, Mapping)
        and isinstance(item.get("id"), str)
        and (policy.allows_deployment(item["id"]) or policy.allows_deployment(_MODEL_VERSION.sub("", item["id"])))
    ]
    return orjson.dumps(parsed)


#: A model id's version suffix (`gpt-4o-2024-08-06`): the models list names models, the allow-list
#: deployments, which are usually named after the model without its version.
_MODEL_VERSION = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _parts(body: bytes, content_type: str) -> list[Any]:
    if "multipart/form-data" not in content_type.lower():
        return []
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    return list(message.iter_parts()) if message.is_multipart() else []


def form_field(body: bytes, content_type: str, name: str) -> str | None:
    """A text field of a multipart form (not a file), or None."""
    for part in _parts(body, content_type):
        if part.get_param("name", header="content-disposition") == name and part.get_filename() is None:
            payload = part.get_payload(decode=True)
            return payload.decode("utf-8", "replace").strip() if isinstance(payload, bytes) else None
    return None


def batch_models(body: bytes, content_type: str) -> list[str]:
    """The `body.model` of every line of a `purpose=batch` JSONL upload (multipart); [] for other uploads.

    A line that is not a JSON request object is refused (400): AOAI would reject the batch anyway,
    and a line the gateway cannot read is a line it cannot check."""
    purpose: str | None = None
    files: list[bytes] = []
    for part in _parts(body, content_type):
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None or name == "file":
            files.append(data)
        elif name == "purpose":
            purpose = data.decode("utf-8", "replace").strip()
    if purpose != "batch":
        return []
    models: list[str] = []
    for data in files:
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            model = _line_model(line)
            if model is None:
                raise BadRequest(f"Line {number} of the batch input file has no body.model the gateway can read.")
            models.append(model)
    return models


def _line_model(line: bytes) -> str | None:
    try:
        item: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    body = item.get("body") if isinstance(item, dict) else None
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else None
