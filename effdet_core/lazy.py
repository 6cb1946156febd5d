"""Lazy package namespaces (PEP 562): a package's public names resolve from their submodules on first use, so
importing one light submodule does not import the heavy ones beside it. Used by `effdet_core` and the pipeline's
`data` and `registry` packages."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], eager: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`, whose name `n` lives in submodule `exports[n]`; `eager` names are
    already bound in the package (listed by `__dir__` too)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted([*exports, *eager])

    return __getattr__, __dir__
