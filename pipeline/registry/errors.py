"""The registry's error types, in a module without heavy imports so the CLI can catch them cheaply."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """A registry lookup or update that cannot be done; the message says what exists instead."""


class PromotionRefused(RegistryError):
    """`champion` would move to a version that is not shown to be better (use force to override)."""


class ArtifactError(ValueError):
    """A model package that must not be loaded (missing file, unknown key, wrong tensor); names the file."""


class ImageInputError(ValueError):
    """An input image that cannot be decoded; the message names its index and what it was."""


class ExportError(RuntimeError):
    """Export failed or the exported graph does not reproduce PyTorch's outputs."""
