"""Error types. Each carries the exit code the CLI uses and whether a retry could help."""
from __future__ import annotations


class ExporterError(Exception):
    """A run failed. Exit code 1; a later retry may succeed."""

    exit_code = 1
    retryable = True


class ConfigError(ExporterError):
    """Bad configuration or input that no retry fixes. Exit code 2; nothing was sent."""

    exit_code = 2
    retryable = False


class DestinationAccessError(ConfigError):
    """ActiveCampaign refused the key (403) or the list does not exist (404)."""


class SourceError(ConfigError):
    """The Customer Insights export is missing or malformed (container, model.json, columns)."""


class TransientError(ExporterError):
    """Network or service trouble that outlasted the client's own retries."""


class LockLost(TransientError):
    """The run could not renew its lock before the lease could expire: it stops, so that it never sends
    alongside a second run; the next run resumes."""


class RunLocked(ExporterError):
    """Another run of the same export holds the lock."""

    retryable = False
