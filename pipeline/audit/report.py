"""What an audit adds up to: the counts, the findings behind them, and their text and JSON
forms. Runs of neighbouring positions with the same finding are reported as one range."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.audit.trail import Finding, Stream, TrailAudit


@dataclass(frozen=True, slots=True)
class Span:
    """Positions `first`..`last` of a stream that share one finding."""

    stream: Stream
    first: int
    last: int
    note: str = ""

    def text(self) -> str:
        where = self.stream.where(self.first, self.last)
        return f"{where}: {self.note}" if self.note else where

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"kind": self.stream.kind, "name": self.stream.name,
                                 "first": self.first, "last": self.last}
        if self.stream.kind == "kafka":
            found["partition"] = self.stream.partition
        if self.note:
            found["note"] = self.note
        return found


@dataclass(slots=True)
class AuditReport:
    """The counts of the summary line, and every finding behind them."""

    input: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    missing: int = 0
    duplicates: int = 0
    bad_signatures: int = 0
    unknown: int = 0
    missing_spans: list[Span] = field(default_factory=list)
    duplicate_spans: list[Span] = field(default_factory=list)
    unknown_spans: list[Span] = field(default_factory=list)
    retention_spans: list[Span] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Nothing missing, nothing forged or altered, nothing from an unknown position."""
        return not (self.missing or self.bad_signatures or self.unknown or
                    any(f.kind == "no_position" for f in self.findings))

    def summary(self) -> str:
        return (f"input {self.input}, delivered {self.delivered}, dead-lettered "
                f"{self.dead_lettered}, missing {self.missing}, duplicates {self.duplicates}, "
                f"bad signatures {self.bad_signatures}")

    def detail_lines(self) -> Iterator[str]:
        for span in self.retention_spans:
            yield f"removed by retention {span.text()}"
        for finding in self.findings:
            label = finding.kind.replace("_", " ")
            yield f"{label} {finding.where}" + (f": {finding.detail}" if finding.detail else "")
        for span in self.unknown_spans:
            yield f"unknown position {span.text()}"
        for span in self.duplicate_spans:
            yield f"duplicate {span.text()}"
        for span in self.missing_spans:
            yield f"missing {span.text()}"

    def to_json(self) -> bytes:
        return orjson.dumps({
            "input": self.input, "delivered": self.delivered,
            "dead_lettered": self.dead_lettered, "missing": self.missing,
            "duplicates": self.duplicates, "bad_signatures": self.bad_signatures,
            "unknown": self.unknown, "clean": self.clean,
            "missing_positions": [span.as_dict() for span in self.missing_spans],
            "duplicate_positions": [span.as_dict() for span in self.duplicate_spans],
            "unknown_positions": [span.as_dict() for span in self.unknown_spans],
            "removed_by_retention": [span.as_dict() for span in self.retention_spans],
            "findings": [{"kind": f.kind, "where": f.where, "detail": f.detail}
                         for f in self.findings],
        })


def account(audit: TrailAudit) -> AuditReport:
    """Every expected position delivered, dead-lettered or missing; and what else was seen."""
    report = AuditReport(bad_signatures=audit.bad_signatures, findings=list(audit.findings))
    for stream, expected in sorted(audit.expected.items()):
        delivered = audit.delivered.get(stream, {})
        deadlettered = audit.deadlettered.get(stream, set())
        missing = []
        for offset in expected.offsets:
            if offset in delivered:
                report.delivered += 1
            elif offset in deadlettered:
                report.dead_lettered += 1
            else:
                missing.append(offset)
        report.input += len(expected.offsets)
        report.missing += len(missing)
        report.missing_spans.extend(_spans(stream, ((o, "") for o in sorted(missing))))
        if expected.removed_below > 0:
            report.retention_spans.append(Span(stream, 0, expected.removed_below - 1,
                                               "not audited"))
    _duplicates(audit, report)
    _unknown(audit, report)
    return report


def _duplicates(audit: TrailAudit, report: AuditReport) -> None:
    for stream, more_at in sorted(audit.more_copies.items()):
        found = []
        for offset in sorted(more_at):
            copies = audit.copies(stream, offset)
            report.duplicates += len(copies) - 1
            same = "byte-identical" if len(set(copies)) == 1 else "not byte-identical"
            found.append((offset, f"{len(copies)} copies, {same}"))
        report.duplicate_spans.extend(_spans(stream, found))


def _unknown(audit: TrailAudit, report: AuditReport) -> None:
    streams = set(audit.delivered) | set(audit.deadlettered)
    for stream in sorted(streams):
        expected = audit.expected.get(stream)
        present = expected.offsets if expected is not None else set()
        below = expected.removed_below if expected is not None else 0
        seen = set(audit.delivered.get(stream, {})) | audit.deadlettered.get(stream, set())
        # Below the log start: the input record is gone, not unknown.
        unknown = sorted(o for o in seen if o not in present and o >= below)
        report.unknown += len(unknown)
        report.unknown_spans.extend(_spans(stream, ((o, "no such input record")
                                                    for o in unknown)))


def _spans(stream: Stream, offsets: Iterable[tuple[int, str]]) -> list[Span]:
    """Sorted (offset, note) pairs as runs of consecutive offsets with the same note."""
    spans: list[Span] = []
    for offset, note in offsets:
        last = spans[-1] if spans else None
        if last is not None and last.last + 1 == offset and last.note == note:
            spans[-1] = Span(stream, last.first, offset, note)
        else:
            spans.append(Span(stream, offset, offset, note))
    return spans
