"""Which AOAI API a request path calls, and for which deployment, for both URL shapes.

`/openai/deployments/{deployment}/{operation}` (dated api-versions) and `/openai/v1/{operation}` or
`/openai/responses` (where the deployment is the body's `model`). Detection looks at the path only,
never at the body text (a prompt may mention any path).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ApiKind = Literal[
    "chat.completions",
    "completions",
    "embeddings",
    "images.generations",
    "audio.transcriptions",
    "audio.translations",
    "audio.speech",
    "responses",
    "other",
]
Surface = Literal["deployments", "v1"]

_OPERATIONS: dict[str, ApiKind] = {
    "chat/completions": "chat.completions",
    "completions": "completions",
    "embeddings": "embeddings",
    "images/generations": "images.generations",
    "audio/transcriptions": "audio.transcriptions",
    "audio/translations": "audio.translations",
    "audio/speech": "audio.speech",
    "responses": "responses",
}
_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/(?P<op>.+?)/?$")
_V1_PATH = re.compile(r"^/openai/(?:v1/)?(?P<op>.+?)/?$")
_RESPONSE_ID = re.compile(r"^responses/(?P<id>[^/]+)(?:/.*)?$")


@dataclass(frozen=True, slots=True)
class ApiRoute:
    api: ApiKind
    surface: Surface
    #: The deployment named in the path (None on the v1 surface: see `deployment_for`).
    deployment: str | None
    #: For GET/DELETE `/responses/{id}` and its sub-resources.
    response_id: str | None = None


def classify(path: str) -> ApiRoute | None:
    """The API a path calls, or None when the path is not an AOAI data-plane path at all."""
    m = _DEPLOYMENT_PATH.match(path)
    if m:
        op = m["op"]
        return ApiRoute(api=_OPERATIONS.get(op, "other"), surface="deployments", deployment=m["deployment"])
    if path == "/openai/deployments":
        return ApiRoute(api="other", surface="v1", deployment=None)  # the deployment list (GET)
    if path.startswith("/openai/deployments"):
        return None
    m = _V1_PATH.match(path)
    if not m:
        return None
    op = m["op"]
    rid = _RESPONSE_ID.match(op)
    if rid:
        return ApiRoute(api="responses", surface="v1", deployment=None, response_id=rid["id"])
    return ApiRoute(api=_OPERATIONS.get(op, "other"), surface="v1", deployment=None)


#: What an AOAI data-plane path can hold once the server decoded it: printable ASCII without `%`
#: (a second encoding layer), `\\`, `?` or `#`. Anything else (an overlong UTF-8 sequence decoded
#: to U+FFFD, a NUL, a double-encoded dot) is refused rather than guessed at.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/]+$")


def resolve_path(path: str) -> str | None:
    """The path with doubled slashes collapsed and dot-segments resolved, or None when it leaves
    `/openai/...` or holds characters no AOAI path has.

    Done once, on the decoded path, so that the upstream URL is built only from what the router
    classified: a path the backend would resolve differently (`/openai/../x`) must never be sent.
    """
    if not _PATH_CHARS.match(path):
        return None
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
            continue
        segments.append(segment)
    if not segments or segments[0] != "openai":
        return None
    resolved = "/" + "/".join(segments)
    return resolved + "/" if path.endswith("/") and not path.endswith("/.") else resolved


def deployment_for(route: ApiRoute, body: Any) -> str | None:
    """The deployment: from the path, else the JSON body's `model` (v1 surface, `/openai/responses`)."""
    if route.deployment is not None:
        return route.deployment
    if isinstance(body, Mapping):
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return None


def api_version(query: Mapping[str, str]) -> str | None:
    return query.get("api-version") or None


def version_at_least(version: str | None, minimum: str) -> bool:
    """Compare dated api-versions (YYYY-MM-DD[-preview]); 'v1', 'preview' and 'latest' count as newest."""
    if version is None:
        return False
    if not version[:4].isdigit():
        return True
    return version[:10] >= minimum[:10]


Operation = Literal["create", "retrieve", "list", "delete", "cancel", "update", "content", "other"]

#: APIs whose `create` runs a model and so uses tokens (or audio seconds, or images).
GENERATIVE_APIS: frozenset[str] = frozenset(_OPERATIONS.values())
_CANCEL = re.compile(r"/cancel/?$")
_CONTENT = re.compile(r"/content/?$")
_COLLECTIONS = frozenset(
    {
        "models",
        "files",
        "batches",
        "jobs",
        "vector_stores",
        "deployments",
        "responses",
        "conversations",
        "items",
        "evals",
        "runs",
        "containers",
        "assistants",
        "threads",
    }
)
_SUB_LIST = re.compile(r"/(?:input_items|events|checkpoints|files|messages)/?$")


def operation(method: str, path: str, route: ApiRoute | None) -> Operation:
    """What a request does to its resource, from the method and the path alone.

    A POST to a generative API creates a model answer (`create`); reading, listing, deleting or
    cancelling an object that already exists (a stored response, a file, a batch) does no model
    work, whatever the object it reads says about the tokens it once used.
    """
    verb = (method or "").upper()
    if _CANCEL.search(path) and verb == "POST":
        return "cancel"
    if verb == "DELETE":
        return "delete"
    if verb in ("GET", "HEAD"):
        if _CONTENT.search(path):
            return "content"
        if route is not None and route.response_id is not None and not _SUB_LIST.search(path):
            return "retrieve"
        if _SUB_LIST.search(path) or _is_collection(path):
            return "list"
        return "retrieve"
    if verb == "POST":
        if route is not None and route.response_id is not None:
            return "other"
        return "create"
    if verb in ("PATCH", "PUT"):
        return "update"
    return "other"


def billable(api: str, op: str) -> bool:
    """Only creating an answer with a model is billed; management and read calls never are."""
    return api in GENERATIVE_APIS and op == "create"


def _is_collection(path: str) -> bool:
    """`/openai/models`, `/openai/v1/files`, `/openai/batches`: a collection has no id after its name."""
    m = _V1_PATH.match(path)
    if not m or path.startswith("/openai/deployments"):
        return path.rstrip("/").endswith("/deployments")
    parts = [p for p in m["op"].split("/") if p]
    return bool(parts) and parts[-1] in _COLLECTIONS
