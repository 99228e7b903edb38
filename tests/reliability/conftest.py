"""The reliability suite: each probe is a real command on a real file, judged as a user would judge it.

A probe asserts the exit status, a one-line message naming the file or setting, and that nothing outside
the folder the user named changed: :func:`tree_digest` of the surrounding tree before and after. Each
probe records its outcome through the ``probe`` fixture; with ``SEGVN_PROBE_REPORT=FILE`` the session
writes the tally (probes, clear errors, silent wrong results, writes outside, deep tracebacks) as JSON,
which ``make reliability`` turns into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from ..conftest import run_segvn

FRAME_RE = re.compile(r'^\s*File "', re.MULTILINE)
MAX_FRAMES = 3
"""A user error may show at most this many traceback frames (goal: none)."""


def tree_digest(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): relative path -> content hash, link target or 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if any(str(rel_dir).startswith(s) for s in skip if s):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(rel_dir / name)
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def traceback_frames(text: str) -> int:
    """How many traceback frames a command printed."""
    return len(FRAME_RE.findall(text))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    said = proc.stdout + proc.stderr
    return [line for line in said.splitlines() if "ERROR" in line]


@dataclass
class Outcome:
    name: str
    kind: str = "unjudged"
    """clear_error | ran | silent_wrong | unclear_error"""
    writes_outside: int = 0
    traceback_frames: int = 0
    notes: list[str] = field(default_factory=list)


class Probe:
    """One probe's judge: ``expect_error`` / ``expect_ok`` assert and record; ``guard`` watches a tree."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._guards: list[tuple[Path, dict[str, str]]] = []

    def guard(self, *roots: Path) -> None:
        """Remember the trees the command must not touch (checked by :meth:`check_outside`)."""
        for root in roots:
            self._guards.append((root, tree_digest(root)))

    def check_outside(self) -> None:
        changed = []
        for root, before in self._guards:
            after = tree_digest(root)
            changed += [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
        self.outcome.writes_outside = len(changed)
        assert not changed, f"written outside the named folder: {sorted(changed)[:10]}"

    def expect_error(self, proc: subprocess.CompletedProcess, *needles: str) -> str:
        """Exit 1, one ERROR line containing every needle, no traceback over MAX_FRAMES frames."""
        said = proc.stdout + proc.stderr
        self.outcome.traceback_frames = traceback_frames(said)
        errors = error_lines(proc)
        clear = (
            proc.returncode == 1
            and len(errors) == 1
            and all(n in errors[0] for n in needles)
            and self.outcome.traceback_frames <= MAX_FRAMES
        )
        self.outcome.kind = (
            "clear_error" if clear else ("silent_wrong" if proc.returncode == 0 else "unclear_error")
        )
        if self._guards:
            self.check_outside()
        assert proc.returncode == 1, said[-3000:]
        assert self.outcome.traceback_frames <= MAX_FRAMES, said[-3000:]
        assert len(errors) == 1, errors or said[-3000:]
        assert all(n in errors[0] for n in needles), (needles, errors[0])
        return errors[0]

    def expect_ok(self, proc: subprocess.CompletedProcess) -> None:
        said = proc.stdout + proc.stderr
        self.outcome.traceback_frames = traceback_frames(said)
        self.outcome.kind = "ran" if proc.returncode == 0 else "unclear_error"
        if self._guards:
            self.check_outside()
        assert proc.returncode == 0, said[-3000:]

    def error(self, err: BaseException, *needles: str) -> None:
        """For probes of library calls: the exception is a one-line SegvnError naming the needles."""
        from segvn.errors import SegvnError

        text = str(err)
        clear = isinstance(err, SegvnError) and "\n" not in text and all(n in text for n in needles)
        self.outcome.kind = "clear_error" if clear else "unclear_error"
        if self._guards:
            self.check_outside()
        assert isinstance(err, SegvnError), repr(err)
        assert "\n" not in text, text
        assert all(n in text for n in needles), (needles, text)

    def ran(self) -> None:
        self.outcome.kind = "ran"
        if self._guards:
            self.check_outside()

    def wrong(self, message: str) -> None:
        """Record a silent wrong result and fail."""
        self.outcome.kind = "silent_wrong"
        pytest.fail(message)


_OUTCOMES: list[Outcome] = []


@pytest.fixture
def probe(request: pytest.FixtureRequest) -> Probe:
    outcome = Outcome(name=request.node.nodeid)
    _OUTCOMES.append(outcome)
    return Probe(outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("SEGVN_PROBE_REPORT")
    if not target or not _OUTCOMES:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.stem}.{worker}.json")
    part.write_text(json.dumps([asdict(o) for o in _OUTCOMES], indent=1) + "\n")


__all__ = ["Probe", "run_segvn", "tree_digest", "traceback_frames"]
