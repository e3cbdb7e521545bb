"""User-facing errors: one clear line saying what was wrong and what to do."""

from __future__ import annotations


class PipelineError(Exception):
    """An error the user caused (bad config, bad data); the CLI prints it as one line and exits 2."""


class ConfigError(PipelineError):
    """The configuration is invalid."""


class DataError(PipelineError):
    """The input data (features, labels, caches) is unusable."""
