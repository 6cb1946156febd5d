"""The configuration's error and the value checks its sections share: each names the key and the bad value."""

from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """A user error in the configuration: the message names the key and the bad value or the file."""


EVAL_EVERY_PATTERN = re.compile(r"^\s*(\d+)\s*(epochs?|steps?)?\s*$")


def parse_eval_every(value: str | int) -> tuple[int, str] | None:
    """`"3"` (or 3), `"3 epochs"`, `"500 steps"` -> (count, "epochs" | "steps"); `"auto"` -> None. ValueError
    otherwise."""
    value = str(value)
    if value.strip() == "auto":
        return None
    match = EVAL_EVERY_PATTERN.match(value)
    if not match or int(match.group(1)) < 1:
        raise ValueError("must be auto, a number of epochs, or e.g. '2 epochs' / '500 steps' (>= 1)")
    unit = match.group(2) or "epochs"
    return int(match.group(1)), "steps" if unit.startswith("step") else "epochs"


def check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def at_least_or_null(key: str, value: Any, low: float) -> None:
    check(value is None or value >= low, key, value, f"must be >= {low:g} or null")


def choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, key, value, f"not supported; choose one of {list(choices)}")


def parse_image_check(value: bool | str) -> int | None:
    """`all` (or True) -> None: every image; `sample:N` -> N per split; `none` (or False) -> 0."""
    if value is True or value == "all":
        return None
    if value is False or value == "none":
        return 0
    match = re.fullmatch(r"sample:(\d+)", str(value))
    if not match:
        raise ValueError(f"image check {value!r} not supported; choose all, none or sample:N (e.g. sample:500)")
    return int(match.group(1))
