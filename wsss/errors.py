"""Errors the shared layer raises where the user must change something (no imports: every module may use them)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config problem; the message names the key and where it came from."""
