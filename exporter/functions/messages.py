"""The JSON the triggers read: the run queue's message (RunRequest) and a start request's body (StartOptions)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..settings import EXPORT_NAME_RE

RUN_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,79}$")  # new_run_id()'s shape, loosely: no "/" or ".."
_OPTION_KEYS = {"fullRefresh": "full_refresh", "forceRemoval": "force_removal"}


@dataclass(frozen=True)
class RunRequest:
    """One message on the run queue."""

    run_id: str
    export: str
    trigger: str
    full_refresh: bool = False
    force_removal: bool = False
    deferrals: int = 0  # how many times an arrival run was queued again to wait for a running one

    def to_json(self) -> str:
        return json.dumps({"runId": self.run_id, "export": self.export, "trigger": self.trigger,
                           "fullRefresh": self.full_refresh, "forceRemoval": self.force_removal,
                           "deferrals": self.deferrals})

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        """Raises ValueError for anything that is not a run message."""
        try:
            data = json.loads(text)
            request = cls(run_id=data["runId"], export=data["export"], trigger=data.get("trigger", "queue"),
                          full_refresh=bool(data.get("fullRefresh", False)),
                          force_removal=bool(data.get("forceRemoval", False)),
                          deferrals=int(data.get("deferrals", 0)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a run message ({type(exc).__name__}: {exc})") from None
        if not RUN_ID_RE.match(str(request.run_id)) or not EXPORT_NAME_RE.match(str(request.export)):
            raise ValueError("not a run message (bad runId or export)")
        return request


class InvalidStartOptions(ValueError):
    """A start request's body is not ``{"fullRefresh": bool, "forceRemoval": bool}``; the message says why."""


@dataclass(frozen=True)
class StartOptions:
    """What a start request may ask for: a full refresh, and removals above the export's maxRemovalShare."""

    full_refresh: bool = False
    force_removal: bool = False

    @classmethod
    def from_request_body(cls, body: bytes) -> StartOptions:
        """The optional JSON body of a start request: ``{"fullRefresh": bool, "forceRemoval": bool}``."""
        if not body or not body.strip():
            return cls()
        example = 'send {"fullRefresh": true} or {"forceRemoval": true}, or no body'
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidStartOptions(f"the request body is not JSON; {example}") from None
        if not isinstance(data, dict):
            raise InvalidStartOptions(f"the request body must be a JSON object; {example}")
        unknown = sorted(set(data) - set(_OPTION_KEYS))
        if unknown:
            raise InvalidStartOptions(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                                      f"{', '.join(_OPTION_KEYS)}")
        for key, value in data.items():
            if not isinstance(value, bool):
                raise InvalidStartOptions(f"{key!r} must be true or false, not {json.dumps(value)}")
        return cls(**{_OPTION_KEYS[key]: value for key, value in data.items()})

    def to_dict(self) -> dict[str, bool]:
        return {"fullRefresh": self.full_refresh, "forceRemoval": self.force_removal}
