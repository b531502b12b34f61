"""Personal data in text, found by pattern and proven by checksum, replaced by typed placeholders.

The approach is Microsoft Presidio's pattern recognizers (a regular expression finds candidates,
a validator keeps only those whose check digits hold, context words admit the bare digit runs a
checksum alone cannot tell from an order number), without its engine: Presidio's analyzer needs
spaCy (about 380 MB installed) and an NLP pipeline even for pattern recognizers, imports in 1.5 s,
tries to download a model and the public-suffix list at start-up, and scanned 0.04 MB/s on one
core here (docs/privacy.md has the measurements). The validators come from python-stdnum (IBAN,
Luhn, national identifiers) and phonenumbers (the library Presidio uses for phone numbers).

Placeholders are per exchange (`Placeholders`): the same value gets the same `<EMAIL_1>` in the
request, the answer and the record's details, so a conversation stays readable. Secrets (keys,
JWTs, connection strings, SAS signatures, PEM blocks) are the shared `Redactor`'s job and come out
as `[REDACTED]` before any recognizer runs.

One module because the recognizers share one scan (one pass over a text, overlaps resolved once)
and one placeholder table; they are a list of small entries here, not separate concepts.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import phonenumbers
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fi import hetu
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.se import personnummer
from stdnum.us import ssn

from shared.redaction import Redactor

#: Regions whose national phone formats are recognized without a leading `+` (with a context word
#: or the North American 3-3-4 shape). Numbers written internationally are recognized for all.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL")
#: How far before a candidate a context word is looked for (characters).
CONTEXT_CHARS = 48


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class Recognizer:
    """One kind of personal data: candidates by `pattern`, kept when `valid` (and, when `context`
    is set, when one of its words appears just before)."""

    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    context: tuple[str, ...] = ()
    #: A cheap whole-text test; the pattern is not run when it fails.
    needs: str | None = None
    #: Wins over a lower priority when two findings overlap.
    priority: int = 0
    #: A character every match contains (`@`): the pattern runs only in a window of `reach`
    #: characters around each occurrence, instead of over the whole text.
    anchor: str | None = None
    reach: int = 0

    def find(self, text: str) -> Iterable[Finding]:
        if self.needs is not None and self.needs not in text:
            return
        for m in self._matches(text):
            value = m[0]
            if self.context and not _has_context(text, m.start(), self.context):
                continue
            if self.valid(value):
                yield Finding(m.start(), m.end(), self.kind)

    def _matches(self, text: str) -> Iterator[re.Match[str]]:
        if self.anchor is None:
            yield from self.pattern.finditer(text)
            return
        end = 0
        at = text.find(self.anchor)
        while at != -1:
            if at >= end:
                for m in self.pattern.finditer(text, max(end, at - self.reach), min(len(text), at + self.reach)):
                    if m.start() <= at < m.end():
                        yield m
                        end = m.end()
                        break
            at = text.find(self.anchor, max(at + 1, end))


def _has_context(text: str, start: int, words: tuple[str, ...]) -> bool:
    before = text[max(0, start - CONTEXT_CHARS) : start].lower()
    return any(word in before for word in words)


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


# --- validators --------------------------------------------------------------------------------

_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9]|2)|35)")


def _card(value: str) -> bool:
    digits = _digits(value)
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(digits):
        return False
    # Written in groups, a card has the networks' groups (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners
    # 4-6-4); "1234 56 7890 ..." is a list of numbers, and the tail of a longer code is not a card.
    groups = [len(g) for g in re.split(r"[ -]", value)]
    if (
        len(groups) > 1
        and groups not in ([4, 6, 5], [4, 6, 4])
        and not (all(g == 4 for g in groups[:-1]) and groups[-1] in (3, 4) and len(groups) >= 4)
    ):
        return False
    return luhn.is_valid(digits)


def _iban(value: str) -> bool:
    return iban.is_valid(value)


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv6(value: str) -> bool:
    if value.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", value):
        return False
    try:
        ipaddress.IPv6Address(value.split("%", 1)[0])
    except ValueError:
        return False
    return True


_DATE = re.compile(r"^(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})$")
_THOUSANDS = re.compile(r"^\d{1,3}(?:[.,' ]\d{3})+$")
_NANP = re.compile(r"^(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}$")
_PHONE_WORDS = (
    "tel",
    "phone",
    "call",
    "mobile",
    "cell",
    "fax",
    "whatsapp",
    "sms",
    "telefon",
    "handy",
    "téléphone",
    "portable",
    "telefono",
    "cellulare",
    "móvil",
    "movil",
    "bel ",
)


def _phone(value: str, text: str = "", start: int = 0) -> bool:
    value = value.strip()
    if _DATE.match(value) or _THOUSANDS.match(value):
        return False
    digits = _digits(value)
    if not 7 <= len(digits) <= 15:
        return False
    if value.startswith(("+", "00")):
        candidate = "+" + value[2:] if value.startswith("00") else value
        return _valid_number(candidate, None)
    if not (_NANP.match(value) or _has_context(text, start, _PHONE_WORDS)):
        return False
    return any(_valid_number(value, region) for region in PHONE_REGIONS)


def _valid_number(value: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False


@dataclass(frozen=True, slots=True)
class PhoneRecognizer(Recognizer):
    """Phone numbers: international ones (`+`/`00`) by phonenumbers alone; national ones also need
    the North American shape or a context word, so dates and amounts stay."""

    def find(self, text: str) -> Iterable[Finding]:
        for m in self._matches(text):
            if _phone(m[0], text, m.start()):
                yield Finding(m.start(), m.end(), self.kind)


def _never(_: str) -> bool:
    return False


def _re(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# Each pattern starts with the character class its candidates start with and checks what precedes
# it after that (`\d(?<![\d-]\d)`): the engine then skips quickly to possible starts, which makes
# the whole set about three times faster than leading look-behinds.
RECOGNIZERS: tuple[Recognizer, ...] = (
    Recognizer(
        "EMAIL",
        _re(
            r"[\w.%+-](?<![\w.%+-].)[\w.%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
        ),
        lambda v: ".." not in v,
        needs="@",
        priority=9,
        anchor="@",
        reach=330,
    ),
    Recognizer(
        "IBAN",
        _re(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"),
        _iban,
        priority=8,
    ),
    Recognizer("CREDIT_CARD", _re(r"\d(?<![\w-]\d)(?:[ -]?\d){12,18}(?![\w-])"), _card, priority=7),
    Recognizer("US_SSN", _re(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\w-])"), ssn.is_valid, priority=6),
    Recognizer(
        "US_SSN",
        _re(r"\d(?<![\w-]\d)\d{8}(?![\w-])"),
        ssn.is_valid,
        context=("ssn", "social security", "social sec"),
        priority=6,
    ),
    Recognizer(
        "FR_NIR",
        _re(r"[12](?<!\w[12]) ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\w)"),
        nir.is_valid,
        priority=6,
    ),
    Recognizer(
        "IT_FISCAL_CODE",
        _re(
            r"[A-Z](?<!\w[A-Z])[A-Z]{5}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z](?!\w)"
        ),
        codicefiscale.is_valid,
        priority=6,
    ),
    Recognizer("ES_DNI", _re(r"\d(?<![\w-]\d)\d{7}-?[A-Z](?!\w)"), dni.is_valid, priority=6),
    Recognizer("ES_NIE", _re(r"[XYZ](?<![\w-][XYZ])-?\d{7}-?[A-Z](?!\w)"), nie.is_valid, priority=6),
    Recognizer("FI_HETU", _re(r"\d(?<![\w-]\d)\d{5}[-+ABCDEFUVWXY]\d{3}[0-9A-Y](?!\w)"), hetu.is_valid, priority=6),
    Recognizer(
        "SE_PERSONNUMMER", _re(r"\d(?<![\w-]\d)\d{5}(?:\d{2})?[-+]\d{4}(?![\w-])"), personnummer.is_valid, priority=5
    ),
    Recognizer(
        "DE_TAX_ID",
        _re(r"\d(?<![\w-]\d)\d ?\d{3} ?\d{3} ?\d{3}(?![\w-])"),
        idnr.is_valid,
        context=("steuer", "idnr", "identifikationsnummer", "tax id", "tin"),
        priority=5,
    ),
    Recognizer(
        "NL_BSN",
        _re(r"\d(?<![\w.-]\d)\d{3}\.?\d{2}\.?\d{3}(?![\w.-])"),
        bsn.is_valid,
        context=("bsn", "burgerservicenummer", "sofinummer"),
        priority=5,
    ),
    Recognizer("PL_PESEL", _re(r"\d(?<![\w-]\d)\d{10}(?![\w-])"), pesel.is_valid, context=("pesel",), priority=5),
    Recognizer(
        "IP_ADDRESS", _re(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)"), _ipv4, needs=".", priority=4
    ),
    Recognizer(
        "IP_ADDRESS",
        _re(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?:%[\w.]+)?(?![\w:])"),
        _ipv6,
        needs=":",
        priority=4,
        anchor=":",
        reach=48,
    ),
    PhoneRecognizer("PHONE", _re(r"[+(\d](?<![\w+].)[\d().\-/ ]{5,22}\d(?!\d)"), _never, priority=3),
)

_MAYBE = re.compile(r"[\d@]")


class Detector(Protocol):
    """What `find` runs: a pattern `Recognizer`, or a second stage such as shared/privacy/language.py."""

    @property
    def kind(self) -> str: ...

    @property
    def priority(self) -> int: ...

    def find(self, text: str) -> Iterable[Finding]: ...


def find(text: str, recognizers: Sequence[Detector] = RECOGNIZERS) -> list[Finding]:
    """Non-overlapping findings in `text`, in order (a longer or higher-priority finding wins)."""
    # Every pattern recognizer needs a digit or an `@`: prose costs one scan (a second stage still runs).
    patterns = _MAYBE.search(text) is not None
    found = [f for r in recognizers if patterns or not isinstance(r, Recognizer) for f in r.find(text)]
    if not found:
        return []
    priority = {r.kind: r.priority for r in recognizers}
    found.sort(key=lambda f: (f.start, -(f.end - f.start), -priority.get(f.kind, 0)))
    kept: list[Finding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            last = kept[-1]
            if priority.get(f.kind, 0) > priority.get(last.kind, 0) and f.end - f.start >= last.end - last.start:
                kept[-1] = f
            continue
        kept.append(f)
    return kept


def _canonical(kind: str, value: str) -> str:
    """One spelling per value: `+1 415-555-0132` and `(415) 555-0132` are the same number."""
    if kind == "EMAIL":
        return value.lower()
    if kind == "PHONE":
        for region in (None, *PHONE_REGIONS):
            try:
                number = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return re.sub(r"[\s().\-/]", "", value).upper()


#: The clean-text memo of a `PiiRedactor`: texts up to CLEAN_TEXT_CHARS, at most CLEAN_TEXTS of them.
CLEAN_TEXT_CHARS, CLEAN_TEXTS = 256, 4096


class Placeholders:
    """`<KIND_n>` per distinct value within one exchange."""

    __slots__ = ("_names", "_per_kind", "done")

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], str] = {}
        self._per_kind: Counter[str] = Counter()
        #: Texts already redacted in this exchange: the prompt is in the request and in the details.
        self.done: dict[str, str] = {}

    @property
    def distinct(self) -> dict[str, int]:
        """How many distinct values of each kind were replaced (what the exchange records, never the values)."""
        return dict(sorted(self._per_kind.items()))

    def __call__(self, kind: str, value: str) -> str:
        key = (kind, _canonical(kind, value))
        name = self._names.get(key)
        if name is None:
            self._per_kind[kind] += 1
            name = self._names[key] = f"<{kind}_{self._per_kind[kind]}>"
        return name


class PiiRedactor:
    """Secrets (the shared `Redactor`), then personal data, out of text and JSON values."""

    def __init__(self, recognizers: Sequence[Detector] = RECOGNIZERS, *, secrets: bool | Redactor = True) -> None:
        """`secrets=False` when the text went through the shared `Redactor` already (the capture)."""
        self.recognizers = tuple(recognizers)
        self.secrets = Redactor() if secrets is True else secrets or None
        #: Short texts the pattern recognizers found nothing in (header values recur on every
        #: request): a finding depends on the text alone, so the answer is the same next time.
        #: Only without a second stage (its answers are not ours to keep) and without secrets.
        self._clean: dict[str, None] | None = (
            {} if self.secrets is None and all(isinstance(r, Recognizer) for r in self.recognizers) else None
        )

    def prefetch(self, value: Any) -> None:
        """Give a second stage every text of a JSON value at once, so it can batch its calls."""
        stages = [r for r in self.recognizers if callable(getattr(r, "prefetch", None))]
        if stages:
            from shared.privacy.language import texts_of

            texts = texts_of(value)
            for stage in stages:
                stage.prefetch(texts)  # type: ignore[attr-defined]

    def text(self, value: str, placeholders: Placeholders) -> str:
        done = placeholders.done.get(value)
        if done is not None:
            return done
        clean = self._clean
        if clean is not None and value in clean:
            return value
        original = value
        if self.secrets is not None:
            value = self.secrets.text(value)
        findings = find(value, self.recognizers)
        if not findings:
            if clean is not None and len(value) <= CLEAN_TEXT_CHARS:
                if len(clean) >= CLEAN_TEXTS:
                    clean.clear()  # bounded: unique values (request ids) must not grow it for ever
                clean[value] = None
            if len(original) > 64:
                placeholders.done[original] = value
            return value
        out: list[str] = []
        at = 0
        for f in findings:
            out.append(value[at : f.start])
            out.append(placeholders(f.kind, value[f.start : f.end]))
            at = f.end
        out.append(value[at:])
        placeholders.done[original] = result = "".join(out)
        return result

    def json(self, value: Any, placeholders: Placeholders) -> Any:
        """A copy of a JSON value with every string redacted (keys are names, kept as they are)."""
        if isinstance(value, str):
            return self.text(value, placeholders)
        if not isinstance(value, (dict, list)):
            return value
        root: list[Any] = [value]
        stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
        while stack:
            parent, key, node = stack.pop()
            if isinstance(node, dict):
                copy: Any = dict(node)
                items: Iterable[tuple[Any, Any]] = copy.items()
            elif isinstance(node, list):
                copy = list(node)
                items = enumerate(copy)
            else:
                continue
            parent[key] = copy
            for k, v in list(items):
                if isinstance(v, str):
                    copy[k] = self.text(v, placeholders)
                elif isinstance(v, (dict, list)):
                    stack.append((copy, k, v))
        return root[0]
