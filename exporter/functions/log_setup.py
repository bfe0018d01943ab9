"""Logging for every trigger invocation."""
from __future__ import annotations

import logging

from .. import logsafe


def prepare_logging() -> None:
    """Scrub secrets and emails from every log record; keep the storage SDK's request logging quiet."""
    logsafe.install()
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
