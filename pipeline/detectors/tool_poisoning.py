"""Tool-poisoning detection: the Agent OS memory-guard rules, run on every event.

The patterns are memory_guard's `_check_tool_poisoning` (agent-governance-toolkit, the
version with standing-instruction patterns), verbatim, and so is the severity logic, per
text field:
- a destructive command or an exfiltration / pipe-to-shell command → HIGH;
- a hidden-instruction tag wrapping either, or carrying a covert standing instruction → HIGH;
- a tag alone, or a bare curl/wget to a host (without a tag) → MEDIUM;
- standing-instruction phrasing without a tag, and other prose → nothing.

Each string in the CloudEvent `data` (the event's action, reason, resource, and every
string attribute, nested) is one field, judged on its own as memory_guard judges one
memory entry. The walk is bounded (depth, number of strings, characters per string and in
total) so one huge event cannot stall the pipeline. Findings never drop an event: they
become the signed extension `agtalerts` and `govpipe_poisoning_alerts_total{severity}`.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Protocol

import orjson

from pipeline.ops.metrics import Metrics

ALERTS = "agtalerts"
HIGH = "high"
MEDIUM = "medium"
MAX_DEPTH = 8
MAX_STRINGS = 512
MAX_FIELD_CHARS = 16_384
MAX_TOTAL_CHARS = 131_072

_I = re.IGNORECASE
# A tag name; memory_guard's full pattern adds `[^>]*>`, checked below with str.find so
# that many unclosed "<system" do not make the scan quadratic.
_TAG_START = re.compile(
    r"<\s*(important|system|instructions?|secret|admin|tool|tool_call|assistant)\b", _I)


class _LeadThenTail:
    """memory_guard's `LEAD[^STOPS]*TAIL`, found in linear time.

    The regex retries the scan to the line's end from every LEAD, which is quadratic in a
    line full of "curl" (a 16 KiB field took ~170 ms). Here every TAIL is found once, and
    only the stretch since the previous TAIL (or the last stop character) is searched
    for a LEAD that ends before it: the same matches, each character looked at a bounded
    number of times. A LEAD is a word and a TAIL starts with a non-word character, so no
    LEAD straddles a TAIL's start.
    """

    def __init__(self, lead: str, tail: str, stops: str) -> None:
        self.pattern = f"{lead}[^{stops}]*{tail}"
        self._lead = re.compile(lead, _I)
        self._tail = re.compile(tail, _I)
        self._stops = stops.replace("\\n", "\n").replace("\\|", "|")

    def search(self, text: str) -> bool:
        floor = 0  # no LEAD lies in [its segment's start, floor): searched already
        for tail in self._tail.finditer(text):
            at = tail.start()
            start = max([floor] + [text.rfind(stop, floor, at) + 1 for stop in self._stops])
            # endpos = at: the LEAD must end before the TAIL; its trailing \b is unchanged
            # because the TAIL's first character is not a word character.
            if self._lead.search(text, start, at):
                return True
            floor = at
        return False


class _Searcher(Protocol):
    def search(self, text: str, /) -> object: ...


# Each pattern with the literals any match must contain: `in` tests on the case-folded
# text are far cheaper than a regex search, and almost always fail. (casefold, not lower:
# IGNORECASE also matches U+017F long s for "s"; casefold maps it to "s", lower does not.
# No literal here has an "i", which IGNORECASE also matches with U+0131 dotless i.)
Rule = tuple[tuple[str, ...], _Searcher]
_DANGEROUS: list[Rule] = [
    # Destructive commands. memory_guard's `-[a-z]*r[a-z]*\b` backtracks quadratically on a
    # long word; the lookahead and possessive run below accept exactly the same words.
    (("rm",), re.compile(r"\brm\s+-(?=[a-z]*r)[a-z]*+\b", _I)),
    (("mkfs.",), re.compile(r"\bmkfs\.[a-z0-9]+\b", _I)),
    (("dd",), re.compile(r"\bdd\s+if=", _I)),
    (("{", "&"), re.compile(r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:")),
    (("chmod", "777"), re.compile(r"\bchmod\s+-?[a-z]*\s*777\b", _I)),
    (("/dev/sd",), re.compile(r">\s*/dev/sd[a-z]\b", _I)),
    # Pipe-to-shell and upload flags.
    (("|",), _LeadThenTail(r"\b(curl|wget)\b", r"\|\s*(sudo\s+)?(ba|z|k)?sh\b", r"\n|")),
    (("|",), _LeadThenTail(r"\b(curl|wget)\b", r"\|\s*(python[0-9.]*|perl|ruby|node)\b",
                           r"\n|")),
    (("curl", "-"), _LeadThenTail(r"\bcurl\b", r"\s(-d|--data|-T|--upload-file|-F|--form)\b",
                                  r"\n")),
    (("wget", "--post"), _LeadThenTail(r"\bwget\b", r"\s(--post-data|--post-file)\b", r"\n")),
]
_NETWORK_FETCH: list[Rule] = [
    ((), re.compile(r"\b(curl|wget)\s+\S*https?://", _I)),
    ((), re.compile(r"\b(curl|wget)\s+[a-z0-9.-]+\.[a-z]{2,}\b", _I)),
]
_STANDING: list[Rule] = [((), pattern) for pattern in [
    re.compile(r"\bdo\s*n[o']?t\s+(mention|tell|inform|reveal|disclose|notify|say)", _I),
    re.compile(r"\bwithout\s+(telling|informing|notifying|alerting|mentioning)", _I),
    re.compile(r"\b(silently|secretly|covertly|quietly|discreetly)\b", _I),
    re.compile(r"\bwhen(ever)?\s+(asked|prompted|the\s+user|anyone|someone)", _I),
    re.compile(r"\bif\s+(asked|anyone\s+asks|the\s+user\s+asks)\b", _I),
    re.compile(r"\balways\s+(respond|reply|say|answer|forward|send|include|append)", _I),
    re.compile(r"\bfrom\s+now\s+on\b", _I),
]]
# Every rule above that can raise an alert needs one of these tokens (the fork bomb its
# "&"), and then this pattern; almost all text has none, so a few `in` tests over the
# whole event settle the common case.
_TOKENS = ("<", "rm", "mkfs.", "dd", "chmod", "/dev/sd", "curl", "wget", "&")
# What `_ANY_TRIGGER` needs in a string, as it shows in that string's orjson text
# (case-folded): orjson writes a whitespace character as itself (space, or non-ASCII bytes)
# or as an escape (`\n`, `\t`, `\r`, `\f`, `\u000b`, `\u001c`-`\u001f`). Dropping `\b`
# only widens it. Substring tests first: they settle almost every event.
_PLAIN_TRIGGERS = (b"<", b"curl", b"wget", b"mkfs.", b"/dev/sd")
_SPACED_TRIGGERS = (b"rm", b"dd", b"chmod")  # each followed by whitespace
_COLON_PAREN = re.compile(rb":(?:[ \x80-\xff]|\\[tnrf]|\\u00(?:0b|1[c-f]))*\(")
_ANY_TRIGGER = re.compile(
    r"<|\brm\s|mkfs\.|\bdd\s|:\s*\(|\bchmod\s|/dev/sd|curl|wget", _I)


def _might_alert(text: str, folded: str) -> bool:
    return any(token in folded for token in _TOKENS) and bool(_ANY_TRIGGER.search(text))


def _matches(rules: list[Rule], text: str, folded: str) -> bool:
    return any(all(literal in folded for literal in literals) and pattern.search(text)
               for literals, pattern in rules)


def _has_tag(text: str) -> bool:
    match = _TAG_START.search(text)
    return match is not None and text.find(">", match.end()) >= 0


def field_severity(text: str) -> str | None:
    """memory_guard's verdict on one text: "high", "medium" or None."""
    text = text[:MAX_FIELD_CHARS]
    folded = text.casefold()
    if not _might_alert(text, folded):
        return None
    if _matches(_DANGEROUS, text, folded):
        return HIGH
    if _has_tag(text):
        return HIGH if _matches(_STANDING, text, folded) else MEDIUM
    return MEDIUM if _matches(_NETWORK_FETCH, text, folded) else None


