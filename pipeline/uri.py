"""The one rule for telling a URI (`s3://bucket/x`, `http://host:5000`, `file:///tmp/x`) from a local path."""

from __future__ import annotations


def is_uri(location: str) -> bool:
    """True when `location` names a scheme (`scheme://...`); a bare or relative path is not a URI."""
    return "://" in location
