"""The exception tree: one root (DnsdError) and the few kinds the server handles differently."""

from __future__ import annotations


class DnsdError(Exception):
    """Root of every error dnsd raises on purpose."""


class ConfigError(DnsdError):
    """A config file or flag is invalid; the message reads 'path.to.key: what is wrong: value'."""


class ManifestError(DnsdError):
    """A manifest file or object is invalid; the message names the file, the line and the reason."""


class FormatError(DnsdError):
    """A query is malformed past its header: answered with FORMERR (RFC 1035 4.1.1)."""
