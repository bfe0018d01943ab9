"""ActiveCampaign API v3: the client the exporter uses, its pacing, refusals and the bulk import vocabulary."""
from .bulk_import import (
                          BODY_OVERHEAD,
                          MAX_CONTACTS_PER_REQUEST,
                          MAX_REQUEST_BYTES,
                          BatchRejected,
                          ImportStatus,
                          bad_contacts,
                          encode_bulk_body,
                          is_exclusion,
)
from .client import ActiveCampaignClient, ClientStats
from .pacing import AccountPacers, Pacer
from .refusals import retry_after_seconds

__all__ = [
    "BODY_OVERHEAD", "MAX_CONTACTS_PER_REQUEST", "MAX_REQUEST_BYTES", "AccountPacers", "ActiveCampaignClient",
    "BatchRejected", "ClientStats", "ImportStatus", "Pacer", "bad_contacts", "encode_bulk_body", "is_exclusion",
    "retry_after_seconds",
]
