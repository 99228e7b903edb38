"""What ``segvn.check`` reports: the kinds of finding (errors and warnings), findings and the report.

See :mod:`segvn.data.check` for what each kind means and how a dataset is checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

ERROR_KINDS: tuple[str, ...] = (
    "missing_root",
    "unknown_street",
    "empty_split",
    "unreadable",
    "size_mismatch",
    "label_mode",
    "out_of_range",
    "leak",
    "street_leak",
    "unlabelled_leak",
)
WARNING_KINDS: tuple[str, ...] = (
    "unknown_colour",
    "image_mode",
    "unlabelled_frame",
    "orphan_label",
    "duplicate_frame",
    "missing_class",
)
KINDS: tuple[str, ...] = ERROR_KINDS + WARNING_KINDS
LEVELS: tuple[str, ...] = ("off", "cheap", "full")
LABELLED_SPLITS = ("train", "val", "test")
RGB_LABEL_MODES = ("RGB", "P")
INDEX_LABEL_MODES = ("L", "P")
QUICK_HASH_BYTES = 1 << 16


@dataclass
class Finding:
    """One problem: its kind (see the module docstring), severity, a readable message and where."""

    kind: str
    severity: str  # "error" | "warning"
    message: str
    path: str | None = None
    split: str | None = None
    street: str | None = None
    share: float | None = None
    values: list = field(default_factory=list)
    """The most frequent unknown colours / out-of-range values, ``[value, pixels]`` pairs."""
    files: list[str] = field(default_factory=list)
    """Other files involved (the copies of a leaked frame, examples of unlabelled frames)."""


@dataclass
class CheckReport:
    """All findings of one check plus frame/label counts per split and street."""

    root: str
    source: str
    level: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def sorted(self) -> list[Finding]:
        """Findings worst first: errors, then by kind (in the documented order), then largest share."""
        return sorted(
            self.findings,
            key=lambda f: (f.severity != "error", KINDS.index(f.kind), -(f.share or 0.0), f.path or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "source": self.source,
            "level": self.level,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "by_kind": {
                k: sum(f.kind == k for f in self.findings)
                for k in KINDS
                if any(f.kind == k for f in self.findings)
            },
            "counts": self.counts,
            "findings": [asdict(f) for f in self.sorted()],
        }

    def text(self, limit: int = 20) -> str:
        """A plain-text report, worst first, at most ``limit`` findings."""
        head = (
            f"dataset check ({self.level}) of {self.root}: {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)"
        )
        lines = [f"  {f.severity.upper()} [{f.kind}] {f.message}" for f in self.sorted()[:limit]]
        if len(self.findings) > limit:
            lines.append(f"  ... and {len(self.findings) - limit} more; run python -m segvn.check for all")
        return "\n".join([head, *lines])


class _Collector:
    def __init__(self, warn_only: Iterable[str]) -> None:
        self.warn_only = set(warn_only)
        self.findings: list[Finding] = []

    def add(self, kind: str, message: str, severity: str | None = None, **kw: Any) -> None:
        if severity is None:
            severity = "error" if kind in ERROR_KINDS else "warning"
        if kind in self.warn_only:
            severity = "warning"
        self.findings.append(Finding(kind, severity, message, **kw))
