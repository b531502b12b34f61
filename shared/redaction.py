"""One redaction policy for everything the gateway stores: secrets out of headers, query strings,
paths, JSON bodies at any depth, form, multipart and text bodies and raw event streams, on the
request and the response alike, before anything is stored.

A value is a secret when its *name* says so (`api-key`, `x-upstream-token`, `client_secret`,
`subscription_key`, `sig`, `connectionString`, ...: `is_secret_name`), when its *shape* says so
(JWTs, `sk-...` keys, `Bearer ...`, SAS signatures, connection strings with `AccountKey=`,
PEM blocks: `redact_text`), or when it is a credential the gateway itself knows (an upstream key
it sends, the caller's key: `remember_secret`), wherever it appears, e.g. echoed by a backend.

Redaction only ever changes the stored copy: what is forwarded is decided elsewhere
(`is_secret_header` / `forwardable_query` drop the client's own credentials, nothing else).
Walks are iterative (a 1,000-deep JSON body cannot exhaust the stack) and copy on write.

One module because it is one policy: the name rules, the value shapes and the walkers over every
surface change together; split, a rule could reach one surface and miss another.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import re2

REDACTED = "[REDACTED]"

#: Header names whose values are the *client's* credentials: never forwarded upstream (compared lower-case).
SECRET_HEADERS = frozenset(
    {
        "api-key",
        "authorization",
        "proxy-authorization",
        "x-functions-key",
        "ocp-apim-subscription-key",
        "cookie",
        "set-cookie",
        "x-ms-token-aad-access-token",
        "x-ms-token-aad-id-token",
    }
)

#: Query parameter names whose values are the client's credentials: not forwarded (compared lower-case).
SECRET_QUERY_PARAMS = frozenset({"api-key", "code", "subscription-key", "sig", "access_token"})

#: Words that make a name secret wherever they appear in it (`x-upstream-token`, `db_password`).
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "auth",
        "authorization",
        "authentication",
        "signature",
        "sig",
        "sas",
        "credential",
        "credentials",
        "cookie",
        "apikey",
        "connectionstring",
        "privatekey",
        "accesskey",
        "accountkey",
        "sharedaccesskey",
        "bearer",
    }
)
#: Whole names (separators removed) that are secrets although no single word says so.
_SECRET_COMPACT = frozenset({"connectionstring", "apikey", "setcookie", "sastoken", "xapikey"})
#: Names that look secret by the rules above but are ordinary AOAI/HTTP fields.
_NOT_SECRET = frozenset(
    {
        "promptcachekey",
        "idempotencykey",
        "partitionkey",
        "rowkey",
        "key",
        "type",
        "authtype",
        "authenticationtype",
        "tokenizer",
    }
)
#: Fields that are credentials only inside an `authentication` object: elsewhere `key` is ordinary.
SECRET_AUTHENTICATION_FIELDS = frozenset({"key"})

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Does a header, query parameter, form field or JSON key name a credential?

    Words are split at separators and camelCase: `x-partner-key`, `subscriptionKey`, `access_token`,
    `X-Ms-Client-Secret` are secrets; `max_tokens`, `prompt_cache_key`, `key` alone are not. A name
    of several words ending in `key` is a secret (`x-api-key`, `partner_key`)."""
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    if not compact or compact in _NOT_SECRET:
        return False
    if compact in _SECRET_COMPACT:
        return True
    words = [w.lower() for w in _WORDS.findall(name)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return len(words) > 1 and words[-1] in ("key", "keys")


# ------------------------------------------------------------------------------------ value shapes
_SHAPES = re.compile(
    r"(?P<pem>-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----)"
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
    r"|(?P<sk>\bsk-[A-Za-z0-9_-]{16,})"
    # an ephemeral Realtime API client secret (POST /openai/v1/realtime/client_secrets answers one)
    r"|(?P<ek>\bek_[A-Za-z0-9_-]{16,})"
    # a credential after Bearer/Basic holds a digit or a symbol ("Bearer authentication" is prose)
    r"|(?P<bearer>\b(?:Bearer|Basic)\s+)(?P<bearer_value>(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{12,})"
    r"|(?P<assign>\b(?:AccountKey|SharedAccessKey|SharedAccessSignature|SharedSecretValue|Password|Pwd|"
    r"sig|client_secret|api[-_]?key|access_token|subscription[-_]key)=)(?P<assign_value>[^;&\s\"'<>]+)",
    re.IGNORECASE,
)
#: Every `_SHAPES` match contains one of these (case-insensitively), at most `_ANCHOR_BEFORE`
#: characters after the match starts: the PEM, JWT, `sk-`, `ek_` and Bearer/Basic shapes start at their
#: marker, an assignment (`SharedAccessSignature=`...) at most 22 characters before its `=`.
_MARKERS: tuple[str, ...] = ("-----begin", "eyj", "sk-", "ek_", "bearer", "basic", "key=", "signature=", "value=")
_MARKERS += ("password=", "pwd=", "sig=", "secret=", "token=")
_ANCHOR_BEFORE = 24
_MARKER_SCAN = re.compile("|".join(re.escape(marker) for marker in _MARKERS))


#: Every secret name (`is_secret_name`) contains one of these, lower-cased.
_SECRET_NAME_PARTS: tuple[str, ...] = ("token", "secret", "pass", "pwd", "auth", "sig", "sas", "credential")
_SECRET_NAME_PARTS += ("cookie", "key", "connection", "bearer")
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")


_SECRET_NAME_PARTS_B = tuple(part.encode() for part in _SECRET_NAME_PARTS)


def _lowered_bytes(text: str) -> bytes | None:
    """`text` as lower-cased UTF-8 bytes (ASCII letters only: every marker and name part is ASCII),
    where searching is a memchr-fast scan; None when the text cannot be encoded (lone surrogates)."""
    try:
        return text.encode("utf-8").lower()
    except UnicodeEncodeError:
        return None


def _may_hold_secret_pair(lowered: bytes) -> bool:
    """Whether a `"name": "string"` pair whose name may be secret occurs in `lowered` (a lower-cased
    JSON text as bytes): `_JSON_PAIR`'s per-pair callback runs only then. A stream's
    `"completion_tokens": 12` is no candidate: its value is not a string."""
    n = len(lowered)
    for part in _SECRET_NAME_PARTS_B:
        at = lowered.find(part)
        while at >= 0:
            end = at + len(part)
            while end < n and lowered[end] in _NAME_BYTES:
                end += 1
            if end < n and lowered[end] == 0x22:  # '"'
                rest = lowered[end + 1 : end + 40].lstrip()
                if rest.startswith(b":") and rest[1:].lstrip().startswith(b'"'):
                    return True
            at = lowered.find(part, at + 1)
    return False


#: Texts at least this long are screened by one RE2 pass first (`_screen`); shorter ones go straight
#: to the scan below, where a call into RE2 would cost more than it saves.
_SCREEN_FROM = 2048
#: Whitespace as `re`'s `\s` matches it in a str pattern (ASCII, \x1c-\x1f, NEL and Unicode separators).
_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f \x{85}\pZ]*"
_MARKERS_RE2 = "|".join(re.escape(marker) for marker in _MARKERS)
#: A `"name": "string"` pair whose name contains a secret part: what `_JSON_PAIR` could redact.
_PAIR_RE2 = "(?:" + "|".join(_SECRET_NAME_PARTS) + r')[a-z0-9_.\-]*"' + _WS + ":" + _WS + '"'
# One linear-time DFA pass over the UTF-8 bytes, case folded as Unicode (a superset of the
# ASCII lower-casing the exact scans use, so a text the screen passes holds nothing they would find).
_SHAPE_SCREEN = re2.compile(("(?i)" + _MARKERS_RE2).encode())
_EVENT_SCREEN = re2.compile(("(?i)" + _MARKERS_RE2 + "|" + _PAIR_RE2).encode())