class _Bounded(Exception):
    """A bound of the walk was reached."""


def _bounded_fields(data: Any) -> list[str]:
    """The strings of ``data`` (decoded JSON) in document order, within the bounds above.

    Plain recursion over dicts and lists: this runs on every event, and recursive
    generators and isinstance checks against the Mapping ABC cost ~40% more."""
    fields: list[str] = []
    total = 0

    def walk(container: dict[str, Any] | list[Any], depth: int) -> None:
        nonlocal total
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, str):
                if len(fields) >= MAX_STRINGS or total >= MAX_TOTAL_CHARS:
                    raise _Bounded
                fields.append(item)
                total += min(len(item), MAX_FIELD_CHARS)
            elif depth < MAX_DEPTH and isinstance(item, dict | list):
                walk(item, depth + 1)

    if isinstance(data, str):
        return [data]
    if isinstance(data, dict | list):
        with contextlib.suppress(_Bounded):
            walk(data, 1)
    return fields


def _surely_clean(data: Any) -> bool:
    """True when no string of `data` can match `_ANY_TRIGGER`, told from its JSON text.

    Most events are clean, and one orjson call and a few substring tests settle them for
    less than half the cost of the walk below. Sound because orjson writes every character of a
    string as itself except `"`, `\\` and control characters (escaped), and because each
    character IGNORECASE matches with a letter of a trigger casefolds to that letter (no
    trigger holds an "i", the exception): a match in a string leaves its trace, as
    the triggers below spell it, in the casefold of the text."""
    try:
        text = orjson.dumps(data)
    except TypeError:  # an integer beyond 64 bits: let the walk decide
        return False
    folded = text.lower() if text.isascii() else text.decode().casefold().encode()
    if any(trigger in folded for trigger in _PLAIN_TRIGGERS):
        return False
    if any(_followed_by_space(folded, trigger) for trigger in _SPACED_TRIGGERS):
        return False
    return b"(" not in folded or _COLON_PAREN.search(folded) is None


