"""Names and defaults the code shares with the infrastructure, and the rule for export names.

infra/main.bicep declares the same containers, queue, schedule and secret name (tests/test_infra.py checks them).
"""
from __future__ import annotations

import re

DEFAULT_SECRET_NAME = "activecampaign-api-key"
DEFAULT_EXPORT_SCHEDULE = "0 0 */6 * * *"  # every 6 hours, on the hour
# The container Customer Insights exports into; the on-arrival blob trigger watches it.
DEFAULT_EXPORT_CONTAINER = "customer-insights"
RUNS_CONTAINER = "exporter-runs"
STATE_CONTAINER = "exporter-state"
RUN_QUEUE = "export-runs"

# An export's name names folders in storage and appears in URLs and queue messages.
EXPORT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