def _screen(screen: Any, text: str) -> bool:
    """False when `text` certainly holds nothing `screen` looks for (one RE2 pass, ~1.5 ns a byte,
    where `re` over a 100 KB stream costs milliseconds); True when the exact scan must decide."""
    if len(text) < _SCREEN_FROM:
        return True
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the exact scan decides
        return True
    return screen.search(data) is not None


def _redact_shapes(text: str) -> str:
    """`_SHAPES.sub(_shape, text)`, without running the pattern over the whole text: the markers
    are found in the lower-cased text (one literal scan, then `str.find` per marker when there is
    one), and the pattern is only tried (anchored, `match`) where a match can start near one, in
    order, so the result is the same. The case-insensitive pattern over a 100 KB stream costs
    milliseconds; this costs a lower() and a scan."""
    if not _screen(_SHAPE_SCREEN, text):
        return text
    lowered = text.lower()
    if len(lowered) != len(text):  # a character whose lower case is longer: positions would shift
        return _SHAPES.sub(_shape, text)
    if _MARKER_SCAN.search(lowered) is None:
        return text  # the common case: one scan of the lower-cased text (no case folding per character)
    starts: set[int] = set()
    for marker in _MARKERS:
        at = lowered.find(marker)
        while at >= 0:
            if marker.endswith("="):
                starts.update(range(max(0, at + len(marker) - _ANCHOR_BEFORE), at + 1))
            else:
                starts.add(at)
            at = lowered.find(marker, at + 1)
    if not starts:
        return text
    out: list[str] = []
    done = 0
    for start in sorted(starts):
        if start < done:
            continue
        m = _SHAPES.match(text, start)
        if m is None or m.end() == m.start():
            continue
        out.append(text[done : m.start()])
        out.append(_shape(m))
        done = m.end()
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