def _followed_by_space(text: bytes, token: bytes) -> bool:
    """True when `token` occurs in JSON text followed by a space, an escape (a backslash)
    or a non-ASCII byte: what a whitespace character after it can look like."""
    at = text.find(token)
    while at >= 0:
        after = at + len(token)
        if after < len(text) and (text[after] in b" \\" or text[after] >= 0x80):
            return True
        at = text.find(token, at + 1)
    return False


def scan(data: Any) -> list[str]:
    """The distinct severities found in the strings of `data`, high first."""
    return [] if _surely_clean(data) else scan_strings(data)


def scan_strings(data: Any) -> list[str]:
    """`scan` without the shortcut: every string of `data` looked at."""
    fields = _bounded_fields(data)
    joined = "\n".join(fields)
    if not _might_alert(joined, joined.casefold()):
        return []
    found = {severity for text in fields if (severity := field_severity(text))}
    return [severity for severity in (HIGH, MEDIUM) if severity in found]


class ToolPoisoningDetector:
    """The pipeline stage: marks a CloudEvent's findings before it is signed."""

    def __init__(self, metrics: Metrics) -> None:
        self._alerts = metrics.poisoning_alerts

    def mark(self, cloudevent: dict[str, Any]) -> list[str]:
        """Set (or clear) `agtalerts` on `cloudevent`, in place; return the severities."""
        # Only govpipe's own findings may stand inside its signature.
        cloudevent.pop(ALERTS, None)
        severities = scan(cloudevent.get("data"))
        if severities:
            cloudevent[ALERTS] = ",".join(f"tool_poisoning:{s}" for s in severities)
        return severities

    def count(self, severities: list[str]) -> None:
        """Count the findings of an event that was accepted."""
        for severity in severities:
            self._alerts.labels(severity).inc()
