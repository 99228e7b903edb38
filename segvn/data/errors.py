"""The error type for bad data: every message names the file or setting and says how to fix it."""

from __future__ import annotations


class SegvnDataError(ValueError):
    """Raised for missing roots, unreadable files, size mismatches, empty splits and unknown streets."""