#: Credentials the gateway holds (longest first, so a key containing another is replaced whole).
_known: list[str] = []


def remember_secret(value: str | None) -> None:
    """A credential the gateway holds (an upstream api-key): redacted wherever it turns up."""
    if value and len(value) >= 8 and value not in _known:
        _known.append(value)
        _known.sort(key=len, reverse=True)


def _longest_first(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if v and len(v) >= 8}, key=len, reverse=True))


def _shape(m: re.Match[str]) -> str:
    if m["bearer"]:
        return m["bearer"] + REDACTED
    if m["assign"]:
        return m["assign"] + REDACTED
    return REDACTED


class Redactor:
    """The policy for one exchange: the shapes, the gateway's known secrets and this request's own
    credentials (the caller's key), so that an answer echoing any of them is redacted too."""

    __slots__ = ("_extra",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._extra = _longest_first(secrets)

    def text(self, value: str) -> str:
        """A string with every secret shape and known secret replaced (the same object when none)."""
        return self._known_replaced(value, _redact_shapes(value))

    def _known_replaced(self, value: str, out: str) -> str:
        """`out` (`value` after the shapes) with the known secrets replaced; `value` when unchanged."""
        for known in (_known, self._extra):
            for secret in known:
                if secret in out:  # a substring search in C: cheap on long prompts
                    out = out.replace(secret, REDACTED)
        return value if out == value else out

    # --- names and values ---------------------------------------------------------------------
    def headers(self, headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
        """Lower-case names, repeated headers joined with ', ', secret values replaced."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        out: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            value = REDACTED if (key in SECRET_HEADERS or is_secret_name(key)) else self.text(value)
            out[key] = f"{out[key]}, {value}" if key in out else value
        return out

    def query(self, params: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
        """Query parameters as a dict (last value wins), secret values replaced."""
        items = params.items() if isinstance(params, Mapping) else params
        return {self.text(k): (REDACTED if _secret_param(k) else self.text(v)) for k, v in items}

    def path(self, path: str) -> str:
        """A path with a key smuggled into it (`.../completions?api-key=...` once decoded) redacted."""
        if "=" in path:
            path = _PATH_PARAM.sub(lambda m: m[1] + (REDACTED if _secret_param(m[2]) else m[3]), path)
        return self.text(path)

    def form(self, raw: str) -> str:
        pairs = parse_qsl(raw, keep_blank_values=True)
        return urlencode([(k, REDACTED if _secret_param(k) else self.text(v)) for k, v in pairs])

    def event_text(self, raw: str) -> str:
        """A raw event stream (or any JSON-ish text): `"name": "value"` pairs with a secret name,
        and every secret shape."""
        if not _screen(_EVENT_SCREEN, raw):
            return self._known_replaced(raw, raw)
        lowered = _lowered_bytes(raw) if '":' in raw else b""
        if lowered is None or (lowered and _may_hold_secret_pair(lowered)):
            raw = _JSON_PAIR.sub(self._pair, raw)
        return self.text(raw)

    def _pair(self, m: re.Match[str]) -> str:
        name = m["name"]
        if is_secret_name(name) and not (name == "token" and '"logprob"' in m.string[m.end() : m.end() + 60]):
            return f'{m["head"]}"{REDACTED}"'
        return m[0]

    # --- JSON ---------------------------------------------------------------------------------
    def json(self, value: Any) -> Any:
        """A parsed JSON value with credentials replaced; the same object when there are none.

        Copy on write, iterative. A secret-named field's value (a string, number or list) is
        replaced whole, except an object, which is walked instead: in a JSON schema
        (`tools[].function.parameters.properties.password`) the name belongs to a parameter. A
        logprobs entry's `token` is the model's output, not a credential."""
        if not isinstance(value, (dict, list)):
            return self.text(value) if isinstance(value, str) else value
        # frame: [container, items iterator, name of the container, copy (None until changed), key being walked]
        stack: list[list[Any]] = [[value, _items(value), None, None, None]]
        while True:
            frame = stack[-1]
            container, items, cname = frame[0], frame[1], frame[2]
            step = next(items, _DONE)
            if step is _DONE:
                stack.pop()
                done = container if frame[3] is None else frame[3]
                if not stack:
                    return done
                parent = stack[-1]
                if done is not container:
                    if parent[3] is None:
                        parent[3] = dict(parent[0]) if isinstance(parent[0], dict) else list(parent[0])
                    parent[3][parent[4]] = done
                continue
            key: Any
            item: Any
            key, item = step  # type: ignore[misc]  # a (key, value) pair from _items
            if isinstance(container, dict):
                name = key if isinstance(key, str) else None
                secret = name is not None and (
                    (is_secret_name(name) and not (name == "token" and "logprob" in container))
                    or (
                        cname is not None
                        and cname.lower() == "authentication"
                        and name.lower() in SECRET_AUTHENTICATION_FIELDS
                    )
                )
                child_name = name
            else:
                secret, child_name = False, cname
            if secret and item is not None and not isinstance(item, (dict, bool)) and item != REDACTED:
                new: Any = REDACTED
            elif isinstance(item, dict) or (isinstance(item, list) and not _plain_numbers(item)):
                frame[4] = key
                stack.append([item, _items(item), child_name, None, None])
                continue
            elif isinstance(item, str):
                new = self.text(item)
            else:
                continue
            if new is not item:
                if frame[3] is None:
                    frame[3] = dict(container) if isinstance(container, dict) else list(container)
                frame[3][key] = new

    # --- bodies -------------------------------------------------------------------------------
    def raw_body(self, raw: bytes, content_type: str | None) -> bytes:
        """A body that is not stored as JSON (form, multipart, text, broken JSON), redacted as
        bytes; binary content (audio, images) comes back unchanged."""
        ctype = (content_type or "").lower()
        if ctype.startswith("multipart/"):
            return self.multipart(raw, content_type or "")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
        if ctype.startswith("application/x-www-form-urlencoded"):
            out = self.form(text)
        else:
            out = self.event_text(text)
        return raw if out == text else out.encode("utf-8")

    def multipart(self, raw: bytes, content_type: str) -> bytes:
        """Form fields of a multipart body (not its files) by name and shape."""
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        if not m:
            return raw
        delimiter = b"--" + m[1].encode("latin-1")
        parts = raw.split(delimiter)
        changed = False
        for i, part in enumerate(parts):
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                continue
            disposition = head.decode("latin-1")
            name = re.search(r'\bname="([^"]*)"', disposition)
            if name is None or "filename=" in disposition:
                continue
            trailer = b"\r\n" if content.endswith(b"\r\n") else b""
            value = content[: len(content) - len(trailer)]
            if is_secret_name(name[1]):
                new = REDACTED.encode()
            else:
                try:
                    new = self.event_text(value.decode("utf-8")).encode("utf-8")
                except UnicodeDecodeError:
                    continue
            if new != value:
                parts[i] = head + sep + new + trailer
                changed = True
        return delimiter.join(parts) if changed else raw


_DONE = object()
_PATH_PARAM = re.compile(r"([?&;/])([^=?&;/]+)=([^&;/]*)")
_JSON_PAIR = re.compile(r'(?P<head>"(?P<name>[A-Za-z0-9_.\-]{1,64})"\s*:\s*)"(?:[^"\\]|\\.)*"')
_SCALARS = (int, float, bool, type(None))


def _items(container: Any) -> Any:
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _plain_numbers(items: list[Any]) -> bool:
    """Token ids, embedding vectors: nothing to look into (checked in C, not per item)."""
    return all(isinstance(x, _SCALARS) for x in items) if len(items) < 8 else _SCALAR_TYPES.issuperset(map(type, items))


_SCALAR_TYPES = frozenset({int, float, bool, type(None)})


def _secret_param(name: str) -> bool:
    return name.lower() in SECRET_QUERY_PARAMS or is_secret_name(name)


# ------------------------------------------------------------------------------ module-level API
_DEFAULT = Redactor()


def is_secret_header(name: str) -> bool:
    """A client credential header: not forwarded upstream (the stored copy uses `is_secret_name` too)."""
    return name.lower() in SECRET_HEADERS


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    return _DEFAULT.headers(headers)


def redact_query(params: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    return _DEFAULT.query(params)


def redact_text(value: str) -> str:
    return _DEFAULT.text(value)


def forwardable_query(params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's query without its credentials, for the upstream call."""
    return [(k, v) for k, v in params if k.lower() not in SECRET_QUERY_PARAMS]


def redact_body_secrets(value: Any) -> Any:
    """A parsed JSON body with credential values replaced; the same object when there are none."""
    return _DEFAULT.json(value)


def request_secrets(headers: Iterable[tuple[str, str]], query: Iterable[tuple[str, str]]) -> list[str]:
    """The caller's own credentials in this request (its key), to be redacted wherever echoed."""
    found = [v for k, v in headers if k.lower() in SECRET_HEADERS or is_secret_name(k)]
    found += [v for k, v in query if _secret_param(k)]
    out = []
    for v in found:
        v = v.strip()
        if v[:7].lower() == "bearer ":
            v = v[7:].strip()
        if len(v) >= 8:
            out.append(v)
    return out
