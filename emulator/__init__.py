"""Local ActiveCampaign API v3 emulator for tests, the demo and the benchmark (not deployed).

    with Emulator(api_key="k", lists={3: "Newsletter"}, time_scale=60).start() as emu:
        hostname = emu.hostname                  # http://127.0.0.1:PORT; the API base is hostname + "/api/3"
        ...
        emu.subscribers(3)                       # emails subscribed to list 3

As a process: ``python -m emulator --port 0 --api-key KEY --list 3:Newsletter --time-scale 60`` prints
``emulator listening on http://127.0.0.1:PORT``; ``/__emulator/stats|requests|contact`` (GET) and
``/__emulator/faults|unsubscribe|reset|reset_log`` (POST) inspect and steer it without auth.
``emu.unsubscribe(email, list_id, own=True)`` is a person's own unsubscribe (a campaign's link); ``own=False``
an admin's or another integration's.

Choices where AC's documentation is silent:
- Limits are sliding windows (AC's second and minute divided by time_scale). A window that would be shorter
  than 0.25 s is stretched to 0.25 s with its limit raised in proportion (the same average rate), so thread
  scheduling jitter doesn't decide refusals; ``stats()["windows"]`` shows the windows in force.
- Emails are matched case-insensitively and stored lower-cased.
- A bulk import is checked in this order: body size, JSON shape, contact count, rate limit (requests that get
  this far count against it), email syntax (any bad one fails the whole request), lists named in
  subscribe/unsubscribe. Names, phone, fields and tags are read when the import is applied; a contact whose
  values cannot be read (e.g. a field without an id) is reported in import/info "failure".
- An accepted import is applied ``import_delay`` (scaled) after acceptance, lazily: each later API request
  applies up to 8 due imports, oldest first; import/info applies everything up to the batch it asks about;
  inspection methods apply everything due. Polled within min(1 s, import_delay) (scaled) of acceptance,
  import/info answers ``{"status": false}``; after that ``{"status": "waiting", ...}`` until applied, then
  ``{"status": "completed", "success": [ids as strings], "failure": [emails], "failureReasons": [{"email",
  "failureReason"}]}``. ActiveCampaign documents only "failure" (emails) for import/info and gives a bulk import's
  per-contact reasons through its callback; "failureReasons" is the emulator's assumption, so that the exporter
  can tell the exclusion list ("Row skipped - It is on exclusion list", ``Emulator.exclude``) from other failures.
- Empty names/phone in a bulk import leave the stored values as they are. Subscribing only adds contacts that
  are not on the list yet: unsubscribed (2) stays unsubscribed. "callback" is accepted and ignored.
- List memberships (``GET /contacts/{id}/contactLists`` and the ``contactLists`` side-load) carry ``udate`` (in
  the account's zone, UTC-5) once unsubscribed, and for a person's own unsubscribe ``unsubreason``, ``campaign``,
  ``message`` and ``ip4Unsub``; an API or admin unsubscribe leaves those unset ("" / "0"). Unsubscribing someone
  already unsubscribed changes nothing; subscribing clears them. ``sdate`` is not kept (null).
- ``customer_acct_name`` (trimmed) is stored as the contact's account name, shown as ``account`` in the
  ``contact`` inspection; an empty one leaves the stored name as it is. Accounts are not modelled further.
- ``exclude_automations`` (true, 1, "1" or "true"; anything else or absent is AC's default, false) is recorded
  on the import and in its request log entry as ``excludeAutomations``; the emulator has no automations to run.
- Faults are decided before auth and limits, leave no trace but the log entry (status 0 for "drop"), and do
  not count against the rate limits. Requests to /__emulator are not logged.
"""
from .limits import FAULT_KINDS, Faults
from .server import Emulator, tune_gc_for_millions
from .store import SUBSCRIBED, UNSUBSCRIBED

__all__ = ["FAULT_KINDS", "SUBSCRIBED", "UNSUBSCRIBED", "Emulator", "Faults", "tune_gc_for_millions"]
